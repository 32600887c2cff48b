"""Telling an order's callback that its cart is ready or failed.

The event is queued in the database by the transaction that ends the cart (the outbox,
`cartd.db.outbox`); this module sends what is queued. Every process that takes staging
steps runs one `CallbackDelivery` beside its pipeline (the embedded runner's process, or
each `cartd worker`), so one code path serves both modes: the process that ended a cart
wakes its own delivery at once, and each delivery also looks at the outbox every few
seconds for retries that came due and for events whose sender died.

Each try claims its event first, so exactly one process sends it; a claim lapses if its
process dies mid-send, and another sends the event again. Delivery is therefore at
least once: the event id, in the body and in `X-Cartd-Event-Id`, lets a receiver drop a
second copy.

What an answer means (`verdict`): 2xx delivered; 5xx, 408, 429, a timeout or no
connection: tried again after a growing delay, until `attempts` tries; any other
answer (a 3xx, since redirects are not followed, or a 4xx) is given up at once, since
sending the same bytes again cannot change it. Given up is logged as a warning and
counted; the event leaves the outbox either way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

from cartd.callbacks.base import Answer, Sender
from cartd.db.outbox import Outbox
from cartd.observability.logs import for_cart
from cartd.observability.metrics import Metrics
from cartd.records import CallbackEvent
from cartd.schemas import CallbackRule
from cartd.service.backoff import Backoff
from cartd.service.watch import claim_token, dead_here

log = logging.getLogger(__name__)

#: Longest pause between two looks at the outbox: how soon a process finds an event
#: queued by another (a `cartd fixit`, a sender that died) without being woken.
LOOK_INTERVAL = 5.0
#: Events one look takes at most; the next look follows at once if more are due.
BATCH = 32
#: Events sent at once by one process: a receiver that hangs holds one of them only.
SENDERS = 4


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retried"
    GIVE_UP = "abandoned"


#: Answers that may differ if the same event is sent again later.
RETRIED_STATUSES = frozenset({408, 429})


def verdict(answer: Answer) -> Verdict:
    """What one try's answer means for the event."""
    if answer.status is None:
        return Verdict.RETRY
    if 200 <= answer.status < 300:
        return Verdict.DELIVERED
    if answer.status >= 500 or answer.status in RETRIED_STATUSES:
        return Verdict.RETRY
    return Verdict.GIVE_UP


@dataclass(frozen=True)
class CallbackPolicy:
    retry: Backoff  # wait before try n + 1 after n failed
    attempts: int  # tries in all before an event is given up
    lease: float  # seconds a sender's claim on an event lasts: longer than any one try

    def next_try(self, failed: int) -> float | None:
        """Seconds until the next try after `failed` failed tries; None: give up."""
        if failed >= self.attempts:
            return None
        return self.retry.delay(failed - 1)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(event: CallbackEvent) -> bytes:
    """The JSON a callback receives, the same bytes on every try of the event."""
    document = {
        "event_id": event.event_id,
        "uid": event.uid,
        "status": event.status.value,
        "message": event.message,
        "files_total": event.files_total,
        "bytes_total": event.bytes_total,
        "ordered_at": _utc_text(event.ordered_at),
        "time": _utc_text(event.occurred_at),
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _where(url: str) -> str:
    """The URL for the log, without its query and fragment (they may hold a token)."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


class CallbackDelivery:
    """Sends the outbox's due events from one process, on a thread of its own, so a slow
    receiver never holds up a staging step."""

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        rule: CallbackRule,
        policy: CallbackPolicy,
        metrics: Metrics,
        look_interval: float = LOOK_INTERVAL,
    ) -> None:
        self.outbox = outbox
        self.sender = sender
        self.rule = rule
        self.policy = policy
        self.metrics = metrics
        self.look_interval = look_interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def wake(self) -> None:
        """Look at the outbox now: this process has just queued an event."""
        self._wake.set()

    def start(self) -> None:
        """Release the claims of senders of this host that died, then deliver on a thread."""
        if self._thread is not None:
            return
        dead = {holder for holder in self.outbox.holders() if dead_here(holder)}
        if dead:
            log.info("sending again the callback events of %d senders that died", len(dead))
            self.outbox.release(dead)
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="cartd-callback")
        self._thread = threading.Thread(target=self._run, name="cartd-callbacks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop looking; a try under way ends by its timeout, its claim lapses if cut."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_due()
                pause = self._pause()
            except Exception:
                log.exception("sending callback events failed; trying again shortly")
                pause = self.look_interval
            self._wake.wait(pause)
            self._wake.clear()

    def _pause(self) -> float:
        """Seconds until an event may be due, at most `look_interval`."""
        due = self.outbox.next_due()
        if due is None:
            return self.look_interval
        return min(self.look_interval, max(0.05, due - time.time()))

    def deliver_due(self) -> list[Verdict]:
        """Try every due event no other sender holds, `SENDERS` at a time."""
        due = self.outbox.due(BATCH)
        if not due:
            return []
        if self._pool is None:  # called directly, not from the thread
            return [verdict for ident in due if (verdict := self._try(ident)) is not None]
        tried = self._pool.map(self._try, due)
        return [verdict for verdict in tried if verdict is not None]

    def _try(self, ident: int) -> Verdict | None:
        """Claim one event, send it, record the outcome; None when another sender has it."""
        token = claim_token()
        event = self.outbox.claim(ident, token, time.time() + self.policy.lease)
        if event is None:
            return None
        said = for_cart(log, event.uid)
        if not self.rule.allows(event.url):
            said.warning(
                "callback event %s to %s given up: callbacks may no longer go there"
                " (cartd.callback_hosts)",
                event.event_id,
                _where(event.url),
            )
            self.outbox.give_up(event.id, token)
            self.metrics.callback(Verdict.GIVE_UP.value)
            return Verdict.GIVE_UP
        answer = self.sender.send(event.url, event.event_id, event_body(event))
        outcome = verdict(answer)
        tries = event.attempts + 1
        if outcome is Verdict.DELIVERED:
            self.outbox.delivered(event.id)
            said.info(
                "callback event %s (%s) delivered to %s: %s, try %d",
                event.event_id,
                event.status.value,
                _where(event.url),
                answer.describe(),
                tries,
            )
        else:
            delay = self.policy.next_try(tries) if outcome is Verdict.RETRY else None
            if delay is None:
                outcome = Verdict.GIVE_UP
                self.outbox.give_up(event.id, token)
                said.warning(
                    "callback event %s (%s) to %s given up at try %d: %s",
                    event.event_id,
                    event.status.value,
                    _where(event.url),
                    tries,
                    answer.describe(),
                )
            else:
                self.outbox.retry(event.id, token, tries, time.time() + delay, answer.describe())
                said.warning(
                    "callback event %s to %s: %s; try %d of %d in %.1fs",
                    event.event_id,
                    _where(event.url),
                    answer.describe(),
                    tries + 1,
                    self.policy.attempts,
                    delay,
                )
        self.metrics.callback(outcome.value)
        return outcome
