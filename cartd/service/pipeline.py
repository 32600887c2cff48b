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
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace

from isal.isal_zlib import crc32

from cartd.archive.base import Abort, Archive, ArchiveFile
from cartd.bundle import iter_tar, tar_size
from cartd.db.copies import NONE, Copies, CopyStore
from cartd.db.space import Sized, SpaceLedger
from cartd.db.store import CartStore
from cartd.durable import WRITEBACK_EVERY, DurableFile
from cartd.errors import (
    ArchiveError,
    CartGone,
    ChecksumMismatch,
    PermanentArchiveError,
    TransientArchiveError,
)
from cartd.observability.logs import for_cart
from cartd.observability.metrics import Metrics
from cartd.records import Cart, CartFile, Verified
from cartd.service.backoff import Backoff
from cartd.service.callbacks import CallbackDelivery
from cartd.service.cleanup import discard
from cartd.service.layout import cart_members
from cartd.service.sharing import WAIT_MAX, Sharing
from cartd.service.watch import CLAIM_SECONDS, CartWatch, HeldFiles
from cartd.space_plan import NO_SPACE
from cartd.status import CartStatus, FileStatus
from cartd.storage import Volume, VolumeSync

log = logging.getLogger(__name__)

_OPEN = tuple(status for status in FileStatus if status.is_open)
#: A cart with more files than this is sized ahead of its pulls (`Pipeline.size_cart`):
#: fewer are all sized by the first batches of their steps anyway (the embedded runner's
#: first round shares a cart's files among its workers, up to 64 each: 256 with the
#: default 4 workers).
SIZE_AHEAD_FROM = 256
#: Files sized by each step that sizes ahead, and by the cart's first step.
SIZE_AHEAD_CHUNK = 512
SIZE_AHEAD_FIRST = 32
GROUP_BYTES = 64 * 1024 * 1024
#: Files at least this big are synced each as they are pulled; smaller ones with their
#: group. Bigger ones are already written back while they are written (`cartd.durable`).
SYNC_ALONE_FROM = WRITEBACK_EVERY
GROUP_SECONDS = 0.5
#: A batch whose files are all smaller than this, from an archive read in this process
#: (`Archive.reads_in_process`), waits for any other such batch to end before it pulls.
#: A small file's pull is nearly all interpreter work, which threads cannot run at once;
#: from several threads it only adds hand-offs of the interpreter's lock. Measured on the
#: benchmark's 100,000 x 1 KiB `file://` cart with 4 workers: ready in 50 s taking
#: turns (63 CPU-seconds), 57 to 65 s without (81 to 95). Larger files, whose hashing
#: and writes run outside that lock, are still pulled side by side: 8 x 128 MiB took
#: 1.5 s with 4 workers, 2.6 s with one.
TAKE_TURNS_BELOW = 1024 * 1024
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
    #: Files of other steps to start now: they waited for a copy this step verified.
    start: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _InPlace:
    cart: Cart
    file: CartFile
    size: int
    mtime: float
    folder: str
    shared: bool = False  # a copy another cart holds, linked: nothing was pulled
    crc32: int | None = None  # of its bytes, for a zip's headers


@dataclass(frozen=True)
class _Group:
    items: list[_InPlace]
    #: Made before the first of its files was written, which were not synced each.
    sync: VolumeSync | None


class _Verified:
    """Files verified and moved into place whose rows do not say so yet.

    A group is recorded before it would hold `GROUP_BYTES` or once it has waited
    `GROUP_SECONDS`, so the progress a client sees lags the pulls by about that.
    """

    def __init__(self, volume: Volume) -> None:
        self._volume = volume
        self._items: list[_InPlace] = []
        self._bytes = 0
        self._since = 0.0
        self._sync: VolumeSync | None = None

    def sync_together(self) -> bool:
        """Whether a file about to be written may be made durable with its group rather
        than on its own; if so, the group's sync is made now, before its first byte."""
        if self._sync is None:
            self._sync = self._volume.group_sync()
        return self._sync is not None

    def add(
        self,
        cart: Cart,
        file: CartFile,
        size: int,
        mtime: float,
        folder: str,
        *,
        crc32: int | None,
        shared: bool = False,
    ) -> None:
        if not self._items:
            self._since = time.monotonic()
        self._items.append(_InPlace(cart, file, size, mtime, folder, shared, crc32))
        self._bytes += size

    def due(self, upcoming: int) -> bool:
        """Whether to record the group before pulling `upcoming` more bytes."""
        return bool(self._items) and (
            self._bytes + upcoming >= GROUP_BYTES or time.monotonic() - self._since >= GROUP_SECONDS
        )

    def take(self) -> _Group:
        group = _Group(self._items, self._sync)
        self._items, self._bytes, self._sync = [], 0, None
        return group

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


