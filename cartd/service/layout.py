"""From a cart's stored files to the members and bytes it is served as: a tar or a zip."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from cartd.bundle import TarMembers, layout, tar_layout
from cartd.folders import Entry, Inline
from cartd.records import Cart, CartFile, DownloadRow
from cartd.schemas import Packing
from cartd.segments import Layout
from cartd.storage import Volume
from cartd.zip_layout import zip_layout

#: A file as a download's layout sees it: a whole row, or the narrow one read for a tar.
LaidFile = CartFile | DownloadRow


@dataclass
class FileColumns:
    """The id, size and modification time of a cart's files in its order, as arrays:
    what a download checks its files against, 24 bytes a file."""

    ids: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    mtimes: array[float] = field(default_factory=lambda: array("d"))
    unsized: int = 0  # files whose size the archive has not told yet

    def add(self, file: LaidFile) -> None:
        if file.size is None:
            self.unsized += 1
        self.ids.append(file.id)
        self.sizes.append(file.size or 0)
        self.mtimes.append(file.mtime or 0.0)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, files: Iterable[LaidFile]) -> FileColumns:
        columns = cls()
        for file in files:
            columns.add(file)
        return columns


def _entries(
    cart: Cart, files: Iterable[LaidFile], volume: Volume, columns: FileColumns
) -> Iterator[Entry]:
    """Each file as an entry of the layout, noted in `columns` as it goes."""
    for file in files:
        columns.add(file)
        source = volume.file_name(cart.id, file.id)
        yield Entry(path=file.path, size=file.size or 0, mtime=file.mtime or 0.0, source=source)


def cart_members(
    cart: Cart,
    files: Iterable[LaidFile],
    volume: Volume,
    top: str,
    inline: Sequence[Inline] = (),
    columns: FileColumns | None = None,
) -> TarMembers:
    """The tar members, the folders dated when the cart was ordered; the files' ids, sizes
    and times are noted in `columns` (when given) as they are read."""
    columns = FileColumns() if columns is None else columns
    return layout(
        top,
        _entries(cart, files, volume, columns),
        cart.created_at.timestamp(),
        inline,
        sources=volume.file_names(cart.id, columns.ids),
    )


def cart_layout(
    cart: Cart,
    files: Iterable[LaidFile],
    volume: Volume,
    top: str,
    *,
    packing: Packing,
    inline: Sequence[Inline],
    crc_of: Callable[[int], int],
    columns: FileColumns | None = None,
) -> Layout:
    """The download's bytes as segments; `crc_of` (by index in `files`) serves a zip."""
    columns = FileColumns() if columns is None else columns
    if packing is Packing.TAR:
        return tar_layout(cart_members(cart, files, volume, top, inline, columns))
    entries = list(_entries(cart, files, volume, columns))
    return zip_layout(top, entries, cart.created_at.timestamp(), crc_of=crc_of, inline=inline)
