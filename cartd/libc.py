"""Calls of the Linux C library that Python's `os` module lacks; stand-ins elsewhere."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from typing import Any

_SYNC_FILE_RANGE_WRITE = 2


def _libc_function(name: str) -> Any:
    """A function of the C library this process has loaded already; None if it lacks it."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError, TypeError):
        return None


def _load_start_writeback() -> Callable[[int, int, int], None]:
    function = _libc_function("sync_file_range")
    if function is None:
        return lambda descriptor, offset, length: None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def start_writeback(descriptor: int, offset: int, length: int) -> None:
        # Only a hint: a failure here is met again, and reported, by the fsync.
        function(descriptor, offset, length, _SYNC_FILE_RANGE_WRITE)

    return start_writeback


#: `sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)`: start writing a range
#: back to disk now, without waiting, so that a later fsync has little left to do.
start_writeback = _load_start_writeback()


def _reports_writeback_errors(release: str) -> bool:
    """Whether a Linux kernel of this release makes `syncfs` report the write-back
    errors met since its descriptor was opened: 5.8 and later. Before, it said 0."""
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _load_sync_filesystem() -> Callable[[int], None] | None:
    if platform.system() != "Linux" or not _reports_writeback_errors(platform.release()):
        return None
    function = _libc_function("syncfs")
    if function is None:
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def sync_filesystem(descriptor: int) -> None:
        if function(descriptor) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))

    return sync_filesystem


#: `syncfs(fd)`: everything written to the filesystem holding `fd` is on disk when it
#: returns, and it raises what writing back any of it met since `fd` was opened. One
#: call for many small files costs what one fsync does; None where it cannot be relied
#: on (not Linux, or a kernel before 5.8, whose `syncfs` did not report errors).
sync_filesystem = _load_sync_filesystem()


def _load_filesystem_type() -> Callable[[str], int | None]:
    function = _libc_function("statfs") if platform.system() == "Linux" else None
    if function is None:
        return lambda path: None
    function.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    function.restype = ctypes.c_int

    def filesystem_type(path: str) -> int | None:
        # `struct statfs` begins with `f_type`, a C long on every Linux architecture;
        # the buffer is larger than the whole struct anywhere.
        buffer = ctypes.create_string_buffer(256)
        if function(os.fsencode(path), buffer) != 0:
            return None
        return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF

    return filesystem_type


#: `statfs(path).f_type`: the magic number of the filesystem holding `path` (what
#: `stat -f -c %t` prints); None where it cannot be told.
filesystem_type = _load_filesystem_type()
