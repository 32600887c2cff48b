"""Declared waiting policies: how long to wait before the n-th retry or poll."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial: float
    factor: float
    cap: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try `attempt` + 1 (the first wait is attempt 0)."""
        return min(self.cap, self.initial * self.factor ** min(attempt, 64))
