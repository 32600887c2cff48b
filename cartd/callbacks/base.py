"""What the domain needs of a callback sender, and the signature every event carries."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

#: The headers of every event, besides `Content-Type: application/json`.
SIGNATURE_HEADER = "X-Cartd-Signature"
EVENT_ID_HEADER = "X-Cartd-Event-Id"


def signature(secret: bytes, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of the exact bytes sent, keyed with the shared
    secret: what `X-Cartd-Signature` says, and what a receiver computes to compare."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Answer:
    """How one try went: the receiver's HTTP status, or None and why none came."""

    status: int | None
    error: str = ""

    def describe(self) -> str:
        return f"answered {self.status}" if self.status is not None else self.error


class Sender(Protocol):
    def send(self, url: str, event_id: str, body: bytes) -> Answer:
        """POST `body` to `url`, signed; never raises for what the network or the
        receiver does, and never waits longer than its timeouts."""

    def close(self) -> None:
        """Release connections."""
