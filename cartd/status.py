"""Cart and file statuses, and the only place that says which transitions are allowed."""

from __future__ import annotations

from enum import StrEnum


class CartStatus(StrEnum):
    """Life of a cart. Stored as these strings."""

    WAITING = "waiting"  # accepted, no file step has run yet
    STAGING = "staging"  # files are being staged and pulled
    BUNDLING = "bundling"  # every file verified; one worker is finishing the cart
    READY = "ready"  # downloadable
    ERROR = "error"  # ended; `error` says why
    DELETED = "deleted"  # gone for clients; kept as a tombstone so late steps stop

    @property
    def pacifica_status(self) -> str:
        """What `X-Pacifica-Status` says: the original only knows staging, ready, error."""
        if self in (CartStatus.READY, CartStatus.ERROR):
            return self.value
        return "staging"

    @property
    def is_active(self) -> bool:
        """Work may still happen on the cart."""
        return self in (CartStatus.WAITING, CartStatus.STAGING, CartStatus.BUNDLING)


class FileStatus(StrEnum):
    """Life of one file of a cart."""

    WAITING = "waiting"  # not asked of the archive yet
    STAGING = "staging"  # the archive was asked to stage it; polling until it is on disk
    STAGED = "staged"  # pulled, verified and in place on the volume
    ERROR = "error"  # gave up; `error` says why

    @property
    def is_open(self) -> bool:
        """A step still has to stage the file: neither verified nor given up."""
        return self in (FileStatus.WAITING, FileStatus.STAGING)


CART_TRANSITIONS: dict[CartStatus, frozenset[CartStatus]] = {
    CartStatus.WAITING: frozenset(
        {CartStatus.STAGING, CartStatus.BUNDLING, CartStatus.ERROR, CartStatus.DELETED}
    ),
    CartStatus.STAGING: frozenset({CartStatus.BUNDLING, CartStatus.ERROR, CartStatus.DELETED}),
    CartStatus.BUNDLING: frozenset({CartStatus.READY, CartStatus.ERROR, CartStatus.DELETED}),
    # A ready cart whose volume copy went bad is made again (`CartService` finds it).
    CartStatus.READY: frozenset({CartStatus.STAGING, CartStatus.DELETED}),
    CartStatus.ERROR: frozenset({CartStatus.STAGING, CartStatus.DELETED}),
    CartStatus.DELETED: frozenset(),
}

FILE_TRANSITIONS: dict[FileStatus, frozenset[FileStatus]] = {
    FileStatus.WAITING: frozenset({FileStatus.STAGING, FileStatus.STAGED, FileStatus.ERROR}),
    FileStatus.STAGING: frozenset({FileStatus.STAGED, FileStatus.ERROR, FileStatus.WAITING}),
    # A staged file found changed on the volume is pulled again.
    FileStatus.STAGED: frozenset({FileStatus.WAITING}),
    FileStatus.ERROR: frozenset({FileStatus.WAITING}),
}


def cart_sources(target: CartStatus) -> frozenset[CartStatus]:
    """Statuses a cart may be in to move to `target`: the guard of a conditional UPDATE."""
    return frozenset(s for s, targets in CART_TRANSITIONS.items() if target in targets)


def file_sources(target: FileStatus) -> frozenset[FileStatus]:
    """Statuses a file may be in to move to `target`."""
    return frozenset(s for s, targets in FILE_TRANSITIONS.items() if target in targets)
