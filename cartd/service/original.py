"""Bring the carts of the original Pacifica Cartd over, in place: what `cartd dbsync` does
after the schema, and `cartd serve` on SQLite at start.

For each cart of the original's tables not brought over yet:

- deleted there: nothing (recorded, so it is never looked at again);
- ready, its copy on the volume whole: ready here, same tar paths and bytes. Its files
  (or its bundle) are hard-linked into cartd's layout from where the original left them,
  so both programs see the same bytes and the original's files stay where they are;
- in error: in error here, with the original's message;
- still being made (or ready but its copy gone): made by cartd's pipeline from the
  start. Files the original had staged are linked in place; the pipeline checks their
  bytes against the order's checksum instead of pulling them again.

An order cartd would refuse (a path with `..`, an unknown hash type) or whose files the
original never recorded (its worker had not taken the order) becomes a cart in error
that says why. A uid cartd cannot serve is skipped.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cartd.db.original import NewCart, NewFile, OriginalTables, Outcome, TheirCart
from cartd.errors import InvalidRequest
from cartd.observability.logs import for_cart
from cartd.schemas import FileOrder, parse_cart_order, validate_uid
from cartd.status import CartStatus, FileStatus
from cartd.storage import Volume

log = logging.getLogger(__name__)

#: The message of a cart whose files the original never recorded.
NEVER_TAKEN = (
    "brought over from Pacifica Cartd before its worker recorded the order's files,"
    " which only its task queue held: order the cart again"
)


@dataclass(frozen=True)
class Imported:
    """What became of one of the original's carts."""

    original_id: int
    uid: str
    outcome: Outcome
    cart_id: int | None
    note: str = ""


@dataclass(frozen=True)
class _Plan:
    outcome: Outcome
    cart: NewCart | None
    sources: list[Path | None]  # per file, the original's copy to link in, if any
    bundle: Path | None = None  # the original's tar of a bundled ready cart
    note: str = ""