@dataclass
class _Batch:
    """What the steps of one `advance` call share."""

    verified: _Verified
    #: What the archive said of each file sized together at the start of the batch, or
    #: the fault it answered with (raised again by the file's own step).
    known: dict[int, ArchiveFile | ArchiveError] = field(default_factory=dict)
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
    #: Files of other batches that waited for such a copy: the runner starts them now.
    start: list[int] = field(default_factory=list)
    #: Files whose group could not be made durable: when to step each again.
    retried: dict[int, float | None] = field(default_factory=dict)

    def abort(self, cart_id: int) -> Abort:
        if cart_id not in self.aborts:
            assert self.watch is not None
            self.aborts[cart_id] = self.watching.enter_context(self.watch.working_on(cart_id))
        return self.aborts[cart_id]


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


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
        callbacks: CallbackDelivery | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.space = space
        self.volume = volume
        self.archive = archive
        self.policy = policy
        self.watch = CartWatch(store, claim_seconds=policy.claim_seconds)
        self.sharing = Sharing(CopyStore(store.engine), volume)
        #: Sends the events of carts ended here (queued by the status change itself).
        self.callbacks = callbacks
        #: Held by the batch pulling small files from an archive read in this process.
        self._turns = threading.Lock()

    def start(self) -> None:
        """Start watching for carts deleted while their steps run, and, with callbacks
        enabled, sending the events of carts that end: every process taking steps does."""
        self.watch.start()
        if self.callbacks is not None:
            self.callbacks.start()

    def stop(self) -> None:
        if self.callbacks is not None:
            self.callbacks.stop()
        self.watch.stop()

    def _ended(self) -> None:
        """A cart was just made ready or failed here: send its callback's event now."""
        if self.callbacks is not None:
            self.callbacks.wake()

    # -- the file step -------------------------------------------------------------------

    def advance(self, file_ids: Sequence[int]) -> Advanced:
        """Take each file one step further; say when each wants its next step.

        Files of the batch not sized yet are sized together first and their bytes added
        to their cart's reservation (`_size_together`), then pulled in the same call:
        a cart starts pulling as soon as its first batch is sized. Files pulled here are
        recorded verified in groups (one sync and one commit for many files): for small
        files those cost more than the pull itself.
        """
        batch = _Batch(_Verified(self.volume), watch=self.watch)
        delays: list[float | None] = []
        with self.watch.claiming_files(file_ids) as claimed, batch.watching:
            batch.watching.callback(batch.verified.close)
            batch.claimed = claimed
            loaded = self.store.load_steps(file_ids)
            steps = self._size_together(
                [loaded[file_id] for file_id in file_ids if file_id in claimed], batch
            )
            if self.archive.reads_in_process and all(
                (file.size or 0) < TAKE_TURNS_BELOW for file, _ in steps.values()
            ):
                batch.watching.enter_context(self._turns)
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
        if batch.retried:
            delays = [
                batch.retried.get(file_id, delay)
                for file_id, delay in zip(file_ids, delays, strict=True)
            ]
        if batch.woken:  # waited for a copy that is verified now: link it at once
            delays = [
                0.0 if delay is not None and file_id in batch.woken else delay
                for file_id, delay in zip(file_ids, delays, strict=True)
            ]
        return Advanced(delays, batch.start)

    def _size_together(
        self, steps: list[tuple[CartFile, Cart]], batch: _Batch
    ) -> dict[int, tuple[CartFile, Cart]]:
        """Ask the archive about the files of the batch that have no size yet, all at once,
        and grow each cart's reservation by what it said, in one transaction per cart
        (`_hold`): a cart's sizing is shared by every worker, a batch at a time, and each
        batch pulls the files it sized. Returns the steps with what was learnt: a cart
        that could not hold its files' bytes is returned in error, and its files' steps
        do nothing."""
        found: dict[int, list[Sized]] = {}
        updated = {}
        carts: dict[int, Cart] = {}
        for file, cart in steps:
            updated[file.id] = (file, cart)
            carts.setdefault(cart.id, cart)
            if not (
                cart.status.is_active
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
            found.setdefault(cart.id, []).append((file.id, info.size, info.mtime, info.on_disk))
        for cart_id, sized in found.items():
            cart = self._hold(carts[cart_id], sized)
            counted = {ident: (size, mtime, on_disk) for ident, size, mtime, on_disk in sized}
            for file_id, (file, of) in list(updated.items()):
                if of.id != cart_id:
                    continue
                if file_id in counted:
                    size, mtime, on_disk = counted[file_id]
                    file = replace(file, size=size, mtime=mtime, on_disk=on_disk)
                updated[file_id] = (file, cart)
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
                self._left_behind(cart.id)
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
        info = self._where_is(file, batch, abort)
        if file.size is None or cart.reserved_bytes is None:
            # Not counted in its cart's reservation yet: its sizing with the batch failed
            # and this retry asked afresh, or the cart was sized by an earlier version.
            sized = [(file.id, info.size, info.mtime, info.on_disk)] if file.size is None else []
            cart = self._hold(cart, sized)
            if not cart.status.is_active:
                return None
        shared = self._share(cart, file, batch)
        if shared is not None:
            return shared.delay
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
            _log(cart, file).info("on tape; asking again in %.1fs", delay)
            return delay
        self._pull(cart, file, info, batch.verified, abort)
        return None

    def _share(self, cart: Cart, file: CartFile, batch: _Batch) -> _Shared | None:
        """One recall for many carts (`cartd.service.sharing`): link a verified copy that
        another cart holds, or wait for the file that recalls it; None when this file is
        the one to recall it. Called once the file is counted in its cart's reservation,
        so that the space ledger always counts the bytes it links."""
        if batch.copies is None:
            batch.copies = self.sharing.lookup(batch.claimed.ids if batch.claimed else [file.id])
        copies = batch.copies.get(file.id, NONE)
        if copies.donors:
            linked = self.sharing.link(cart.id, file.id, copies.donors)
            if linked is not None:
                batch.verified.add(
                    cart,
                    file,
                    linked.size,
                    linked.mtime,
                    os.fspath(linked.folder),
                    crc32=linked.crc32,
                    shared=True,
                )
                return _Shared()
            # The copies went away (deleted, or found changed): only the lead matters now.
            copies = Copies(lead=self.sharing.copies_of(file.id).lead)
        if copies.lead is None:
            return None
        return _Shared(self._wait_for_copy(cart, file, copies))

    def _wait_for_copy(self, cart: Cart, file: CartFile, copies: Copies) -> float:
        """Put the file off while another file recalls the same archive file: a delay
        growing as a tape poll's, at most `WAIT_MAX`; the step that verifies the copy wakes
        the file sooner."""
        delay = min(self.policy.poll.delay(file.polls), WAIT_MAX)
        self.store.move_file(
            file.id, expect=_OPEN, polls=file.polls + 1, next_attempt_at=time.time() + delay
        )
        _log(cart, file).info(
            "file step %d recalls the same archive file; asking again in %.1fs",
            copies.lead,
            delay,
        )
        return delay

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

    def size_cart(self, cart_id: int) -> Advanced:
        """A new cart's first step: start all its files at once. A large cart's sizes are
        also asked for ahead of its pulls, a chunk a step (`_size_ahead`).

        Each batch of file steps asks the archive about its files together, adds their
        bytes to the cart's reservation and pulls them (`_size_together`), so a large
        cart starts pulling at once and its first files need not wait for the others to
        be sized. Batches go from the cart's first file on; sizing ahead goes from its
        last back, so the two meet and every size is known well before the last pull: a
        download with `Prefer: wait`, which needs the tar's length, begins then.
        Returns the files to start, and when to take the next (sizing) step, if any.
        """
        cart = self.store.get_cart(cart_id)
        if cart is None or not cart.status.is_active:
            return Advanced([None])
        if cart.reserved_bytes is not None:
            # Past its first step: this one sizes ahead (or is a duplicate, which does
            # the same harmlessly: a file is sized and counted once).
            return Advanced([self._size_ahead(cart, SIZE_AHEAD_CHUNK)])
        self.store.move_cart(cart.id, CartStatus.STAGING, only_from=[CartStatus.WAITING])
        start = self.store.open_file_ids(cart.id)
        if len(start) <= SIZE_AHEAD_FROM:
            return Advanced([None], start)
        # The reservation begins here, with the last few files sized: later size steps
        # are told from this one by it.
        return Advanced([self._size_ahead(cart, SIZE_AHEAD_FIRST, begin=True)], start)

    def _size_ahead(self, cart: Cart, chunk: int, *, begin: bool = False) -> float | None:
        """Size up to `chunk` of the cart's files not sized yet, from its last back, and
        add them to its reservation; when to size more (now), or None when done."""
        todo = self.store.unsized_files(cart.id, chunk)
        sized: list[Sized] = []
        try:
            with self.watch.working_on(cart.id) as abort:
                for file_id, archive_id in todo:
                    try:
                        info = self.archive.status(archive_id, abort)
                    except ArchiveError:
                        continue  # the file's own step asks again, and deals with it
                    sized.append((file_id, info.size, info.mtime, info.on_disk))
        except CartGone:
            return None
        if sized or begin:
            cart = self._hold(cart, sized)
        if not cart.status.is_active or len(todo) < chunk:
            return None
        return 0.0

    # -- space ---------------------------------------------------------------------------

    def _hold(self, cart: Cart, sized: list[Sized], to: int | None = None) -> Cart:
        """Add the bytes of newly sized files to the cart's reservation, under the volume's
        lock (`SpaceLedger.grow`), evicting least recently used carts if it must; return
        the cart as it is now. One that cannot have them ends in `No Space Available` and
        keeps nothing: what it held goes back at once, its files leave the volume.

        A bundled cart also holds its whole tar: once its last file is sized, its
        reservation is raised to its files plus the tar's exact size.
        """
        growth = self.space.grow(
            cart.id,
            sized,
            to=to,
            free_bytes=self.volume.free_bytes(),
            limit=self.policy.volume_limit,
            evict=self.policy.lru_purge,
            spare_seconds=self.policy.lru_buffer_time,
            ask_sized_all=cart.bundle and to is None,
        )
        if growth is None:  # no longer being made
            current = self.store.get_cart(cart.id)
            return current or replace(cart, status=CartStatus.DELETED)
        discard(self.store, self.volume, growth.evict)
        if growth.evict:
            _log(cart).info(
                "evicted %d least recently used carts (%d bytes) to make room",
                len(growth.evict),
                growth.frees,
            )
            self.metrics.evicted(len(growth.evict), growth.frees)
        if not growth.granted:
            why = "bigger than the whole volume" if growth.too_big else "volume full"
            more = sum(size for _, size, _, _ in sized)
            if to is not None:
                more = to - (cart.reserved_bytes or 0)
            _log(cart).warning(
                "%d bytes more needed (%d held), %s: %s",
                more,
                cart.reserved_bytes or 0,
                why,
                NO_SPACE,
            )
            self.volume.remove_cart(cart.id)
            self._ended()
            return replace(cart, status=CartStatus.ERROR, error=NO_SPACE, reserved_bytes=None)
        if growth.held != cart.reserved_bytes:
            _log(cart).debug("reserved %d bytes", growth.held)
        cart = replace(cart, reserved_bytes=growth.held)
        if growth.sized_all:
            return self._hold(cart, [], to=self._bytes_needed(cart))
        return cart

    def _bytes_needed(self, cart: Cart) -> int:
        files = self.store.files_of(cart.id)
        need = sum(file.size or 0 for file in files)
        if cart.bundle:
            need += tar_size(cart_members(cart, files, self.volume, top=cart.uid))
        return need

    def _pull(
        self, cart: Cart, file: CartFile, info: ArchiveFile, verified: _Verified, abort: Abort
    ) -> None:
        partial = self.volume.partial_name(cart.id, file.id)
        # A small file's fsync costs more than the rest of its pull: it is made durable
        # with its group instead, before the group is recorded (`_record`).
        alone = info.size >= SYNC_ALONE_FROM or not verified.sync_together()
        digest = hashlib.new(file.hashtype)
        # The CRC-32 a zip's headers hold, while the bytes pass: 0.03 s a GiB with ISA-L.
        crc, received = 0, 0
        try:
            with (
                self.archive.read(file.archive_id, abort) as chunks,
                DurableFile(partial, expected_size=info.size) as out,
            ):
                for chunk in chunks:
                    digest.update(chunk)
                    crc = crc32(chunk, crc)
                    out.write(chunk)
                    received += len(chunk)
                out.finish()
                if received != info.size:
                    raise TransientArchiveError(
                        f"the archive sent {received} bytes of the {info.size} it announced"
                    )
                if digest.hexdigest() != file.hashsum:
                    # The digest found goes to the operator's log only: told to a client,
                    # it would let anyone learn the digest of any file the archive can read.
                    _log(cart, file).warning(
                        "checksum mismatch: %s of the archive's bytes is %s",
                        file.hashtype,
                        digest.hexdigest(),
                    )
                    raise ChecksumMismatch(
                        f"checksum mismatch: the archive's bytes do not have the"
                        f" {file.hashtype} digest ordered ({file.hashsum})"
                    )
                os.utime(partial, (info.mtime, info.mtime))
                final = self.volume.file_name(cart.id, file.id)
                # In place as soon as its bytes matched, before they are on disk: a download
                # of the cart being made sends it from now on (`cartd.service.live`). A
                # crash before its row says verified leaves it to be hashed again
                # (`_verified_before_crash`), so a file torn by the crash is pulled again.
                self.volume.commit(partial, final, sync=False)
                try:
                    out.commit(sync=alone)  # on disk before its group records it verified
                except BaseException:
                    _remove(final)
                    raise
        except BaseException:
            _remove(partial)
            raise
        # Recorded with its group. Should the process die first, the next step finds the
        # file in place and checks its bytes again (`_verified_before_crash`).
        verified.add(cart, file, received, info.mtime, os.path.dirname(final), crc32=crc)

    def _record(self, batch: _Batch) -> None:
        """Make a group of files in place durable, then record them verified (which ends
        their claims too)."""
        taken = batch.verified.take()
        try:
            if not taken.items:
                return
            self._make_durable(taken)
        except OSError as exc:
            self._pull_again(taken.items, batch, f"volume error: {_reason(exc)}")
            return
        finally:
            if taken.sync is not None:
                taken.sync.close()
        group = taken.items
        moved = self.store.record_verified(
            [Verified(item.file.id, item.size, item.mtime, item.crc32) for item in group]
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
            self._left_behind(cart_id)
        for cart_id in sorted(recorded):
            # Counted after our commit, never inside it: two groups committing together
            # would each still see the other's files pending, and neither would finish.
            self._finish_if_complete(cart_id)

    def _make_durable(self, group: _Group) -> None:
        """The files of a group on disk, and their moves into place: with one sync of the
        volume if some were not synced each, else by syncing each folder they went to."""
        if group.sync is not None:
            group.sync.sync()
            return
        for folder in {item.folder for item in group.items}:
            self.volume.sync_folder(folder)

    def _pull_again(self, group: list[_InPlace], batch: _Batch, cause: str) -> None:
        """A group that could not be made durable: none of its files is kept, each is
        stepped again as after a failed pull."""
        for item in group:
            _remove(self.volume.file_name(item.cart.id, item.file.id))
            batch.retried[item.file.id] = self._retry_later(item.cart, item.file, cause)

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
        final = self.volume.file_name(cart.id, file.id)
        try:
            stat = os.stat(final)
        except FileNotFoundError:
            return False
        digest, crc = hashlib.new(file.hashtype), 0
        with open(final, "rb") as handle:
            for chunk in iter(lambda: handle.read(self.policy.chunk_size), b""):
                digest.update(chunk)
                crc = crc32(chunk, crc)
        if digest.hexdigest() != file.hashsum:
            _remove(final)
            return False
        return self.store.move_file(
            file.id,
            FileStatus.STAGED,
            expect=_OPEN,
            size=stat.st_size,
            mtime=stat.st_mtime,
            crc32=crc,
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
        if self.store.move_cart(cart.id, CartStatus.ERROR, error=message):
            self._ended()

    def _left_behind(self, cart_id: int) -> None:
        """A step stopped because its cart is no longer being made: keep nothing a deleted
        cart, or one that ended for want of space, left on the volume (whoever ended it
        may have cleaned up before the step wrote: another batch of the cart, pulling
        while one of its growths was refused)."""
        current = self.store.get_cart(cart_id)
        if (
            current is None
            or current.status is CartStatus.DELETED
            or (current.status is CartStatus.ERROR and current.error == NO_SPACE)
        ):
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
            # Its tar is held once its last file is sized (`_hold`); should the step that
            # sized it have died in between, it is held here, before a byte is written.
            if not self._hold(cart, [], to=self._bytes_needed(cart)).status.is_active:
                return
            try:
                bundle_size = self._write_bundle(cart)
            except OSError as exc:
                if self._cart_gone(cart_id):
                    self._left_behind(cart_id)
                elif self.store.move_cart(
                    cart_id, CartStatus.ERROR, error=f"cannot write the bundle: {_reason(exc)}"
                ):
                    self._ended()
                return
        if self.store.move_cart(cart_id, CartStatus.READY, bundle_size=bundle_size):
            _log(cart).info("ready")
            self._ended()
        else:
            # Deleted while its bundle was written: the DELETE may have emptied the volume
            # before the bundle's first byte, and writing it made the cart's folder again.
            self._left_behind(cart_id)

    def _write_bundle(self, cart: Cart) -> int:
        members = cart_members(cart, self.store.file_rows(cart.id), self.volume, top=cart.uid)
        final = self.volume.bundle_path(cart.id)
        partial = final.with_suffix(".tar.partial")
        size = tar_size(members)
        with DurableFile(partial, expected_size=size) as out:
            for chunk in iter_tar(members, self.policy.chunk_size):
                out.write(chunk)
            out.commit()
        self.volume.commit(partial, final)
        return size
