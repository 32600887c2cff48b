"""The CRC-32 of each file of a zip download, which its local header and its record in the
central directory hold (`cartd.zip_layout` asks for it only when one of them is sent).

Recorded when the file was verified (`cart_files.crc32`), it is read with the cart's
files. A row verified before cartd recorded it (an earlier version's, a file adopted from
the original) has none: the volume's copy is read once, checked against its verified
size and modification time as any download read is, and the CRC recorded, so a later
download does not read it again. For a cart still being made, the rows of the files
verified since the download began are read again, a batch at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

from isal.isal_zlib import crc32

from cartd.db.store import CartStore
from cartd.records import CartFile
from cartd.segments import Content, read_content
from cartd.service.live import LOOK_AHEAD
from cartd.storage import Volume


class Crcs:
    """`crc_of` for a zip layout of `files`: the CRC-32 of the file at an index."""

    def __init__(
        self,
        store: CartStore,
        volume: Volume,
        files: Sequence[CartFile],
        chunk_size: int,
        *,
        being_made: bool,
    ) -> None:
        self._store = store
        self._volume = volume
        self._given = files
        self._chunk_size = chunk_size
        self._being_made = being_made

    # Made at the first CRC asked for: a tar's layout never asks, and for a cart of
    # 100,000 files these cost a list and a dictionary of that many.
    @functools.cached_property
    def _files(self) -> list[CartFile]:
        return list(self._given)

    @functools.cached_property
    def _index(self) -> dict[int, int]:
        return {file.id: index for index, file in enumerate(self._given)}

    def __call__(self, index: int) -> int:
        file = self._files[index]
        if file.crc32 is None and self._being_made:
            self._read_again(file)
            file = self._files[index]
        if file.crc32 is None:
            file = replace(file, crc32=self._compute(file))
            self._files[index] = file
            assert file.crc32 is not None
            self._store.record_crc(file.id, file.crc32)
        return file.crc32

    def _read_again(self, file: CartFile) -> None:
        for row in self._store.files_from(file.cart_id, file.id, LOOK_AHEAD):
            index = self._index.get(row.id)
            if index is not None:
                self._files[index] = row

    def _compute(self, file: CartFile) -> int:
        source = self._volume.file_path(file.cart_id, file.id)
        content = Content(f"file {file.archive_id}", source, file.size or 0, file.mtime or 0.0)
        value = 0
        for chunk in read_content(content, self._chunk_size):
            value = crc32(chunk, value)
        return value
