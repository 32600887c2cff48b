"""The machine's real brokers, with a queue of its own for each test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from kombu import Connection

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

    def depth(self) -> int:
        """Messages waiting in the queue (none while it was never declared)."""
        with Connection(self.url) as connection:
            channel = connection.channel()
            try:
                return int(channel.queue_declare(self.name, passive=True).message_count)
            except Exception:
                return 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()

    def purge(self) -> int:
        """Drop every waiting message, as a broker that lost them would; how many."""
        with Connection(self.url) as connection:
            return int(connection.default_channel.queue_purge(self.name) or 0)

    def delete(self) -> None:
        with Connection(self.url) as connection:
            channel = connection.default_channel
            with contextlib.suppress(Exception):
                channel.queue_delete(self.name)
            with contextlib.suppress(Exception):
                channel.exchange_delete(self.name)
            if self.url.startswith("redis"):  # kombu keeps a queue's bindings in keys of their own
                bindings = ("_kombu.binding.", "_kombu.binding_permanent.")
                channel.client.delete(*(prefix + self.name for prefix in bindings))


@contextlib.contextmanager
def scratch_queue(kind: str, url: str | None = None) -> Iterator[BrokerQueue]:
    """A queue named for this test on the `kind` broker (or the one at `url`); deleted after."""
    queue = BrokerQueue(url or BROKERS[kind], f"cartd-test-{uuid.uuid4().hex[:10]}")
    try:
        yield queue
    finally:
        queue.delete()
