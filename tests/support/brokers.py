"""The machine's real brokers, with a queue of its own for each test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kombu import Connection

from cartd.workers.distributed.app import CART_QUEUE_SUFFIX

BROKERS = {
    "rabbitmq": "pyamqp://guest:guest@127.0.0.1:5672//",
    "redis": "redis://127.0.0.1:6379/0",
}


@dataclass(frozen=True)
class BrokerQueue:
    """One queue on a real broker: no other test sees its messages."""

    url: str
    name: str

    def env(self) -> dict[str, str]:
        """The settings that point cartd processes at it."""
        return {"BROKER_URL": self.url, "CARTD_CELERY_QUEUE": self.name}

    @property
    def names(self) -> tuple[str, str]:
        """Its queue of file steps, and that of the carts' own steps beside it."""
        return self.name, self.name + CART_QUEUE_SUFFIX

    def depth(self) -> int:
        """Messages waiting in its queues (none in a queue never declared)."""

        def waiting(channel: Any, name: str) -> int:
            return int(channel.queue_declare(name, passive=True).message_count)

        return self._sum(waiting)

    def purge(self) -> int:
        """Drop every waiting message, as a broker that lost them would; how many."""
        return self._sum(lambda channel, name: channel.queue_purge(name) or 0)

    def _sum(self, count: Callable[[Any, str], int]) -> int:
        """`count` of each of its queues, added up; a queue never declared counts 0."""
        total = 0
        with Connection(self.url) as connection:
            for name in self.names:
                channel = connection.channel()  # its own: RabbitMQ closes one naming no queue
                try:
                    total += int(count(channel, name))
                except Exception:
                    pass  # never declared: nothing was sent to it
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
        return total

    def delete(self) -> None:
        with Connection(self.url) as connection:
            channel = connection.default_channel
            for name in self.names:
                with contextlib.suppress(Exception):
                    channel.queue_delete(name)
                with contextlib.suppress(Exception):
                    channel.exchange_delete(name)
                if self.url.startswith("redis"):  # kombu keeps a queue's bindings apart
                    bindings = ("_kombu.binding.", "_kombu.binding_permanent.")
                    channel.client.delete(*(prefix + name for prefix in bindings))


@contextlib.contextmanager
def scratch_queue(kind: str, url: str | None = None) -> Iterator[BrokerQueue]:
    """A queue named for this test on the `kind` broker (or the one at `url`); deleted after."""
    queue = BrokerQueue(url or BROKERS[kind], f"cartd-test-{uuid.uuid4().hex[:10]}")
    try:
        yield queue
    finally:
        queue.delete()
