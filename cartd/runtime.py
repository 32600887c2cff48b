"""Wire the parts together from the settings: the one place that knows every adapter."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import Engine

from cartd.archive import Archive, open_archive
from cartd.config import Settings
from cartd.db import migrate
from cartd.db.engine import database_url, make_engine, wait_for_database
from cartd.db.space import SpaceLedger
from cartd.db.store import CartStore
from cartd.errors import ConfigError
from cartd.observability.metrics import Metrics, VolumeSnapshot
from cartd.service.backoff import Backoff
from cartd.service.carts import CartService
from cartd.service.pipeline import Pipeline, PipelinePolicy
from cartd.storage import Volume
from cartd.workers.base import Runner
from cartd.workers.embedded import EmbeddedRunner

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    store: CartStore
    space: SpaceLedger
    volume: Volume
    archive: Archive
    pipeline: Pipeline
    runner: Runner
    carts: CartService
    metrics: Metrics

    def close(self) -> None:
        self.runner.stop()
        self.carts.close()
        self.archive.close()
        self.engine.dispose()


class VolumeLeadRunner:
    """The embedded runner, run by one process per volume at a time.

    Several API processes on one volume (`cartd serve --workers N`, gunicorn's workers,
    a second `cartd serve` by mistake) would each run their own embedded runner, and two
    of them could pull the same file into the same partial file at once. So only the
    process holding an exclusive lock on `runner.lock` in the volume stages; the others
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

    def submit_files(self, file_ids: Iterable[int]) -> None:
        if self._leading.is_set():
            self.inner.submit_files(file_ids)

    def submit_size(self, cart_id: int) -> None:
        if self._leading.is_set():
            self.inner.submit_size(cart_id)

    def submit_finish(self, cart_id: int) -> None:
        if self._leading.is_set():
            self.inner.submit_finish(cart_id)


def volume_snapshot(store: CartStore, space: SpaceLedger) -> VolumeSnapshot:
    """What /metrics reports of the carts and the volume, read at each scrape."""
    usage = space.usage()
    return VolumeSnapshot(store.count_by_status(), usage.used, usage.reserved)


def open_engine(settings: Settings) -> Engine:
    url = database_url(settings.database_url, settings.volume_path)
    engine = make_engine(
        url,
        echo=settings.database_debug_logging,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
    )
    wait_for_database(engine, settings.database_connect_attempts, settings.database_connect_wait)
    return engine


def ensure_schema(engine: Engine) -> None:
    """SQLite is ours alone, so bring it up to date; a shared server is `cartd dbsync`'s job."""
    current, head = migrate.current_revision(engine), migrate.HEAD
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        if current is None and migrate.is_empty(engine):
            migrate.create_fresh(engine)
        else:
            migrate.upgrade(engine)
        return
    if current != head:
        raise ConfigError(
            f"the database schema is at revision {current or 'none'} but cartd needs {head}:"
            " run `cartd dbsync` first"
        )


def build_runtime(settings: Settings) -> Runtime:
    """Build everything; the runner is not started (see `Runtime.runner.start`)."""
    if settings.broker_url:
        raise ConfigError(
            "celery.broker_url is set, but the distributed (Celery) runner is not available in"
            " this version; unset it to run the embedded worker"
        )
    volume = Volume(settings.volume_path)
    volume.prepare()
    engine = open_engine(settings)
    try:
        ensure_schema(engine)
    except Exception:
        engine.dispose()
        raise
    store = CartStore(engine)
    archive = open_archive(
        settings.archive_url,
        chunk_size=settings.transfer_size,
        timeout=settings.archive_timeout,
        connections=settings.stage_workers,
    )
    policy = PipelinePolicy(
        retry=Backoff(settings.retry_initial, 2.0, settings.retry_max),
        retry_attempts=settings.retry_attempts,
        poll=Backoff(settings.poll_initial, 1.5, settings.poll_max),
        chunk_size=settings.transfer_size,
        volume_limit=settings.volume_size_limit,
        lru_purge=settings.lru_purge,
        lru_buffer_time=settings.lru_buffer_time,
        claim_seconds=settings.claim_seconds,
    )
    space = SpaceLedger(engine)
    metrics = Metrics(partial(volume_snapshot, store, space))
    pipeline = Pipeline(store, space, volume, archive, policy, metrics)
    runner = VolumeLeadRunner(
        EmbeddedRunner(pipeline, store, volume, settings.stage_workers),
        settings.volume_path / "runner.lock",
    )
    carts = CartService(
        store,
        volume,
        runner,
        bundle_default=settings.bundle_task,
        chunk_size=settings.transfer_size,
        metrics=metrics,
    )
    return Runtime(
        settings, engine, store, space, volume, archive, pipeline, runner, carts, metrics
    )
