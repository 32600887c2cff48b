"""A folder on a mounted filesystem as the archive: every file is always on disk."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO

from cartd.archive.base import Abort, ArchiveFile
from cartd.errors import PermanentArchiveError, TransientArchiveError


class FolderArchive:
    """File id `a/b.txt` is `<root>/a/b.txt`; ids cannot reach outside the root."""

    def __init__(self, root: str | os.PathLike[str], *, chunk_size: int) -> None:
        self.root = os.path.realpath(root)
        self._inside = os.path.join(self.root, "")
        self.chunk_size = chunk_size

    def _path(self, file_id: str) -> str:
        # Strings and `os.path`, not `Path`: asked for every file of carts of 100,000.
        path = os.path.realpath(os.path.join(self.root, file_id.lstrip("/")))
        if not path.startswith(self._inside) or path == self.root:
            raise PermanentArchiveError(f"file id {file_id!r} is outside the archive folder")
        return path

    def stage(self, file_id: str, abort: Abort) -> None:
        self.status(file_id, abort)

    def status(self, file_id: str, abort: Abort) -> ArchiveFile:
        abort.check()
        path = self._path(file_id)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise PermanentArchiveError("the archive has no such file") from None
        except OSError as exc:
            raise TransientArchiveError(f"cannot stat the file: {exc.strerror}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise PermanentArchiveError("the archive entry is not a regular file")
        return ArchiveFile(size=info.st_size, mtime=info.st_mtime, on_disk=True)

    def read(self, file_id: str, abort: Abort) -> AbstractContextManager[Iterator[bytes]]:
        return self._read(self._path(file_id), abort)

    @contextmanager
    def _read(self, path: str, abort: Abort) -> Iterator[Iterator[bytes]]:
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise PermanentArchiveError("the archive has no such file") from None
        except OSError as exc:
            raise TransientArchiveError(f"cannot open the file: {exc.strerror}") from exc
        with handle:
            yield self._chunks(handle, abort)

    def _chunks(self, handle: BinaryIO, abort: Abort) -> Iterator[bytes]:
        while chunk := handle.read(self.chunk_size):
            abort.check()
            yield chunk

    def close(self) -> None:
        return None
