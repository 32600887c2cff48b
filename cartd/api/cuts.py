"""Downloads cut on purpose, and the server's error line that would follow each.

A download that cannot go on (a file found changed, a cart that failed or went while it
was sent) ends short of its `Content-Length`: the client sees a short body and may resume
with `Range`. cartd logs why, as a warning. The ASGI server, which sees a response left
incomplete, would add an ERROR of its own ("ASGI callable returned without completing
response."); that line is dropped for the responses cartd cut, and only for them: the
cut is marked in the request's context, which the server's line is logged from.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

#: The server's line for a response left short (uvicorn's wording, either HTTP parser).
_INCOMPLETE = "ASGI callable returned without completing response"

_cut_on_purpose: ContextVar[bool] = ContextVar("cartd_cut_on_purpose", default=False)


def mark_cut() -> None:
    """Say that the response being sent in this context was cut by cartd, which logged why."""
    _cut_on_purpose.set(True)


class PurposefulCuts(logging.Filter):
    """Drops the server's error about an incomplete response that cartd cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_cut_on_purpose.get() and record.getMessage().startswith(_INCOMPLETE))


_FILTER = PurposefulCuts()


def quiet_purposeful_cuts(server_logger: str = "uvicorn.error") -> None:
    """Install the filter on the server's error logger, once however many apps are made."""
    logger = logging.getLogger(server_logger)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
