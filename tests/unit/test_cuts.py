"""The server's error for an incomplete response is dropped only for cuts cartd made."""

from __future__ import annotations

import contextvars
import logging

from cartd.api.cuts import PurposefulCuts, mark_cut

INCOMPLETE = "ASGI callable returned without completing response."


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, None, None)


def _kept_after_a_cut(record: logging.LogRecord) -> bool:
    mark_cut()
    return PurposefulCuts().filter(record)


def test_the_line_is_dropped_in_the_context_of_a_cut_and_kept_elsewhere() -> None:
    assert contextvars.copy_context().run(_kept_after_a_cut, _record(INCOMPLETE)) is False
    assert PurposefulCuts().filter(_record(INCOMPLETE)), "a response left short by a fault"


def test_other_server_errors_are_kept_even_after_a_cut() -> None:
    kept = contextvars.copy_context().run(_kept_after_a_cut, _record("Exception in ASGI app"))
    assert kept
