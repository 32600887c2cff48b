"""The error tree. Each error that can reach a client knows its HTTP status.

CartdError                      base; status 500
├── ConfigError                 a wrong setting, found at start
├── CartNotReady                202: the cart is still being made
├── CartFailed                  500: the cart ended in error; the message is the cart's
├── InvalidRequest              400: a bad uid, body, path, filename or hash
│   └── UnsafeName              a name some extractor would not keep inside the tar's folder
├── CartNotFound                404: no such cart (or deleted)
├── RangeNotSatisfiable         416: the one range asked for starts past the end
├── PayloadTooLarge             413: a request body over its configured limit
├── ArchiveError                something the archive did; never shown raw to a client
│   ├── TransientArchiveError   worth retrying: 5xx, resets, timeouts, short bodies
│   └── PermanentArchiveError   retrying cannot help: 404, bad answers
│       └── ChecksumMismatch    the bytes are not the ones ordered
├── CartGone                    the cart was deleted or evicted while a step worked on it
├── SourceChanged               the volume's copy of a file is no longer the one verified
├── DownloadCut                 a download of a cart being made cannot go on (failed, deleted)
└── WriteReentered              a thread asked to write while already writing: a bug

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


class UnsafeName(InvalidRequest):
    """A name that would not stay inside the tar's top folder for some extractor."""


class CartNotReady(CartdError):
    """The cart is still being made."""

    status_code = 202


class CartFailed(CartdError):
    """The cart ended in error; the message is the cart's."""


class RangeNotSatisfiable(CartdError):
    """The one range asked for lies wholly past the end of the representation."""

    status_code = 416


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


class SourceChanged(CartdError):
    """A staged file (or a bundle) is gone or no longer the one verified: a download
    reading it must stop rather than send a byte it cannot vouch for."""


class DownloadCut(CartdError):
    """A download that began while its cart was being made cannot go on: the cart failed
    or was deleted, or a file was verified other than announced in the headers. The
    stream stops rather than send a byte that is not the final one."""


class WriteReentered(CartdError):
    """A thread asked to write while it already has a write transaction open.

    On SQLite that would wait forever on this process's own write lock (and on a server,
    possibly on its own row locks), so it is refused at once: it is always a bug, most
    likely a finaliser that ran in the middle of a write.
    """
