"""The per-file staging step and the step that makes a cart ready.

A file's step asks the archive where the file is (`HEAD`); one already on disk
is pulled at once, one on tape is asked to be staged (`POST`) and then asked
about again with a growing delay until it is on disk. Skipping the stage
request for a file on disk saves a third of the archive's work for the common
case, against an archive that serves one request at a time. Before any of that, a
file that another cart (or another file of its cart) names with the same checksum is
linked from that cart's verified copy, or waits for the one file that recalls it
(`cartd.service.sharing`): one stage and one pull serve every cart.

One call of `advance` takes a few files one step further each and says when
each wants to be called again, so a runner never sleeps in a worker: a file on
tape gives its worker back and is re-scheduled with a growing delay.
Everything a step learns is written to the database before it returns, so a
process killed at any moment resumes where the last step left off. A pulled
file is moved into place before its row says so; a step finding it there
checks its bytes again rather than pulling it twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from cartd.archive.base import Abort, Archive, ArchiveFile
from cartd.bundle import iter_tar, tar_size
from cartd.db.copies import NONE, Copies, CopyStore
from cartd.db.space import SpaceLedger
from cartd.db.store import CartStore
from cartd.durable import DurableFile
from cartd.errors import (
    ArchiveError,
    BatchBroken,
    CartGone,
    ChecksumMismatch,
    PermanentArchiveError,
    TransientArchiveError,
)
from cartd.observability.logs import for_cart
from cartd.observability.metrics import Metrics
from cartd.records import Cart, CartFile
from cartd.service.backoff import Backoff
from cartd.service.cleanup import discard
from cartd.service.layout import cart_members
from cartd.service.sharing import WAIT_MAX, Sharing
from cartd.service.watch import CLAIM_SECONDS, CartWatch, HeldFiles
from cartd.space_plan import NO_SPACE
from cartd.status import CartStatus, FileStatus
from cartd.storage import Volume

log = logging.getLogger(__name__)

_OPEN = (FileStatus.WAITING, FileStatus.STAGING)
GROUP_BYTES = 64 * 1024 * 1024
GROUP_SECONDS = 0.5
#: Seconds before its due time a file step may run.
EARLY = 0.5


@dataclass(frozen=True)
class PipelinePolicy:
    retry: Backoff
    retry_attempts: int
    poll: Backoff
    chunk_size: int
    volume_limit: int | None = None
    lru_purge: bool = True
    lru_buffer_time: float = 0.0
    claim_seconds: float = CLAIM_SECONDS


@dataclass(frozen=True)
class Advanced:
    """What a runner does after `advance`."""

    delays: list[float | None]  # per file given: seconds until its next step, or None
    start: list[int]  # other files to step now (parked until their cart's space was had)


@dataclass(frozen=True)
class _InPlace:
    cart: Cart
    file: CartFile
    size: int
    mtime: float
    folder: Path
    shared: bool = False  # a copy another cart holds, linked: nothing was pulled


class _Verified:
    """Files verified and moved into place whose rows do not say so yet.

    A group is recorded before it would hold `GROUP_BYTES` or once it has waited
    `GROUP_SECONDS`, so the progress a client sees lags the pulls by about that.
    """

    def __init__(self) -> None:
        self._items: list[_InPlace] = []
        self._bytes = 0
        self._since = 0.0

    def add(
        self,
        cart: Cart,
        file: CartFile,
        size: int,
        mtime: float,
        folder: Path,
        *,
        shared: bool = False,
    ) -> None:
        if not self._items:
            self._since = time.monotonic()
        self._items.append(_InPlace(cart, file, size, mtime, folder, shared))
        self._bytes += size

    def due(self, upcoming: int) -> bool:
        """Whether to record the group before pulling `upcoming` more bytes."""
        return bool(self._items) and (
            self._bytes + upcoming >= GROUP_BYTES or time.monotonic() - self._since >= GROUP_SECONDS
        )

    def take(self) -> list[_InPlace]:
        items, self._items, self._bytes = self._items, [], 0
        return items


@dataclass
class _Batch:
    """What the steps of one `advance` call share."""

    verified: _Verified = field(default_factory=_Verified)
    start: list[int] = field(default_factory=list)  # other files that may start now
    #: What the archive said of each file sized together at the start of the batch, or
    #: the fault it answered with (raised again by the file's own step).
    known: dict[int, ArchiveFile | ArchiveError] = field(default_factory=dict)
    #: Carts whose reservation this batch already tried: True once held.
    reserved: dict[int, bool] = field(default_factory=dict)
    claimed: HeldFiles | None = None
    #: The batch's work on each cart, watched from its first archive request to the end of
    #: the batch: once the cart is deleted, every later request of the batch for it stops.
    watching: ExitStack = field(default_factory=ExitStack)
    watch: CartWatch | None = None
    aborts: dict[int, Abort] = field(default_factory=dict)
    #: The other rows naming each file's archive file (`cartd.service.sharing`), looked up
    #: for the whole batch at its first step, and again after a group is recorded.
    copies: dict[int, Copies] | None = None
    #: Files of this batch that waited for a copy recorded verified since: step them again.
    woken: set[int] = field(default_factory=set)

    def abort(self, cart_id: int) -> Abort:
        if cart_id not in self.aborts:
            assert self.watch is not None
            self.aborts[cart_id] = self.watching.enter_context(self.watch.working_on(cart_id))
        return self.aborts[cart_id]


def _reason(exc: OSError) -> str:
    """What went wrong on the volume, without the volume's paths (clients see it)."""
    return exc.strerror or type(exc).__name__


