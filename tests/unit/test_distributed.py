"""The distributed runner's own rules: how files are put in messages, what a sweep sends, and
that a broker that cannot be reached never fails the caller."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from cartd.config import load_settings
from cartd.db.store import CartStore, carts, files
from cartd.observability.metrics import Metrics
from cartd.schemas import FileOrder
from cartd.status import CartStatus
from cartd.workers.distributed.app import create_celery, visibility_timeout
from cartd.workers.distributed.runner import MAX_BATCH, CeleryRunner, batches
from cartd.workers.distributed.sweep import Sweeper


@pytest.fixture(autouse=True)
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.pacifica-cartd/config.ini: only the settings a test gives are read."""
    monkeypatch.setenv("HOME", str(tmp_path))


def test_a_small_cart_is_spread_over_messages_and_a_large_one_batched() -> None:
    small = list(batches(list(range(10)), spread=4))
    large = list(batches(list(range(1000)), spread=4))
    assert [len(batch) for batch in small] == [3, 3, 3, 1], "four workers get a share each"
    assert all(len(batch) == MAX_BATCH for batch in large[:-1])
    assert len(large) == 63, "at most one message per 16 files"
    assert sorted(i for batch in large for i in batch) == list(range(1000))
    assert list(batches([], spread=4)) == []
    assert list(batches([7], spread=4)) == [[7]]


class Sent:
    """A runner that records what a sweep asks of it."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.files: list[int] = []
        self.finishes: list[int] = []

    def submit_file(self, file_id: int, delay: float = 0.0) -> None:
        self.files.append(file_id)

    def submit_files(self, file_ids: Iterable[int], delay: float = 0.0) -> None:
        self.files += list(file_ids)

    def submit_size(self, cart_id: int, delay: float = 0.0) -> None:
        self.sizes.append(cart_id)

    def submit_finish(self, cart_id: int, delay: float = 0.0) -> None:
        self.finishes.append(cart_id)

    def start(self) -> None: ...

    def stop(self) -> None: ...


def test_each_worker_sends_a_lost_step_once_per_grace(store: CartStore) -> None:
    orders = [FileOrder(f"a{i}", f"f{i}", "md5", "0" * 32) for i in range(3)]
    never_sized, _ = store.create_cart("never-sized", False, orders[:1])
    staging, file_ids = store.create_cart("staging", False, orders[1:])
    store.move_cart(staging.id, CartStatus.STAGING)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with store.engine.begin() as connection:
        connection.execute(update(carts).values(updated_at=long_ago))
        connection.execute(update(files).values(next_attempt_at=time.time() - 3600))
    first, second = Sent(), Sent()
    one, other = Sweeper(store, first, grace=60), Sweeper(store, second, grace=60)

    one.sweep()
    one.sweep()
    other.sweep()

    assert first.sizes == [never_sized.id], "sent once by this worker in a grace"
    assert sorted(first.files) == file_ids
    assert second.sizes == [never_sized.id], "another worker sends it once too, no more"
    assert second.files == [], "files are marked in the database: no worker sends them again"


def test_a_sweep_counts_the_steps_it_sends_again(store: CartStore) -> None:
    orders = [FileOrder(f"a{i}", f"f{i}", "md5", "0" * 32) for i in range(3)]
    store.create_cart("never-sized", False, orders[:1])
    staging, _ = store.create_cart("staging", False, orders[1:])
    store.move_cart(staging.id, CartStatus.STAGING)
    with store.engine.begin() as connection:
        connection.execute(update(carts).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
        connection.execute(update(files).values(next_attempt_at=time.time() - 3600))
    metrics = Metrics()
    sweeper = Sweeper(store, Sent(), grace=60, metrics=metrics)

    sweeper.sweep()
    sweeper.sweep()  # nothing more is sent within the grace, so nothing more is counted

    body = metrics.render()[0].decode()
    assert 'cartd_steps_resent_total{kind="size"} 1.0' in body
    assert 'cartd_steps_resent_total{kind="file"} 2.0' in body
    assert 'cartd_steps_resent_total{kind="finish"} 0.0' in body


def test_a_broker_that_cannot_be_reached_fails_no_caller(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={"BROKER_URL": "pyamqp://guest:guest@127.0.0.1:1//"})
    runner = CeleryRunner(create_celery(settings), spread=1)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        runner.submit_size(1)
        runner.submit_files([1, 2], delay=2.0)
    assert time.monotonic() - began < 10, "a short retry, then the sweep's job"
    assert caplog.text.count("a worker's sweep sends it later") == 2
    runner.stop()


def test_redis_holds_a_message_under_countdown_longer_than_the_longest_countdown() -> None:
    settings = load_settings(
        environ={"BROKER_URL": "redis://127.0.0.1:6379/0", "CARTD_POLL_MAX": "3600"}
    )
    app = create_celery(settings)
    assert app.conf.broker_transport_options["visibility_timeout"] > 3600
    assert visibility_timeout(settings) == app.conf.broker_transport_options["visibility_timeout"]
    assert app.conf.task_acks_late
    assert app.conf.worker_prefetch_multiplier == 1


def test_the_carts_own_steps_go_by_a_queue_of_their_own() -> None:
    settings = load_settings(
        environ={"BROKER_URL": "redis://127.0.0.1:6379/0", "CARTD_CELERY_QUEUE": "site"}
    )
    router = create_celery(settings).amqp.router
    routes = {
        name: router.route({}, name, (), {})["queue"]
        for name in ("cartd.files", "cartd.size", "cartd.finish")
    }
    # Each queue's exchange and routing key its own: else they all reach one queue.
    assert {name: (q.name, q.exchange.name, q.routing_key) for name, q in routes.items()} == {
        "cartd.files": ("site", "site", "site"),
        "cartd.size": ("site.carts", "site.carts", "site.carts"),
        "cartd.finish": ("site.carts", "site.carts", "site.carts"),
    }
