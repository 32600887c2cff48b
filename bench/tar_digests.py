"""The SHA-1 of every member of a tar read as it arrives, at the cost of the raw client.

`tarfile`'s stream mode copies every byte three or four times on its way to the reader
(joined and sliced read buffers, then a buffered member file): hashing a 1 GiB tar that way
took 2.4 CPU-s here, against 0.7 for reading and hashing the same bytes. On a machine of
two cores that the client shares with cartd and the archive, that cost was the benchmark's,
not cartd's. This reader hashes slices of the pieces read (memoryviews, no copies) and
parses only the headers (ustar blocks, PAX extended headers, GNU long names).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable

BLOCK = 512
_DATA_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
_ENCODING = "utf-8"


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header: `<length> <key>=<value>\\n` each."""
    found: dict[str, str] = {}
    at = 0
    while at < len(data) and data[at] != 0:
        space = data.index(b" ", at)
        length = int(data[at:space])
        key, _, value = data[space + 1 : at + length - 1].partition(b"=")
        found[key.decode(_ENCODING)] = value.decode(_ENCODING, "surrogateescape")
        at += length
    return found


class TarDigests:
    """Fed the pieces of a tar in order (`feed`), it keeps each regular member's hex SHA-1
    by name (`digests`); `ended` once the end-of-archive block has come."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.ended = False
        self._block = bytearray()  # a header block (or an extended header's data) gathered
        self._gather = BLOCK  # bytes `_block` must reach before `_then` reads it
        self._then: Callable[[bytes], None] = self._header
        self._overrides: dict[str, str] = {}  # from a PAX header or GNU long name, for the next
        self._digest = hashlib.sha1()
        self._name = ""
        self._left = 0  # bytes of the member's data still to come
        self._skip = 0  # padding (or an unread member's data) to pass over

    def feed(self, piece: bytes) -> None:
        view = memoryview(piece)
        at = 0
        while at < len(view) and not self.ended:
            if self._left:
                take = min(self._left, len(view) - at)
                self._digest.update(view[at : at + take])
                at += take
                self._left -= take
                if not self._left:
                    self.digests[self._name] = self._digest.hexdigest()
            elif self._skip:
                take = min(self._skip, len(view) - at)
                at += take
                self._skip -= take
            else:
                take = min(self._gather - len(self._block), len(view) - at)
                self._block += view[at : at + take]
                at += take
                if len(self._block) == self._gather:
                    gathered = bytes(self._block)
                    self._block.clear()
                    self._then(gathered)

    def _header(self, block: bytes) -> None:
        if block == bytes(BLOCK):
            self.ended = True
            return
        info = tarfile.TarInfo.frombuf(block, _ENCODING, "surrogateescape")
        padded = info.size + (-info.size % BLOCK)
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME):
            if padded:
                self._gather, self._then = padded, self._extension(info.type, info.size)
            return
        name = self._overrides.get("path", info.name)
        size = int(self._overrides.get("size", info.size))
        self._overrides = {}
        padded = size + (-size % BLOCK)
        if info.type in _DATA_TYPES:
            self._name, self._digest, self._left = name, hashlib.sha1(), size
            self._skip = padded - size
            if not size:
                self.digests[name] = self._digest.hexdigest()
        else:
            self._skip = padded

    def _extension(self, kind: bytes, size: int) -> Callable[[bytes], None]:
        def read(data: bytes) -> None:
            self._gather, self._then = BLOCK, self._header
            if kind == tarfile.XHDTYPE:
                self._overrides.update(_pax_records(data[:size]))
            elif kind == tarfile.GNUTYPE_LONGNAME:
                self._overrides["path"] = data[:size].rstrip(b"\0").decode(_ENCODING)

        return read
