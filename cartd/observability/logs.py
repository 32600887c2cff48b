"""Structured logs in which every line about a cart carries its uid.

Context travels as ordinary `extra=` attributes on the LogRecord, so plain `logging` calls,
`for_cart` adapters and third-party loggers all go through the same two formatters.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

#: Context fields rendered first and in this order, whether set by an adapter or by `extra=`.
CONTEXT_KEYS = ("cart", "file")

#: Loggers that are chatty at INFO and say nothing an operator of cartd needs.
NOISY_LOGGERS = ("alembic", "httpx", "httpcore")

# Record attribute naming the further context fields a `for_cart` adapter added, so that the
# formatters can render those but not the unrelated extras other libraries attach (uvicorn's
# `color_message`, for one).
_FIELDS_ATTR = "cartd_fields"

# `Logger.makeRecord` refuses extras that would overwrite these, so `for_cart` refuses them early.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    _FIELDS_ATTR,
}


def _timestamp(record: logging.LogRecord) -> str:
    """UTC time with milliseconds, e.g. 2026-11-22T03:00:00.123Z.

    Rounded from whole milliseconds: truncating the float's fraction (as `record.msecs` does
    before Python 3.13) turns .123 into .122.
    """
    whole, millis = divmod(round(record.created * 1000), 1000)
    stamp = datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def _context(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The record's context fields that are set: cart and file first, then adapter fields."""
    extra: tuple[str, ...] = getattr(record, _FIELDS_ATTR, ())
    keys = CONTEXT_KEYS + tuple(k for k in extra if k not in CONTEXT_KEYS)
    for key in keys:
        value = getattr(record, key, None)
        if value is not None:
            yield key, value


def _quote(value: object) -> str:
    """Leave simple values bare and quote the rest, so `key=value` pairs stay parseable."""
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return json.dumps(text)


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> cart=<uid> file=<id> <message>`, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name]
        parts.extend(f"{key}={_quote(value)}" for key, value in _context(record))
        parts.append(record.getMessage())
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers that index fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """Marks the handler `configure_logging` installed, so a second call replaces it."""


_FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def configure_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Install the cartd handler on the root logger (stderr unless `stream` is given).

    Only a handler installed here is replaced: other root handlers (pytest's capture, say)
    are left alone. Raises ValueError for an unknown level or format.
    """
    if fmt not in _FORMATTERS:
        raise ValueError(f"unknown log format {fmt!r}: expected one of {sorted(_FORMATTERS)}")
    levelno = logging.getLevelName(level.upper())
    if not isinstance(levelno, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(_FORMATTERS[fmt]())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, levelno))


#: The logger uvicorn writes one record per request to; its args are (client address,
#: method, path with query, HTTP version, status code).
ACCESS_LOGGER = "uvicorn.access"


class AccessFormatter(logging.Formatter):
    """A request as a line of the Common Log Format, as CherryPy's access log began:
    `127.0.0.1 - - [22/Nov/2026:03:00:00 +0000] "GET /cart1 HTTP/1.1" 200 -` (the size is
    not known to the logger: `-`)."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 5):
            return f"{_timestamp(record)} {record.getMessage()}"
        client, method, path, version, status = args
        host = str(client).rsplit(":", 1)[0] if client else "-"
        moment = datetime.fromtimestamp(record.created, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S %z")
        return f'{host} - - [{moment}] "{method} {path} HTTP/{version}" {status} -'


class _FileHandler(logging.FileHandler):
    """Marks the handlers `log_to_files` installed, so a second call replaces them."""


def log_to_files(access: Path | None, error: Path | None, fmt: str = "text") -> None:
    """Send the requests' lines to `access` instead of the log, and a copy of every
    warning and error to `error`; each file is appended to. Raises OSError when a file
    cannot be opened."""
    if fmt not in _FORMATTERS:
        raise ValueError(f"unknown log format {fmt!r}: expected one of {sorted(_FORMATTERS)}")
    opened: list[tuple[logging.Logger, _FileHandler]] = []
    try:
        if access is not None:
            handler = _FileHandler(access.expanduser(), encoding="utf-8")
            handler.setFormatter(AccessFormatter())
            opened.append((logging.getLogger(ACCESS_LOGGER), handler))
        if error is not None:
            handler = _FileHandler(error.expanduser(), encoding="utf-8")
            handler.setFormatter(_FORMATTERS[fmt]())
            handler.setLevel(logging.WARNING)
            opened.append((logging.getLogger(), handler))
    except OSError:
        for _, handler in opened:
            handler.close()
        raise
    for logger in (logging.getLogger(ACCESS_LOGGER), logging.getLogger()):
        for old in [h for h in logger.handlers if isinstance(h, _FileHandler)]:
            logger.removeHandler(old)
            old.close()
    for logger, handler in opened:
        logger.addHandler(handler)
    # Requests go to their file alone, as with CherryPy's log.access_file.
    logging.getLogger(ACCESS_LOGGER).propagate = access is None


class CartAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds the cart's context to each record, merged under the caller's own `extra=`."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra: dict[str, Any] = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        extra[_FIELDS_ATTR] = tuple(k for k in extra if k != _FIELDS_ATTR)
        kwargs["extra"] = extra
        return msg, kwargs


def for_cart(
    logger: logging.Logger, uid: str, **fields: str
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger for one cart: its records carry `cart=uid` and `fields` as context."""
    clashes = sorted(_RESERVED.intersection(fields))
    if clashes:
        raise ValueError(f"log field names clash with LogRecord attributes: {clashes}")
    return CartAdapter(logger, {"cart": uid, **fields})
