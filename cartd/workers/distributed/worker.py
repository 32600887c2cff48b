"""What a worker process is made of: the task shims, its one runtime, its sweep.

The tasks are shims around the steps the embedded runner calls (`steps.take_step`) and
schedule what those return the same way (`steps.follow_up`): a file's next step after
its delay as a countdown, the files a step starts now. A worker never sleeps on tape.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from celery import Celery, bootsteps, signals

from cartd.config import Settings
from cartd.db.store import CartStore
from cartd.observability.metrics import Metrics, MetricsServer
from cartd.service.pipeline import Pipeline
from cartd.storage import Volume
from cartd.workers.base import Runner
from cartd.workers.distributed.app import FILES, FINISH, SIZE, create_celery
from cartd.workers.distributed.runner import CeleryRunner
from cartd.workers.distributed.sweep import Sweeper
from cartd.workers.steps import follow_up, take_step

log = logging.getLogger(__name__)


class WorkerParts(Protocol):
    """The part of the runtime a worker uses (`cartd.runtime.Runtime` is one)."""

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def store(self) -> CartStore: ...

    @property
    def volume(self) -> Volume: ...

    @property
    def metrics(self) -> Metrics: ...

    def close(self) -> None: ...


class WorkerHost:
    """The worker process's one runtime, built once and shared by the pool's threads
    (its database and archive connection pools are sized for them), with the pipeline's
    watch running, as it must in any process that takes steps, and the sweep; and, given a
    port, the endpoint serving the runtime's metrics."""

    def __init__(
        self,
        build: Callable[[], WorkerParts],
        runner: Runner,
        grace: float,
        metrics_at: tuple[str, int] | None = None,
    ) -> None:
        self._build = build
        self._runner = runner
        self._grace = grace
        self._metrics_at = metrics_at
        self._parts: WorkerParts | None = None
        self._sweeper: Sweeper | None = None
        self._metrics_server: MetricsServer | None = None
        self._lock = threading.Lock()

    def parts(self) -> WorkerParts:
        with self._lock:
            if self._parts is None:
                parts = self._build()
                parts.pipeline.start()
                self._parts = parts
            return self._parts

    def pipeline(self) -> Pipeline:
        return self.parts().pipeline

    def serve_metrics(self) -> MetricsServer | None:
        """Serve the runtime's metrics on the port given, once; None when none was.

        A port that cannot be had stops the start (`ConfigError`): a worker whose
        metrics nobody can scrape should not look healthy."""
        if self._metrics_at is None:
            return None
        metrics = self.parts().metrics
        with self._lock:
            if self._metrics_server is None:
                address, port = self._metrics_at
                self._metrics_server = MetricsServer(metrics.exposed, address, port)
                log.info(
                    "cartd worker serves its metrics at http://%s:%d/metrics",
                    address,
                    self._metrics_server.port,
                )
            return self._metrics_server

    def start(self) -> None:
        parts = self.parts()
        self._clean_deleted(parts)
        self.serve_metrics()
        with self._lock:
            if self._sweeper is None:
                self._sweeper = Sweeper(
                    parts.store, self._runner, self._grace, metrics=parts.metrics
                )
                self._sweeper.start()
        log.info("cartd worker ready; steps overdue by %.0fs are sent again", self._grace)

    def stop(self) -> None:
        """Stop sweeping; steps under way go on with the runtime (see `close`)."""
        with self._lock:
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.stop()

    def close(self) -> None:
        """Close the runtime, once the pool has let the steps under way finish."""
        self.stop()
        with self._lock:
            parts, self._parts = self._parts, None
            server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.close()
        if parts is not None:
            parts.pipeline.stop()
            parts.close()
            log.info("cartd worker closed its database and archive connections")

    @staticmethod
    def _clean_deleted(parts: WorkerParts) -> None:
        """Remove what carts deleted by a process that died mid-delete left on the volume."""
        _, _, deleted = parts.store.unfinished()
        for cart_id in deleted:
            parts.volume.remove_cart(cart_id)
            parts.store.forget(cart_id)


def register_tasks(app: Celery, pipeline: Callable[[], Pipeline], runner: Runner) -> None:
    """The three task shims: take the step, schedule what it returns."""

    @app.task(name=FILES)
    def step_files(file_ids: list[int]) -> None:
        follow_up(runner, "file", file_ids, take_step(pipeline(), "file", file_ids))

    @app.task(name=SIZE)
    def step_size(cart_id: int) -> None:
        follow_up(runner, "size", [cart_id], take_step(pipeline(), "size", [cart_id]))

    @app.task(name=FINISH)
    def step_finish(cart_id: int) -> None:
        follow_up(runner, "finish", [cart_id], take_step(pipeline(), "finish", [cart_id]))


def _lifecycle(host: WorkerHost) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that starts the host with the worker and stops its sweep with it,
    so `cartd worker` and `celery -A ... worker` run the same start and stop. It stops
    before the pool (it starts after it), so the runtime is closed later, on the
    worker's shutdown signal, when the steps under way are done."""

    class CartdHost(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Pool",)

        def start(self, parent: Any) -> None:
            host.start()

        def stop(self, parent: Any) -> None:
            host.stop()

    return CartdHost


def worker_app(settings: Settings, build: Callable[[], WorkerParts]) -> tuple[Celery, WorkerHost]:
    """The Celery app of a worker process: the tasks, and a host that builds the runtime
    with `build` (first use, or the worker's start, whichever comes first)."""
    app = create_celery(settings)
    runner = CeleryRunner(app, spread=settings.stage_workers)
    metrics_at = None
    if settings.metrics_port:
        metrics_at = (settings.metrics_address, settings.metrics_port)
    host = WorkerHost(build, runner, settings.sweep_grace, metrics_at)
    register_tasks(app, host.pipeline, runner)
    app.steps["worker"].add(_lifecycle(host))

    def close_after_the_pool(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            host.close()

    signals.worker_shutdown.connect(close_after_the_pool, weak=False)
    return app, host
