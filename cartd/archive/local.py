"""A folder on a mounted filesystem as the archive: every file is always on disk.

A file id is a path below the folder, and must stay below it once every link on the
way is followed. The file is opened first (`O_PATH`: no data access, so no device or
pipe is ever opened for real), and where the opened file really is is then read back
from `/proc/self/fd`: the check is of the very file read, with no gap in which a link
could be swapped, and it costs two system calls where resolving the path component by
component (`os.path.realpath`) cost one per folder on the way, for each of the two
requests a pull makes. Where `O_PATH` or `/proc` is missing, the path is resolved first.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from cartd.archive.base import Abort, ArchiveFile
from cartd.errors import PermanentArchiveError, TransientArchiveError

_O_PATH: int = getattr(os, "O_PATH", 0)
_PROC_FD = "/proc/self/fd"
#: Whether a file is located by opening it with `O_PATH` and asking `/proc` where it is:
#: both are needed, to check it and to open it again for reading. Otherwise the path is
#: resolved and checked first, and the file opened for reading at once.
_OPENED_AT = _O_PATH != 0 and os.path.isdir(_PROC_FD)


class FolderArchive:
    """File id `a/b.txt` is `<root>/a/b.txt`; ids cannot reach outside the root."""

    reads_in_process = True

    def __init__(self, root: str | os.PathLike[str], *, chunk_size: int) -> None:
        self.root = os.path.realpath(root)
        self._inside = os.path.join(self.root, "")
        self.chunk_size = chunk_size

    def _outside(self, file_id: str) -> PermanentArchiveError:
        return PermanentArchiveError(f"file id {file_id!r} is outside the archive folder")

    def _is_inside(self, real_path: str) -> bool:
        return real_path.startswith(self._inside) and real_path != self.root

    def _locate(self, file_id: str) -> tuple[int, os.stat_result]:
        """A descriptor of the file the id names (`O_PATH` where there is one) and its
        status; raises unless it is a regular file inside the folder."""
        # Strings and `os.path`, not `Path`: asked for every file of carts of 100,000.
        path = os.path.join(self.root, file_id.lstrip("/"))
        if not _OPENED_AT and not self._is_inside(os.path.realpath(path)):
            raise self._outside(file_id)
        try:
            flags = _O_PATH if _OPENED_AT else os.O_RDONLY | os.O_NONBLOCK
            descriptor = os.open(path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self._is_inside(os.path.realpath(path)):  # a link out to nothing
                raise self._outside(file_id) from None
            raise PermanentArchiveError("the archive has no such file") from None
        except OSError as exc:
            raise TransientArchiveError(f"cannot open the file: {exc.strerror}") from exc
        try:
            if _OPENED_AT and not self._is_inside(os.readlink(f"{_PROC_FD}/{descriptor}")):
                raise self._outside(file_id)
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise PermanentArchiveError("the archive entry is not a regular file")
        except OSError as exc:
            os.close(descriptor)
            raise TransientArchiveError(f"cannot stat the file: {exc.strerror}") from exc
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor, info

    def stage(self, file_id: str, abort: Abort) -> None:
        self.status(file_id, abort)

    def status(self, file_id: str, abort: Abort) -> ArchiveFile:
        abort.check()
        descriptor, info = self._locate(file_id)
        os.close(descriptor)
        return ArchiveFile(size=info.st_size, mtime=info.st_mtime, on_disk=True)

    def read(self, file_id: str, abort: Abort) -> AbstractContextManager[Iterator[bytes]]:
        return self._read(file_id, abort)

    @contextmanager
    def _read(self, file_id: str, abort: Abort) -> Iterator[Iterator[bytes]]:
        located, _ = self._locate(file_id)
        if _OPENED_AT:
            try:
                # The very file located, opened for reading: no path is looked up again.
                descriptor = os.open(f"{_PROC_FD}/{located}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise TransientArchiveError(f"cannot open the file: {exc.strerror}") from exc
            finally:
                os.close(located)
        else:
            descriptor = located
        try:
            yield self._chunks(descriptor, abort)
        finally:
            os.close(descriptor)

    def _chunks(self, descriptor: int, abort: Abort) -> Iterator[bytes]:
        while chunk := os.read(descriptor, self.chunk_size):
            abort.check()
            yield chunk

    def close(self) -> None:
        return None
