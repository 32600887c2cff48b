"""Writing a pulled file so that it is on disk when we say so, and so that the download
that follows reads memory, not the disk.

A file is written through the page cache with plain writes, the kernel asked to
start writing back every few megabytes so that the fsync before the move into
place has little left to do. Its pages stay cached (clean once written back),
and a cart is usually downloaded soon after it is ready: the first download
then reads memory. Measured back to back on a busy 2-core VM (2026-11-30,
docs/benchmark.md "End to end"), a 1 GiB cart from the Archive Interface went
from POST to its last byte downloaded 12 to 24% sooner than with `O_DIRECT`
writes (which this module used before), although it took 13 to 30% longer to
become ready: the first download ran at 169-262 MB/s instead of 120-170 (the
benchmark's client hashes every byte; `curl` read 1.0-1.7 GB/s instead of
0.25-0.41).

A file of an eighth of the machine's memory or more is written with `O_DIRECT`
instead, from a few page-aligned buffers on a helper thread: it would push most
other carts' files out of the cache and be pushed out itself before its
download. A filesystem without `O_DIRECT` (tmpfs) gets plain writes. Either way
the file is on disk when `commit` returns.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import threading
from types import TracebackType

from cartd.libc import start_writeback

MiB = 1024 * 1024


def _memory() -> int:
    """The machine's physical memory in bytes; 0 where it cannot be told."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


#: Files at least this big are written directly, bypassing the page cache, on a helper
#: thread: an eighth of the machine's memory (3 GiB of 24), and never less than 256 MiB.
DIRECT_FROM = max(_memory() // 8, 256 * MiB)
#: One direct write; a multiple of any block size a disk asks alignment to.
DIRECT_BLOCK = 2 * MiB
#: Blocks per direct writer: one filling while the other is written.
DIRECT_BUFFERS = 2
#: Plain writes start writing back after this many new bytes.
WRITEBACK_EVERY = 8 * MiB

#: What `O_DIRECT` needs lengths and offsets to be multiples of, on any common disk.
_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _write_all(descriptor: int, data: bytes | memoryview | mmap.mmap) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


class _Writer:
    """What both ways of writing offer `DurableFile`."""

    descriptor: int

    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> None:
        """Every byte handed to the kernel; raises what any write raised."""

    def stop(self) -> None:
        """Release helpers without finishing (an abandoned pull)."""


class _PlainWriter(_Writer):
    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.written = 0
        self.flushed = 0

    def write(self, chunk: bytes) -> None:
        _write_all(self.descriptor, chunk)
        self.written += len(chunk)
        if self.written - self.flushed >= WRITEBACK_EVERY:
            start_writeback(self.descriptor, self.flushed, self.written - self.flushed)
            self.flushed = self.written


_STOP = None


class _DirectWriter(_Writer):
    """Fills aligned blocks here and writes them with `O_DIRECT` on a helper thread.

    The last block is written directly up to its last whole 4 KiB; the few bytes
    after are written once `O_DIRECT` is switched off, so no padding is ever
    written. A write error on the helper thread is raised by the next `write` or
    by `finish`; the helper keeps recycling blocks meanwhile, so the puller never
    waits forever.
    """

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.error: BaseException | None = None
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        self.full: queue.Queue[mmap.mmap | None] = queue.Queue()
        for _ in range(DIRECT_BUFFERS):
            self.free.put(mmap.mmap(-1, DIRECT_BLOCK))  # anonymous: page-aligned
        self.block = self.free.get()
        self.filled = 0
        self.thread: threading.Thread | None = threading.Thread(
            target=self._drain, name="direct-write", daemon=True
        )
        self.thread.start()

    def _drain(self) -> None:
        while (block := self.full.get()) is not _STOP:
            if self.error is None:
                try:
                    _write_all(self.descriptor, block)
                except BaseException as exc:  # handed to the puller's thread
                    self.error = exc
            self.free.put(block)

    def write(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        view = memoryview(chunk)
        while view:
            take = min(len(view), DIRECT_BLOCK - self.filled)
            self.block[self.filled : self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == DIRECT_BLOCK:
                self.full.put(self.block)
                self.block = self.free.get()
                self.filled = 0

    def stop(self) -> None:
        if self.thread is not None:
            self.full.put(_STOP)
            self.thread.join()
            self.thread = None

    def finish(self) -> None:
        self.stop()
        if self.error is not None:
            raise self.error
        whole = self.filled - self.filled % _ALIGN
        if whole:
            _write_all(self.descriptor, memoryview(self.block)[:whole])
        if self.filled > whole:
            flags = fcntl.fcntl(self.descriptor, fcntl.F_GETFL)
            fcntl.fcntl(self.descriptor, fcntl.F_SETFL, flags & ~_O_DIRECT)
            _write_all(self.descriptor, memoryview(self.block)[whole : self.filled])


def _create(path: str | os.PathLike[str], flags: int) -> int:
    """A new file, and its folder if need be."""
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        return os.open(path, flags, 0o644)


def _open(path: str | os.PathLike[str], expected_size: int) -> _Writer:
    if _O_DIRECT and expected_size >= DIRECT_FROM:
        try:
            descriptor = _create(path, _FLAGS | _O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: this filesystem has no O_DIRECT
                raise
        else:
            try:
                return _DirectWriter(descriptor)
            except BaseException:
                os.close(descriptor)
                raise
    return _PlainWriter(_create(path, _FLAGS))


class DurableFile:
    """A new file (in a folder made if need be) written from a stream of chunks; on disk
    once `commit` returns.

    Use as a context manager: leaving it without `commit` (an error, a cancelled
    pull) closes the file and leaves it to the caller to remove.
    """

    def __init__(self, path: str | os.PathLike[str], *, expected_size: int = 0) -> None:
        self._writer = _open(path, expected_size)
        self._open = True
        self._finished = False

    def write(self, chunk: bytes) -> None:
        self._writer.write(chunk)

    def finish(self) -> None:
        """Wait for every byte to be handed to the kernel: a reader of the file sees all
        of it from now on, though it may not be on disk yet. Raises what any write
        raised."""
        if not self._finished:
            self._finished = True
            self._writer.finish()

    def commit(self, *, sync: bool = True) -> None:
        """Wait for every byte, fsync, close; raises what any write raised.

        With `sync=False` there is no fsync: the caller makes the file durable later,
        together with others (`cartd.storage.VolumeSync`).
        """
        self.finish()
        if sync:
            os.fsync(self._writer.descriptor)
        self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._writer.stop()
            os.close(self._writer.descriptor)

    def __enter__(self) -> DurableFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()
