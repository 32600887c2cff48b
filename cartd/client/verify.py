"""Every member of the tar checked against the order as the bytes stream in.

`MemberCheck` is the state machine, fed member by member; `verify_tar` feeds it from a
stream read with Python's own tar reader (PAX and GNU headers included). A member is
known by its path below the tar's one top folder, whatever that folder is called: cartd
names it after the download for a streamed cart and after the uid for a bundled one.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from cartd.client.errors import VerificationFailed
from cartd.schemas import FileOrder

#: Bytes of a member hashed at a time.
CHUNK = 1 << 20
#: Members named at most in a message about what is missing.
NAMED = 5
#: A tar ends with two blocks of zeros (and perhaps more, up to a whole record).
END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)


class MemberCheck:
    """What the tar must hold: each ordered file once, with its checksum; folders; nothing
    else. Call `folder` or `begin`, `update`..., `end` per member, then `finish`."""

    def __init__(self, members: Mapping[str, FileOrder]) -> None:
        self._expected = dict(members)
        self._seen: set[str] = set()
        self._top: str | None = None
        self._current: tuple[str, FileOrder, hashlib._Hash] | None = None

    def _below_top(self, name: str) -> str:
        """`name` without the top folder ('' for the folder itself); the first member
        says which folder that is."""
        top, _, rest = name.rstrip("/").partition("/")
        if self._top is None:
            self._top = top
        elif top != self._top:
            raise VerificationFailed(f"{name}: outside the tar's top folder {self._top!r}")
        return rest

    def folder(self, name: str) -> None:
        self._below_top(name)

    def begin(self, name: str, *, regular: bool = True) -> None:
        if self._current is not None:
            raise RuntimeError(f"{name} begun before {self._current[0]} ended")
        path = self._below_top(name)
        if not regular:
            raise VerificationFailed(f"{name}: not a regular file")
        if path in self._seen:
            raise VerificationFailed(f"{name}: twice in the tar")
        order = self._expected.get(path)
        if order is None:
            raise VerificationFailed(f"{name}: not in the order")
        self._current = (name, order, hashlib.new(order.hashtype, usedforsecurity=False))

    def update(self, data: bytes) -> None:
        if self._current is None:
            raise RuntimeError("bytes outside a member")
        self._current[2].update(data)

    def end(self) -> None:
        if self._current is None:
            raise RuntimeError("no member to end")
        name, order, digest = self._current
        self._current = None
        if digest.hexdigest() != order.hashsum:
            raise VerificationFailed(
                f"{name}: its {order.hashtype} is not the order's for {order.path}"
                f" (id {order.archive_id})"
            )
        self._seen.add(self._below_top(name))

    def finish(self) -> int:
        """The number of files verified; raises if an ordered file was not in the tar."""
        if self._current is not None:
            raise VerificationFailed(f"{self._current[0]}: cut short")
        missing = sorted(set(self._expected) - self._seen)
        if missing:
            named = ", ".join(self._expected[path].path for path in missing[:NAMED])
            more = f" and {len(missing) - NAMED} more" if len(missing) > NAMED else ""
            raise VerificationFailed(f"missing from the tar: {named}{more}")
        return len(self._seen)


def verify_tar(source: io.RawIOBase | BinaryIO, check: MemberCheck) -> int:
    """Read a whole tar stream from `source` into `check`; the number of files verified.
    Reads up to the tar's end-of-archive blocks, which may leave bytes of `source`
    unread. Raises `VerificationFailed` for a mismatch or a tar that cannot be read."""
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for info in tar:
                if info.isdir():
                    check.folder(info.name)
                    continue
                check.begin(info.name, regular=info.isreg())
                content = tar.extractfile(info)
                assert content is not None  # a regular file has content
                while chunk := content.read(CHUNK):
                    check.update(chunk)
                check.end()
    except tarfile.TarError as exc:
        raise VerificationFailed(f"the download is not a whole, readable tar ({exc})") from None
    return check.finish()


def check_ending(path: Path) -> None:
    """Raise unless the tar at `path` ends with its end-of-archive blocks: a download
    without a length (the original's) that broke off between two members would otherwise
    pass for whole."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - len(END_OF_ARCHIVE)))
        if size < len(END_OF_ARCHIVE) or handle.read() != END_OF_ARCHIVE:
            raise VerificationFailed(
                "the download ends without the tar's end-of-archive blocks (cut short?)"
            )
