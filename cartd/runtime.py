"""Wire the parts together from the settings: the one place that knows every adapter."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Engine

from cartd.archive import Archive, open_archive
from cartd.callbacks import Sender
from cartd.callbacks.http import HttpSender
from cartd.config import Settings
from cartd.db import migrate
from cartd.db.engine import database_url, make_engine, wait_for_database
from cartd.db.original import OriginalTables
from cartd.db.outbox import Outbox
from cartd.db.space import SpaceLedger
from cartd.db.store import CartStore
from cartd.errors import ConfigError
from cartd.observability.metrics import Metrics, VolumeSnapshot, multiprocess_dir
from cartd.schemas import CallbackRule
from cartd.service.backoff import Backoff
from cartd.service.callbacks import CallbackDelivery, CallbackPolicy
from cartd.service.carts import CartService
from cartd.service.original import OriginalImport
from cartd.service.pipeline import Pipeline, PipelinePolicy
from cartd.storage import Volume
from cartd.workers.base import Runner
from cartd.workers.embedded import EmbeddedRunner
from cartd.workers.lead import VolumeLeadRunner

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
    #: What sends callback events, when callbacks are enabled (`cartd.callback_hosts`).
    callback_sender: Sender | None = None

    def close(self) -> None:
        self.runner.stop()
        self.carts.close()
        self.archive.close()
        if self.callback_sender is not None:
            self.callback_sender.close()
        self.engine.dispose()


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


def bring_over_originals(engine: Engine, volume: Volume) -> None:
    """The original Pacifica Cartd's carts in the database: on SQLite, which `ensure_schema`
    upgrades itself, brought over now as `cartd dbsync` would (a cartd started on the
    original's volume and database serves its carts at once); on a shared server only
    said, since bringing them over is `dbsync`'s job there, as the schema is."""
    originals = OriginalImport(OriginalTables(engine), volume)
    if engine.dialect.name == "sqlite":
        originals.run()
    elif pending := originals.pending():
        log.warning(
            "%d carts of Pacifica Cartd's tables are not brought over yet (they answer 404):"
            " run `cartd dbsync`",
            pending,
        )


def make_runner(settings: Settings, pipeline: Pipeline, store: CartStore, volume: Volume) -> Runner:
    """The distributed runner when a broker is configured, else the embedded one."""
    if settings.broker_url:
        from cartd.workers.distributed.app import create_celery
        from cartd.workers.distributed.runner import CeleryRunner

        return CeleryRunner(create_celery(settings), spread=settings.stage_workers)
    return VolumeLeadRunner(
        EmbeddedRunner(pipeline, store, volume, settings.stage_workers),
        settings.volume_path / "runner.lock",
    )


def build_runtime(settings: Settings, *, api: bool = True) -> Runtime:
    """Build everything; the runner is not started (see `Runtime.runner.start`).

    With a broker configured the runner sends steps to it (`cartd worker` runs them);
    otherwise the embedded runner runs them in this process.

    An API process's metrics carry the volume gauges, read from the database at each
    scrape, and follow `PROMETHEUS_MULTIPROC_DIR`; a worker's (`api=False`) are its own
    counters only, served on its own port.
    """
    volume = Volume(settings.volume_path)
    volume.prepare()
    engine = open_engine(settings)
    try:
        ensure_schema(engine)
        bring_over_originals(engine, volume)
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
    if api:
        metrics = Metrics(
            partial(volume_snapshot, store, space), multiprocess_dir=multiprocess_dir()
        )
    else:
        metrics = Metrics()
    rule = CallbackRule(settings.callback_hosts)
    sender = open_callbacks(settings) if rule.enabled else None
    delivery = None
    if sender is not None:
        delivery = CallbackDelivery(
            Outbox(engine),
            sender,
            rule,
            CallbackPolicy(
                retry=Backoff(settings.callback_retry_initial, 2.0, settings.callback_retry_max),
                attempts=settings.callback_attempts,
                lease=max(settings.claim_seconds, 3 * settings.callback_timeout),
            ),
            metrics,
        )
    pipeline = Pipeline(store, space, volume, archive, policy, metrics, delivery)
    runner = make_runner(settings, pipeline, store, volume)
    carts = CartService(
        store,
        volume,
        runner,
        bundle_default=settings.bundle_task,
        chunk_size=settings.transfer_size,
        stream_while_pulling=settings.stream_while_pulling,
        metrics=metrics,
        callbacks=rule,
    )
    return Runtime(
        settings, engine, store, space, volume, archive, pipeline, runner, carts, metrics, sender
    )


def open_callbacks(settings: Settings) -> Sender:
    """The sender of callback events; only called with callbacks enabled, when the
    settings hold a secret (they refuse hosts without one)."""
    assert settings.callback_secret is not None
    return HttpSender(settings.callback_secret.get_secret_value(), settings.callback_timeout)