class OriginalImport:
    """Brings the original's carts over. `volume.root` is taken to be the original's
    `volume_path` too (the same setting): a cart not ready yet has its files there, under
    `<id>/<uid>/`; a ready one is found first where the original recorded it."""

    def __init__(self, tables: OriginalTables, volume: Volume) -> None:
        self.tables = tables
        self.volume = volume

    def pending(self) -> int:
        """How many of the original's carts are not brought over yet."""
        return self.tables.pending()

    def run(self) -> list[Imported]:
        """Bring over every cart not brought over yet; a second run finds none."""
        if not self.tables.present():
            return []
        self.volume.prepare()
        done = []
        for their in self.tables.not_imported():
            plan = self._plan(their)
            try:
                cart_id = self._write(their, plan)
            except OSError as exc:
                # A copy it could not link (gone meanwhile, unreadable): made from the start.
                reason = exc.strerror or type(exc).__name__
                plan = _unlinked(plan, f"its files could not be linked ({reason})")
                cart_id = self._write(their, plan)
            item = Imported(their.id, their.uid, plan.outcome, cart_id, plan.note)
            for_cart(log, their.uid).info(
                "brought over from Pacifica Cartd (its cart %d): %s%s",
                their.id,
                plan.outcome.value,
                f" ({plan.note})" if plan.note else "",
            )
            done.append(item)
        return done

    def _write(self, their: TheirCart, plan: _Plan) -> int | None:
        def place(cart_id: int, file_ids: Sequence[int]) -> None:
            self.volume.remove_cart(cart_id)  # what an import that did not commit left
            if plan.bundle is not None:
                self.volume.adopt(plan.bundle, self.volume.bundle_path(cart_id))
            for file_id, source in zip(file_ids, plan.sources, strict=True):
                if source is not None:
                    self.volume.adopt(source, self.volume.file_path(cart_id, file_id))

        return self.tables.bring_over(their.id, plan.outcome, plan.cart, place)

    # -- deciding what a cart becomes -------------------------------------------------------

    def _plan(self, their: TheirCart) -> _Plan:
        if their.deleted:
            return _Plan(Outcome.DELETED, None, [])
        try:
            validate_uid(their.uid)
        except InvalidRequest as exc:
            return _Plan(Outcome.SKIPPED, None, [], note=exc.message)
        if not their.files:
            return _failed(their, NEVER_TAKEN)
        body = {
            "fileids": [
                {"id": f.archive_id, "path": f.path, "hashtype": f.hashtype, "hashsum": f.hashsum}
                for f in their.files
            ]
        }
        try:
            order = parse_cart_order(json.dumps(body).encode())
        except InvalidRequest as exc:
            return _failed(their, f"brought over from Pacifica Cartd: {exc.message}")
        if their.status == "ready":
            ready = self._bundled if their.bundle else self._streamed
            plan = ready(their, order.files)
            if plan is not None:
                return plan
            return replace(self._open(their, order.files), note="its copy on the volume is gone")
        if their.status == "error":
            plan = self._open(their, order.files, keep_errors=True)
            assert plan.cart is not None
            error = their.error or "failed in Pacifica Cartd"
            cart = replace(plan.cart, status=CartStatus.ERROR, error=error)
            return replace(plan, outcome=Outcome.ERROR, cart=cart)
        return self._open(their, order.files)

    def _folder(self, their: TheirCart) -> Path:
        """Where the original keeps a cart's files before (and, unbundled, after) ready."""
        recorded = Path(their.bundle_path) if their.bundle_path else None
        if recorded is not None and not their.bundle and recorded.is_dir():
            return recorded
        return self.volume.root / str(their.id) / their.uid

    def _streamed(self, their: TheirCart, orders: Sequence[FileOrder]) -> _Plan | None:
        """A ready cart served from its files: ready here if every one is on the volume."""
        folder = self._folder(their)
        sources, made = [], []
        for file, order in zip(their.files, orders, strict=True):
            source = folder / file.path.lstrip("/")
            try:
                stat = source.stat()
            except OSError:
                return None
            if not source.is_file():
                return None
            sources.append(source)
            made.append(_file(order, FileStatus.STAGED, size=stat.st_size, mtime=stat.st_mtime))
        cart = _cart(their, CartStatus.READY, made)
        size = sum(file.size or 0 for file in made)
        cart = replace(cart, ready_at=their.updated, reserved_bytes=size)
        return _Plan(Outcome.READY, cart, list(sources))

    def _bundled(self, their: TheirCart, orders: Sequence[FileOrder]) -> _Plan | None:
        """A ready cart served from its tar: ready here if the tar holds every file (its
        members give the files' sizes and times; the files themselves are gone)."""
        recorded = Path(their.bundle_path) if their.bundle_path else None
        tar = recorded if recorded is not None and recorded.is_file() else None
        tar = tar or self.volume.root / str(their.id) / f"{their.uid}.tar"
        try:
            stat = tar.stat()
            with tarfile.open(tar, "r:") as bundle:
                members = {member.name: member for member in bundle if member.isfile()}
        except (OSError, tarfile.TarError):
            return None
        made = []
        for order in orders:
            member = members.get(f"{their.uid}/{order.path}")
            if member is None:
                return None
            made.append(
                _file(order, FileStatus.STAGED, size=member.size, mtime=float(member.mtime))
            )
        # Its download's identity; never before the tar was written, or it would not pass
        # for the tar made then.
        ready_at = max(their.updated, datetime.fromtimestamp(stat.st_mtime, UTC))
        cart = replace(
            _cart(their, CartStatus.READY, made),
            ready_at=ready_at,
            bundle_size=stat.st_size,
            reserved_bytes=stat.st_size + sum(file.size or 0 for file in made),
        )
        return _Plan(Outcome.READY, cart, [None] * len(made), bundle=tar)

    def _open(
        self, their: TheirCart, orders: Sequence[FileOrder], *, keep_errors: bool = False
    ) -> _Plan:
        """A cart for the pipeline to make: each file waits (or, with `keep_errors`, keeps
        the original's error); those the original staged are linked into place, where the
        pipeline checks their bytes instead of pulling them again."""
        folder = self.volume.root / str(their.id) / their.uid
        sources: list[Path | None] = []
        made = []
        for file, order in zip(their.files, orders, strict=True):
            source = folder / file.path.lstrip("/")
            staged = file.status == "staged" and source.is_file()
            sources.append(source if staged else None)
            if keep_errors and file.status == "error":
                made.append(_file(order, FileStatus.ERROR, error=file.error or None))
            else:
                made.append(_file(order, FileStatus.WAITING))
        return _Plan(Outcome.RESUMED, _cart(their, CartStatus.WAITING, made), sources)


def _file(
    order: FileOrder,
    status: FileStatus,
    *,
    size: int | None = None,
    mtime: float | None = None,
    error: str | None = None,
) -> NewFile:
    return NewFile(
        order.archive_id, order.path, order.hashtype, order.hashsum, status, size, mtime, error
    )


def _cart(their: TheirCart, status: CartStatus, made: list[NewFile]) -> NewCart:
    return NewCart(
        uid=their.uid,
        status=status,
        bundle=their.bundle,
        error=None,
        created_at=their.created,
        updated_at=their.updated,
        files=made,
    )


def _failed(their: TheirCart, message: str) -> _Plan:
    """A cart in error with no files: what cartd says instead of a cart it cannot make."""
    cart = replace(_cart(their, CartStatus.ERROR, []), error=message)
    return _Plan(Outcome.ERROR, cart, [], note=message)


def _unlinked(plan: _Plan, why: str) -> _Plan:
    """The plan without links, once linking failed: every file waits, to be pulled again
    (a cart in error stays in error, for `fixit` to re-drive)."""
    if plan.cart is None:
        return plan
    waiting = [
        replace(file, status=FileStatus.WAITING, size=None, mtime=None)
        if file.status is FileStatus.STAGED
        else file
        for file in plan.cart.files
    ]
    status = CartStatus.ERROR if plan.outcome is Outcome.ERROR else CartStatus.WAITING
    cart = replace(
        plan.cart,
        status=status,
        files=waiting,
        ready_at=None,
        bundle_size=None,
        reserved_bytes=None,
    )
    outcome = Outcome.ERROR if status is CartStatus.ERROR else Outcome.RESUMED
    return _Plan(outcome, cart, [None] * len(waiting), note=why)
