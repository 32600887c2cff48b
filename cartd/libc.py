"""A call of the Linux C library that Python's `os` module lacks; a no-op elsewhere."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_SYNC_FILE_RANGE_WRITE = 2


def _load_start_writeback() -> Callable[[int, int, int], None]:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range  # libc's, loaded already
    except (OSError, AttributeError, TypeError):
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
