"""The runner of an API process in distributed mode: it runs no step, it sends them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from celery import Celery

from cartd.workers.distributed.app import FILES, FINISH, SEND_RETRY, SIZE

log = logging.getLogger(__name__)

#: Most file ids in one message. The pipeline records the files of one step in one
#: transaction, so a batch saves database round-trips as well as messages.
MAX_BATCH = 16


def batches(file_ids: Sequence[int], spread: int, most: int = MAX_BATCH) -> Iterator[list[int]]:
    """Split file ids into messages: at least `spread` of them when there are enough
    files (so several workers share a small cart), of at most `most` ids each."""
    if not file_ids:
        return
    size = max(1, min(most, -(-len(file_ids) // max(1, spread))))
    for index in range(0, len(file_ids), size):
        yield list(file_ids[index : index + size])


class CeleryRunner:
    """Sends each step to the broker; a countdown carries any delay.

    A send that fails even after `SEND_RETRY` is logged and dropped: the step is
    already in the database, and a worker's sweep sends it again after `sweep_grace`.
    """

    def __init__(self, app: Celery, spread: int) -> None:
        self.app = app
        self.spread = spread

    def submit_file(self, file_id: int, delay: float = 0.0) -> None:
        self._send(FILES, [[file_id]], delay)

    def submit_files(self, file_ids: Iterable[int], delay: float = 0.0) -> None:
        for batch in batches(list(file_ids), self.spread):
            self._send(FILES, [batch], delay)

    def submit_size(self, cart_id: int, delay: float = 0.0) -> None:
        self._send(SIZE, [cart_id], delay)

    def submit_finish(self, cart_id: int, delay: float = 0.0) -> None:
        self._send(FINISH, [cart_id], delay)

    def start(self) -> None:
        """Nothing to start: an API process runs no step (and so no pipeline watch)."""

    def stop(self) -> None:
        self.app.close()

    def _send(self, name: str, args: list[Any], delay: float) -> None:
        try:
            self.app.send_task(
                name,
                args=args,
                countdown=delay if delay > 0 else None,
                retry=True,
                retry_policy=SEND_RETRY,
                add_to_parent=False,
                ignore_result=True,
            )
        except Exception as exc:
            log.warning(
                "could not send %s%s to the broker (%s); a worker's sweep sends it later",
                name,
                args,
                exc,
            )
