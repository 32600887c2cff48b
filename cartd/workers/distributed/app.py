"""The Celery app, built from the settings by a function: nothing is made at import."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from cartd.config import Settings
from cartd.errors import ConfigError
from cartd.workers.steps import RETRY_BROKEN

#: Task names: the wire contract between API processes and workers.
FILES = "cartd.files"
SIZE = "cartd.size"
FINISH = "cartd.finish"

#: What the name of the queue of the carts' own steps adds to `celery.queue`.
CART_QUEUE_SUFFIX = ".carts"

#: Seconds added to the longest countdown cartd asks for to make Redis's visibility
#: timeout: a worker may hold a message that long past its countdown while its threads
#: are busy, before Redis hands it to another worker.
VISIBILITY_MARGIN = 600

#: How a send retries a broker that is briefly away (a restart, a failover): about two
#: seconds in all, so an API request is not held long; a send lost after that is found
#: by a worker's sweep, since the step is recorded in the database first.
SEND_RETRY: dict[str, Any] = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.5,
    "interval_max": 1.0,
}


def visibility_timeout(settings: Settings) -> int:
    """Redis's visibility timeout: longer than the longest countdown, plus a margin.

    Redis gives a message that was taken but not acknowledged within this time to
    another worker; a message under a countdown is taken at once and acknowledged
    only after it ran (acks late), so a timeout shorter than the countdown would
    deliver it again and again. A delivery twice is still harmless (the steps are
    idempotent), only wasted; and a long timeout costs nothing in recovery, since a
    task lost with a killed worker is found by the sweep after `sweep_grace`.
    """
    longest = max(settings.poll_max, settings.retry_max, RETRY_BROKEN)
    return int(longest) + VISIBILITY_MARGIN


def queue_names(settings: Settings) -> tuple[str, str]:
    """The queue of file steps (`celery.queue`) and that of the carts' own steps.

    A cart's steps (sizing ahead of its pulls, making it ready) are few and short, and
    what they do matters to every client of the cart; in the queue of file steps they
    would wait behind every message sent before them (a cart of 100,000 files sends
    thousands). Workers take from both queues.
    """
    return settings.celery_queue, settings.celery_queue + CART_QUEUE_SUFFIX


def create_celery(settings: Settings) -> Celery:
    """A Celery app for `settings`: the broker, the queues, and the delivery rules.

    Late acknowledgement and a prefetch of one mean a message leaves the broker only
    when a step is done with it: a worker killed mid-step leaves its messages to be
    delivered again. Results are never read (the database says how a cart is doing),
    so none are stored.
    """
    if not settings.broker_url:
        raise ConfigError("celery.broker_url (BROKER_URL) is not set: no broker to use")
    app = Celery(
        "cartd",
        broker=settings.broker_url,
        backend=settings.backend_url,
        set_as_current=False,
    )
    queues = queue_names(settings)
    files_queue, carts_queue = queues
    app.conf.update(
        task_default_queue=files_queue,
        # Each queue with an exchange and a routing key of its own name: left out, Celery
        # gives every queue the default queue's, and the carts' steps would go there.
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in queues],
        task_routes={SIZE: {"queue": carts_queue}, FINISH: {"queue": carts_queue}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One process of threads sharing one runtime (its connection pools): the steps
        # wait on the archive, the disk and the database, not on the CPU.
        worker_pool="threads",
        worker_concurrency=settings.stage_workers,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        task_publish_retry=True,
        task_publish_retry_policy=SEND_RETRY,
        enable_utc=True,
    )
    return app
