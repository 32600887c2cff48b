"""What every runner does around one pipeline step: take it, then schedule what it says.

The embedded runner and the Celery tasks differ only in how work is queued; what a
step's result means (which files start now, what runs again after which delay, what
happens when the step itself raised) is decided here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cartd.service.pipeline import Pipeline
from cartd.workers.base import Runner

log = logging.getLogger(__name__)

#: Seconds before a step that raised (rather than returning a delay) runs again.
RETRY_BROKEN = 5.0

Kind = Literal["file", "size", "finish"]


@dataclass(frozen=True)
class Outcome:
    """What a step asks of its runner."""

    delays: list[float | None]  # per ident given: seconds until it runs again, or None
    start: list[int]  # files to step now


def take_step(pipeline: Pipeline, kind: Kind, idents: Sequence[int]) -> Outcome:
    """Run one step. A step that raised is not dropped, or its cart would wait forever:
    it is asked to run again after `RETRY_BROKEN` seconds, and logged each time."""
    pipeline.metrics.steps_taken(kind, len(idents))
    try:
        if kind == "file":
            advanced = pipeline.advance(idents)
            return Outcome(advanced.delays, advanced.start)
        if kind == "size":
            sized = pipeline.size_cart(idents[0])
            return Outcome(sized.delays, sized.start)
        pipeline.finish(idents[0])
        return Outcome([None], [])
    except Exception:
        # Most likely the database is unreachable.
        log.exception("step %s %s failed; trying again in %.0fs", kind, idents, RETRY_BROKEN)
        pipeline.metrics.step_failed(kind, len(idents))
        return Outcome([RETRY_BROKEN] * len(idents), [])


def follow_up(runner: Runner, kind: Kind, idents: Sequence[int], outcome: Outcome) -> None:
    """Start the files the step started, and submit again what it asked to run later.

    Files due again after the same delay (a group polled together) go together, so a
    distributed runner sends them as one message.
    """
    if outcome.start:
        runner.submit_files(outcome.start)
    later: dict[float, list[int]] = {}
    for ident, delay in zip(idents, outcome.delays, strict=True):
        if delay is not None:
            later.setdefault(delay, []).append(ident)
    for delay, group in later.items():
        if kind == "file":
            runner.submit_files(group, delay)
        else:
            for cart_id in group:
                submit = runner.submit_size if kind == "size" else runner.submit_finish
                submit(cart_id, delay)
