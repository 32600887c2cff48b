"""What the pipeline needs of an archive, and nothing more."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from cartd.errors import CartGone


@dataclass(frozen=True)
class ArchiveFile:
    """What the archive says of one file."""

    size: int
    mtime: float
    on_disk: bool  # readable now; False while it sits on tape
    message: str = ""


class Abort:
    """Lets another thread cut short the archive requests made for one piece of work.

    A request blocked on the archive's socket cannot look at a flag, so while it runs
    an adapter registers how to break its connection (`guard`); `abort` breaks every
    such connection at once and makes the next request refuse to start. Whatever a
    guarded request raises once aborted surfaces as `CartGone`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cutters: dict[int, Callable[[], None]] = {}
        self.aborted = False

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            # Cut under the lock: a connection whose request just ended is not handed
            # back for reuse until its cutter is gone.
            for cut in self._cutters.values():
                cut()

    def check(self) -> None:
        if self.aborted:
            raise CartGone("the cart is no longer being made")

    @contextmanager
    def guard(self, cut: Callable[[], None]) -> Iterator[None]:
        """Run a request that `abort` may break with `cut`."""
        key = id(cut)
        with self._lock:
            self.check()
            self._cutters[key] = cut
        try:
            yield
        except Exception as exc:
            if self.aborted:
                raise CartGone("the cart is no longer being made") from exc
            raise
        finally:
            with self._lock:
                del self._cutters[key]


class Archive(Protocol):
    """A store of files by id. Methods raise `TransientArchiveError` or `PermanentArchiveError`,
    and `CartGone` once their `abort` is triggered."""

    #: Whether reading it is this process's own work (a mounted folder) rather than
    #: waiting on a server: then small files are pulled by one thread at a time
    #: (`cartd.service.pipeline.TAKE_TURNS_BELOW`).
    reads_in_process: bool

    def stage(self, file_id: str, abort: Abort) -> None:
        """Ask for the file to be brought to disk; returns at once."""

    def status(self, file_id: str, abort: Abort) -> ArchiveFile:
        """Size, modification time and whether the file can be read now."""

    def read(self, file_id: str, abort: Abort) -> AbstractContextManager[Iterator[bytes]]:
        """The file's bytes as a stream of chunks; a broken stream raises a transient error."""

    def close(self) -> None:
        """Release connections."""