def _log(cart: Cart, file: CartFile | None = None) -> logging.LoggerAdapter[logging.Logger]:
    if file is None:
        return for_cart(log, cart.uid)
    return for_cart(log, cart.uid, file=file.archive_id)


@dataclass(frozen=True)
class _Shared:
    """What a file's step does instead of recalling the file: linked a copy or parked
    (`delay` None), or waits `delay` seconds for another file's copy."""

    delay: float | None = None


class Pipeline:
    def __init__(
        self,
        store: CartStore,
        space: SpaceLedger,
        volume: Volume,
        archive: Archive,
        policy: PipelinePolicy,
        metrics: Metrics,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.space = space
        self.volume = volume
        self.archive = archive
        self.policy = policy
        self.watch = CartWatch(store, claim_seconds=policy.claim_seconds)
        self.sharing = Sharing(CopyStore(store.engine), volume)

    def start(self) -> None:
        """Start watching for carts deleted while their steps run."""
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    # -- the file step -------------------------------------------------------------------

    def advance(self, file_ids: Sequence[int]) -> Advanced:
        """Take each file one step further; say when each wants its next step, and which
        other files may start now.

        Files pulled here are recorded verified in groups (one folder sync and one
        commit for many files): for small files those cost more than the pull itself.
        """
        batch = _Batch(watch=self.watch)
        try:
            return self._advance_batch(file_ids, batch)
        except Exception as exc:
            if not batch.start:
                raise
            raise BatchBroken(f"{type(exc).__name__}: {exc}", batch.start) from exc

    def _advance_batch(self, file_ids: Sequence[int], batch: _Batch) -> Advanced:
        delays: list[float | None] = []
        with self.watch.claiming_files(file_ids) as claimed, batch.watching:
            batch.claimed = claimed
            loaded = self.store.load_steps(file_ids)
            steps = self._size_together(
                [loaded[file_id] for file_id in file_ids if file_id in claimed], batch
            )
            for file_id in file_ids:
                if file_id not in loaded:
                    delays.append(None)
                    continue
                if file_id not in claimed:
                    # Verified, failed, or another step has it and schedules what follows.
                    file, cart = loaded[file_id]
                    if file.status is FileStatus.STAGED:
                        self._finish_if_complete(cart.id)
                    delays.append(None)
                    continue
                file, cart = steps[file_id]
                if batch.verified.due(upcoming=file.size or 0):
                    self._record(batch)
                delays.append(self._advance(file, cart, batch))
            self._record(batch)
        if batch.woken:  # waited for a copy that is verified now: link it at once
            delays = [
                0.0 if delay is not None and file_id in batch.woken else delay
                for file_id, delay in zip(file_ids, delays, strict=True)
            ]
        return Advanced(delays, batch.start)

    def _size_together(
        self, steps: list[tuple[CartFile, Cart]], batch: _Batch
    ) -> dict[int, tuple[CartFile, Cart]]:
        """Ask the archive about the files of the batch whose carts wait for their sizes,
        all at once, and write what it said in one transaction: a cart's sizing is shared
        by every worker, a batch at a time. Returns the steps with what was learnt."""
        found: list[tuple[int, int, float, bool]] = []
        updated = {}
        for file, cart in steps:
            updated[file.id] = (file, cart)
            if not (
                cart.status.is_active
                and cart.reserved_bytes is None
                and file.status in _OPEN
                and file.size is None
                and file.hashsum
                and (file.next_attempt_at or 0.0) - time.time() <= EARLY
            ):
                continue
            try:
                info = self.archive.status(file.archive_id, batch.abort(cart.id))
            except ArchiveError as exc:
                batch.known[file.id] = exc  # the file's own step deals with it
                continue
            except CartGone:
                continue  # the file's own step finds the cart gone
            batch.known[file.id] = info
            found.append((file.id, info.size, info.mtime, info.on_disk))
            file = replace(file, size=info.size, mtime=info.mtime, on_disk=info.on_disk)
            updated[file.id] = (file, cart)
        self.store.record_sizes(found)
        return updated

    def _advance(self, file: CartFile, cart: Cart, batch: _Batch) -> float | None:
        if not cart.status.is_active:
            return None
        if file.status is FileStatus.STAGED:
            self._finish_if_complete(cart.id)
            return None
        if file.status is FileStatus.ERROR:
            return None
        wait = (file.next_attempt_at or 0.0) - time.time()
        if wait > EARLY:
            return wait  # delivered early (a duplicate): run when due, not before
        if cart.status is CartStatus.WAITING:
            self.store.move_cart(cart.id, CartStatus.STAGING, only_from=[CartStatus.WAITING])
        try:
            return self._step(cart, file, batch, batch.abort(cart.id))
        except CartGone:
            self._left_behind(cart.id)
        except TransientArchiveError as exc:
            self.metrics.archive_error("transient")
            return self._retry_later(cart, file, exc.message)
        except ChecksumMismatch as exc:
            self.metrics.archive_error("checksum")
            self._fail(cart, file, exc.message)
        except PermanentArchiveError as exc:
            self.metrics.archive_error("permanent")
            self._fail(cart, file, exc.message)
        except OSError as exc:
            if self._cart_gone(cart.id):
                return None
            return self._retry_later(cart, file, f"volume error: {_reason(exc)}")
        except Exception as exc:
            _log(cart, file).exception("unexpected fault")
            return self._retry_later(cart, file, f"internal error: {type(exc).__name__}")
        return None

    def _step(self, cart: Cart, file: CartFile, batch: _Batch, abort: Abort) -> float | None:
        if not file.hashsum:
            raise PermanentArchiveError(f"no {file.hashtype} checksum was given to verify it")
        if self._verified_before_crash(cart, file):
            self._finish_if_complete(cart.id)
            return None
        shared = self._share(cart, file, batch, abort)
        if shared is not None:
            return shared.delay
        info = self._where_is(file, batch, abort)
        if not info.on_disk:
            if file.status is FileStatus.WAITING:
                self.archive.stage(file.archive_id, abort)
            delay = self.policy.poll.delay(file.polls)
            self.store.move_file(
                file.id,
                FileStatus.STAGING,
                expect=_OPEN,
                size=info.size,
                mtime=info.mtime,
                on_disk=False,
                polls=file.polls + 1,
                attempts=0,
                next_attempt_at=time.time() + delay,
            )
            if cart.reserved_bytes is None:
                self._reserve_once(cart, batch)  # its size is known: it may complete the picture
            _log(cart, file).info("on tape; asking again in %.1fs", delay)
            return delay
        if cart.reserved_bytes is None:
            if file.on_disk is not True:
                self.store.move_file(
                    file.id, expect=_OPEN, size=info.size, mtime=info.mtime, on_disk=True
                )
            if not self._reserve_once(cart, batch):
                return None  # parked until the cart's space is held
        self._pull(cart, file, info, batch.verified, abort)
        return None

    def _share(self, cart: Cart, file: CartFile, batch: _Batch, abort: Abort) -> _Shared | None:
        """One recall for many carts (`cartd.service.sharing`): link a verified copy that
        another cart holds, or wait for the file that recalls it; None when this file is
        the one to recall it. A copy is linked only once the cart's space is held, so that
        the space ledger always counts the bytes it links."""
        if batch.copies is None:
            batch.copies = self.sharing.lookup(batch.claimed.ids if batch.claimed else [file.id])
        copies = batch.copies.get(file.id, NONE)
        if copies.donors:
            if cart.reserved_bytes is None and not self._reserve_once(cart, batch):
                if file.on_disk is True:
                    return _Shared()  # parked: started when its cart's space is held
                return _Shared(self._wait_for_copy(cart, file, batch, abort, copies))
            linked = self.sharing.link(cart.id, file.id, copies.donors)
            if linked is not None:
                batch.verified.add(
                    cart, file, linked.size, linked.mtime, linked.folder, shared=True
                )
                return _Shared()
            # The copies went away (deleted, or found changed): only the lead matters now.
            copies = Copies(lead=self.sharing.copies_of(file.id).lead)
        if copies.lead is None:
            return None
        return _Shared(self._wait_for_copy(cart, file, batch, abort, copies))

    def _wait_for_copy(
        self, cart: Cart, file: CartFile, batch: _Batch, abort: Abort, copies: Copies
    ) -> float:
        """Put the file off while another file recalls the same archive file (or while
        its cart's space is not held yet): a delay growing as a tape poll's, at most
        `WAIT_MAX`; the step that verifies the copy wakes the file sooner."""
        size, mtime, on_disk = file.size, file.mtime, file.on_disk
        if size is None:  # its size is still wanted for the cart's reservation
            info = self._where_is(file, batch, abort)
            size, mtime, on_disk = info.size, info.mtime, info.on_disk
        delay = min(self.policy.poll.delay(file.polls), WAIT_MAX)
        self.store.move_file(
            file.id,
            expect=_OPEN,
            size=size,
            mtime=mtime,
            on_disk=on_disk,
            polls=file.polls + 1,
            next_attempt_at=time.time() + delay,
        )
        if cart.reserved_bytes is None:
            self._reserve_once(cart, batch)  # its size is known: it may complete the picture
        if copies.lead is not None:
            _log(cart, file).info(
                "file step %d recalls the same archive file; asking again in %.1fs",
                copies.lead,
                delay,
            )
        return delay

    def _reserve_once(self, cart: Cart, batch: _Batch) -> bool:
        """`_reserve`, tried once per cart and batch (the sizes it waits for do not change
        within a batch); True once the cart's space is held."""
        if cart.id not in batch.reserved:
            parked = self._reserve(cart)
            batch.reserved[cart.id] = parked is not None
            batch.start += parked or []
        return batch.reserved[cart.id]

    def _where_is(self, file: CartFile, batch: _Batch, abort: Abort) -> ArchiveFile:
        """What the archive says of the file: as the batch's sizing heard it, else asked now;
        a file seen on disk is not asked about again (a failed pull forgets that, so the
        retry asks afresh)."""
        known = batch.known.pop(file.id, None)
        if isinstance(known, ArchiveError):
            raise known
        if known is not None:
            return known
        if file.on_disk and file.size is not None and file.mtime is not None:
            return ArchiveFile(size=file.size, mtime=file.mtime, on_disk=True)
        return self.archive.status(file.archive_id, abort)

    # -- the cart's first step -------------------------------------------------------------

    def size_cart(self, cart_id: int) -> list[int]:
        """A new cart's first step: return its files to step now.

        Each batch of file steps asks the archive about its files together and writes
        their sizes in one transaction (`_size_together`), so sizing a large cart is
        shared by every worker; the batch that completes the picture reserves the cart's
        space and starts the files parked meanwhile.
        """
        cart = self.store.get_cart(cart_id)
        if cart is None or not cart.status.is_active or cart.reserved_bytes is not None:
            return []
        self.store.move_cart(cart.id, CartStatus.STAGING, only_from=[CartStatus.WAITING])
        return [file.id for file in self.store.files_of(cart.id) if file.status in _OPEN]

    # -- space ---------------------------------------------------------------------------

    def _reserve(self, cart: Cart) -> list[int] | None:
        """Hold the cart's bytes on the volume before any is pulled. Returns None while
        they are not held, else the files parked meanwhile that may start now.

        Sizes come from the archive's HEAD, so the reservation waits until every file
        has been asked about; the file that completes that picture makes it, and starts
        the files parked meanwhile.
        """
        if not self.store.all_sized(cart.id):
            return None
        need = self._bytes_needed(cart)
        plan = self.space.reserve(
            cart.id,
            need,
            free_bytes=self.volume.free_bytes(),
            limit=self.policy.volume_limit,
            evict=self.policy.lru_purge,
            spare_seconds=self.policy.lru_buffer_time,
        )
        if plan is None:  # decided by another step meanwhile
            current = self.store.get_cart(cart.id)
            held = current and current.status.is_active and current.reserved_bytes is not None
            return [] if held else None
        discard(self.store, self.volume, plan.evict)
        if plan.evict:
            _log(cart).info(
                "evicted %d least recently used carts (%d bytes) to make room",
                len(plan.evict),
                plan.frees,
            )
            self.metrics.evicted(len(plan.evict), plan.frees)
        if not plan.granted:
            why = "bigger than the whole volume" if plan.too_big else "volume full"
            _log(cart).warning("%d bytes needed, %s: %s", need, why, NO_SPACE)
            self.store.move_cart(cart.id, CartStatus.ERROR, error=NO_SPACE)
            self.volume.remove_cart(cart.id)
            return None
        _log(cart).info("reserved %d bytes", need)
        return self.store.parked_for_space(cart.id)

    def _bytes_needed(self, cart: Cart) -> int:
        files = self.store.files_of(cart.id)
        need = sum(file.size or 0 for file in files)
        if cart.bundle:
            need += tar_size(cart_members(cart, files, self.volume, top=cart.uid))
        return need

    def _pull(
        self, cart: Cart, file: CartFile, info: ArchiveFile, verified: _Verified, abort: Abort
    ) -> None:
        partial = self.volume.partial_path(cart.id, file.id)
        digest = hashlib.new(file.hashtype)
        received = 0
        try:
            with (
                self.archive.read(file.archive_id, abort) as chunks,
                DurableFile(partial, expected_size=info.size) as out,
            ):
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                out.commit()
            if received != info.size:
                raise TransientArchiveError(
                    f"the archive sent {received} bytes of the {info.size} it announced"
                )
            if digest.hexdigest() != file.hashsum:
                # The digest found goes to the operator's log only: told to a client, it
                # would let anyone learn the digest of any file the archive can read.
                _log(cart, file).warning(
                    "checksum mismatch: %s of the archive's bytes is %s",
                    file.hashtype,
                    digest.hexdigest(),
                )
                raise ChecksumMismatch(
                    f"checksum mismatch: the archive's bytes do not have the {file.hashtype}"
                    f" digest ordered ({file.hashsum})"
                )
            os.utime(partial, (info.mtime, info.mtime))
            final = self.volume.file_path(cart.id, file.id)
            self.volume.commit(partial, final, sync=False)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # Recorded with its group. Should the process die first, the next step finds the
        # file in place and checks its bytes again (`_verified_before_crash`).
        verified.add(cart, file, received, info.mtime, final.parent)

    def _record(self, batch: _Batch) -> None:
        """Make a group of files in place durable, then record them verified (which ends
        their claims too)."""
        group = batch.verified.take()
        if not group:
            return
        for folder in {item.folder for item in group}:
            self.volume.sync_folder(folder)
        moved = self.store.record_verified(
            [(item.file.id, item.size, item.mtime) for item in group]
        )
        if batch.claimed is not None:
            batch.claimed.settled(moved)
        self._wake_copies(batch, moved)
        recorded: set[int] = set()
        for item in group:
            if item.file.id in moved:
                recorded.add(item.cart.id)
                if item.shared:
                    _log(item.cart, item.file).info(
                        "verified %d bytes: a copy another cart holds", item.size
                    )
                    self.metrics.file_shared()
                else:
                    _log(item.cart, item.file).info("verified %d bytes", item.size)
                    self.metrics.file_staged(item.size)
        for cart_id in {item.cart.id for item in group} - recorded:
            # Deleted or failed meanwhile: keep nothing a deleted cart left.
            current = self.store.get_cart(cart_id)
            if current is None or current.status is CartStatus.DELETED:
                self.volume.remove_cart(cart_id)
        for cart_id in sorted(recorded):
            # Counted after our commit, never inside it: two groups committing together
            # would each still see the other's files pending, and neither would finish.
            self._finish_if_complete(cart_id)

    def _wake_copies(self, batch: _Batch, moved: set[int]) -> None:
        """Files waiting for a copy of those just recorded are due now: those of other
        batches start, those of this one step again when it ends; and the batch looks
        afresh at the copies of its files still to step."""
        if not moved:
            return
        batch.copies = None
        try:
            woken = self.sharing.wake(sorted(moved))
        except Exception:  # they wake by their own delay instead
            log.warning("could not wake the files waiting for a copy", exc_info=True)
            return
        for file_id in woken:
            if batch.claimed is not None and file_id in batch.claimed:
                batch.woken.add(file_id)
            else:
                batch.start.append(file_id)

    def _verified_before_crash(self, cart: Cart, file: CartFile) -> bool:
        """A file moved into place whose row was not yet updated when the process died."""
        final = self.volume.file_path(cart.id, file.id)
        try:
            stat = final.stat()
        except FileNotFoundError:
            return False
        digest = hashlib.new(file.hashtype)
        with final.open("rb") as handle:
            for chunk in iter(lambda: handle.read(self.policy.chunk_size), b""):
                digest.update(chunk)
        if digest.hexdigest() != file.hashsum:
            final.unlink(missing_ok=True)
            return False
        return self.store.move_file(
            file.id,
            FileStatus.STAGED,
            expect=_OPEN,
            size=stat.st_size,
            mtime=stat.st_mtime,
            attempts=0,
            error=None,
            next_attempt_at=None,
        )

    def _retry_later(self, cart: Cart, file: CartFile, cause: str) -> float | None:
        attempts = file.attempts + 1
        if attempts >= self.policy.retry_attempts:
            self._fail(cart, file, f"{cause} (gave up after {attempts} tries)")
            return None
        delay = self.policy.retry.delay(attempts - 1)
        _log(cart, file).warning(
            "%s; try %d of %d in %.1fs", cause, attempts + 1, self.policy.retry_attempts, delay
        )
        self.store.move_file(
            file.id,
            expect=_OPEN,
            attempts=attempts,
            error=cause,
            on_disk=None,
            next_attempt_at=time.time() + delay,
        )
        return delay

    def _fail(self, cart: Cart, file: CartFile, cause: str) -> None:
        _log(cart, file).error("failed: %s", cause)
        self.store.move_file(file.id, FileStatus.ERROR, error=cause)
        message = f"file {file.archive_id} ({file.path}): {cause}"
        self.store.move_cart(cart.id, CartStatus.ERROR, error=message)

    def _left_behind(self, cart_id: int) -> None:
        """A step stopped because its cart is no longer being made: keep nothing a deleted
        cart left on the volume (its deleter may have cleaned up before the step wrote)."""
        current = self.store.get_cart(cart_id)
        if current is None or current.status is CartStatus.DELETED:
            self.volume.remove_cart(cart_id)

    def _cart_gone(self, cart_id: int) -> bool:
        cart = self.store.get_cart(cart_id)
        return cart is None or not cart.status.is_active

    # -- the cart step -------------------------------------------------------------------

    def _finish_if_complete(self, cart_id: int) -> None:
        """Exactly one caller wins the move to bundling, and only it finishes the cart."""
        if self.store.all_staged(cart_id) and self.store.move_cart(cart_id, CartStatus.BUNDLING):
            self.finish(cart_id)

    def finish(self, cart_id: int) -> None:
        """Make a cart whose files are all verified ready; only the step holding the cart's
        claim does, so a bundle is never written twice at once."""
        with self.watch.claiming_cart(cart_id) as mine:
            if mine:
                self._finish(cart_id)

    def _finish(self, cart_id: int) -> None:
        cart = self.store.get_cart(cart_id)
        if cart is None:
            return
        if cart.status in (CartStatus.WAITING, CartStatus.STAGING):
            if not self.store.move_cart(cart_id, CartStatus.BUNDLING):
                return
        elif cart.status is not CartStatus.BUNDLING:
            return
        # Every file is verified: what is left of pulls that died (a killed process, a
        # claim that lapsed) is of no use any more.
        self.volume.clear_partials(cart_id)
        bundle_size = None
        if cart.bundle:
            try:
                bundle_size = self._write_bundle(cart)
            except OSError as exc:
                if not self._cart_gone(cart_id):
                    self.store.move_cart(
                        cart_id, CartStatus.ERROR, error=f"cannot write the bundle: {_reason(exc)}"
                    )
                return
        if self.store.move_cart(cart_id, CartStatus.READY, bundle_size=bundle_size):
            _log(cart).info("ready")

    def _write_bundle(self, cart: Cart) -> int:
        members = cart_members(cart, self.store.files_of(cart.id), self.volume, top=cart.uid)
        final = self.volume.bundle_path(cart.id)
        partial = final.with_suffix(".tar.partial")
        size = tar_size(members)
        with DurableFile(partial, expected_size=size) as out:
            for chunk in iter_tar(members, self.policy.chunk_size):
                out.write(chunk)
            out.commit()
        self.volume.commit(partial, final)
        return size
