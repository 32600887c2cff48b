"""The error tree. Each error that can reach a client knows its HTTP status.

CartdError                      base; status 500
├── ConfigError                 a wrong setting, found at start
├── InvalidRequest              400: a bad uid, body, path, filename or hash
├── CartNotFound                404: no such cart (or deleted)
├── PayloadTooLarge             413: a request body over its configured limit
├── ArchiveError                something the archive did; never shown raw to a client
│   ├── TransientArchiveError   worth retrying: 5xx, resets, timeouts, short bodies
│   └── PermanentArchiveError   retrying cannot help: 404, bad answers
│       └── ChecksumMismatch    the bytes are not the ones ordered
└── CartGone                    the cart was deleted or evicted while a step worked on it

Messages of errors that end up on a cart are shown to clients: they never carry a
server-side path, nor a digest the client did not send.
"""

from __future__ import annotations


class CartdError(Exception):
    """Base of every error cartd raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CartdError):
    """A setting is missing or wrong; the process should not start."""


class InvalidRequest(CartdError):
    """The client asked for something malformed; nothing was changed."""

    status_code = 400


class CartNotFound(CartdError):
    """No live cart of that uid."""

    status_code = 404


class PayloadTooLarge(CartdError):
    """A request body is over its configured limit; it was not read, nothing was stored."""

    status_code = 413


class ArchiveError(CartdError):
    """The archive could not give us a file."""

    status_code = 502

    def __init__(self, message: str, *, answered: int | None = None) -> None:
        super().__init__(message)
        #: The archive's HTTP status when it answered with an error; None for a fault of
        #: the connection or of the bytes.
        self.answered = answered


class TransientArchiveError(ArchiveError):
    """A fault that may go away if we ask again later."""


class PermanentArchiveError(ArchiveError):
    """A fault that asking again will not fix."""


class ChecksumMismatch(PermanentArchiveError):
    """The bytes the archive sent are not the ones ordered."""


class CartGone(CartdError):
    """The cart stopped being worked on (deleted, evicted, failed) while a step ran; the
    step gives up quietly and keeps nothing."""
