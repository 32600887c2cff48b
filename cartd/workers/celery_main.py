"""`celery -A cartd.workers.celery_main worker`: the original's style of deployment.

The app is built on first access of `app`, from the settings a `cartd` command would
read (`CARTD_CONFIG` or `~/.pacifica-cartd/config.ini`, and the environment), so
importing this module builds nothing. `cartd worker` is the same worker, with cartd's
own logging and options.
"""

from __future__ import annotations

import logging
import os
from functools import cache, partial
from typing import Any

from celery import Celery

from cartd.config import Settings, load_settings
from cartd.observability.metrics import MULTIPROC_ENV
from cartd.runtime import build_runtime
from cartd.workers.distributed.worker import WorkerHost, worker_app

log = logging.getLogger(__name__)


def create_worker(settings: Settings) -> tuple[Celery, WorkerHost]:
    """A worker's Celery app whose runtime is `cartd.runtime.build_runtime(settings)`,
    with a worker's metrics: its own counters, on `cartd.metrics_port` when set."""
    if os.environ.get(MULTIPROC_ENV):
        log.warning(
            "%s is set: this worker's counters go to that folder as well, and an API process"
            " using the same folder adds them to its /metrics; a worker serves its own on"
            " cartd.metrics_port, so leave %s to the API processes (`cartd worker` drops it)",
            MULTIPROC_ENV,
            MULTIPROC_ENV,
        )
    return worker_app(settings, partial(build_runtime, settings, api=False))


@cache
def _from_environment() -> Celery:
    app, _ = create_worker(load_settings())
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
