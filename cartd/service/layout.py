"""From a cart's stored files to the members and bytes it is served as: a tar or a zip."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cartd.bundle import Member, layout, tar_layout
from cartd.folders import Entry, Inline
from cartd.records import Cart, CartFile
from cartd.schemas import Packing
from cartd.segments import Layout
from cartd.storage import Volume
from cartd.zip_layout import zip_layout


def _entries(cart: Cart, files: Sequence[CartFile], volume: Volume) -> list[Entry]:
    sources = volume.file_paths(cart.id, [file.id for file in files])
    return [
        Entry(path=file.path, size=file.size or 0, mtime=file.mtime or 0.0, source=source)
        for file, source in zip(files, sources, strict=True)
    ]


def cart_members(
    cart: Cart, files: list[CartFile], volume: Volume, top: str, inline: Sequence[Inline] = ()
) -> list[Member]:
    """The tar members, the folders dated when the cart was ordered."""
    return layout(top, _entries(cart, files, volume), cart.created_at.timestamp(), inline)


def cart_layout(
    cart: Cart,
    files: list[CartFile],
    volume: Volume,
    top: str,
    *,
    packing: Packing,
    inline: Sequence[Inline],
    crc_of: Callable[[int], int],
) -> Layout:
    """The download's bytes as segments; `crc_of` (by index in `files`) serves a zip."""
    if packing is Packing.TAR:
        return tar_layout(cart_members(cart, files, volume, top, inline))
    entries = _entries(cart, files, volume)
    return zip_layout(top, entries, cart.created_at.timestamp(), crc_of=crc_of, inline=inline)
