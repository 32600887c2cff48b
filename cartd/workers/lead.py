"""The embedded runner of one process per volume (see `VolumeLeadRunner`)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from cartd.workers.embedded import EmbeddedRunner

log = logging.getLogger(__name__)


class VolumeLeadRunner:
    """The embedded runner, run by one process per volume at a time.

    Several API processes on one volume (`cartd serve --workers N`, gunicorn's workers,
    a second `cartd serve` by mistake) would each run their own embedded runner. Claims
    keep them from pulling one file twice, but the archive would be asked for
    `stage_workers` things at once by each of them, and SQLite would have as many
    writers. So only the process holding an exclusive lock on `runner.lock` in the
    volume stages; the others
    only record orders, which the holder's sweep picks up within seconds. The lock goes
    with its process, even on SIGKILL; another process then takes it within `retry`
    seconds and starts by sweeping up everything unfinished.
    """

    def __init__(self, inner: EmbeddedRunner, lock_path: Path, retry: float = 1.0) -> None:
        self.inner = inner
        self.lock_path = lock_path
        self.retry = retry
        self._fd: int | None = None
        self._leading = threading.Event()
        self._stopping = threading.Event()
        self._waiter: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def _try_lock(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _lead(self) -> None:
        self.inner.start()
        self._leading.set()
        log.info("this process runs the staging steps of volume %s", self.lock_path.parent)

    def _wait_for_lock(self) -> None:
        while not self._stopping.wait(self.retry):
            try:
                if self._try_lock():
                    self._lead()
                    return
            except Exception:
                log.exception("taking the runner lock failed; trying again")

    def start(self) -> None:
        if self._try_lock():
            self._lead()
            return
        log.info(
            "another process runs the staging steps of volume %s; this one records orders"
            " and takes over should that process end",
            self.lock_path.parent,
        )
        self._waiter = threading.Thread(
            target=self._wait_for_lock, name="cartd-runner-lock", daemon=True
        )
        self._waiter.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._waiter is not None:
            self._waiter.join()
        if self._leading.is_set():
            self.inner.stop()
            self._leading.clear()
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    # Work submitted to a process that does not lead is found by the leader's sweep.
    def submit_file(self, file_id: int, delay: float = 0.0) -> None:
        if self._leading.is_set():
            self.inner.submit_file(file_id, delay)

    def submit_files(self, file_ids: Iterable[int], delay: float = 0.0) -> None:
        if self._leading.is_set():
            self.inner.submit_files(file_ids, delay)

    def submit_size(self, cart_id: int, delay: float = 0.0) -> None:
        if self._leading.is_set():
            self.inner.submit_size(cart_id, delay)

    def submit_finish(self, cart_id: int, delay: float = 0.0) -> None:
        if self._leading.is_set():
            self.inner.submit_finish(cart_id, delay)
