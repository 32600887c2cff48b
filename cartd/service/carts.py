"""The use cases behind the HTTP API: order, look at, download and delete a cart."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

from cartd.bundle import LAYOUT_VERSION
from cartd.db.store import CartStore
from cartd.errors import (
    CartFailed,
    CartNotFound,
    CartNotReady,
    InvalidRequest,
    SourceChanged,
    UnsafeName,
)
from cartd.folders import Inline, top_folder
from cartd.observability.logs import for_cart
from cartd.observability.metrics import Metrics
from cartd.records import Cart, CartFile, Progress
from cartd.schemas import (
    CallbackRule,
    Packing,
    parse_cart_order,
    parse_manifest,
    parse_packing,
    validate_download_name,
    validate_uid,
)
from cartd.segments import MTIME_TOLERANCE, Layout, read_checked
from cartd.service.changes import CartWatcher
from cartd.service.cleanup import discard
from cartd.service.counts import ProgressCounts
from cartd.service.crcs import Crcs
from cartd.service.layout import FileColumns, LaidFile, cart_layout
from cartd.service.leases import DownloadLeases, Lease
from cartd.service.live import Announcements, Pause, announce, live_pieces
from cartd.service.manifest import MANIFEST_VERSION, manifests
from cartd.status import CartStatus
from cartd.storage import Volume
from cartd.workers.base import Runner
from cartd.zip_layout import ZIP_LAYOUT_VERSION

log = logging.getLogger(__name__)

Chunks = Generator[bytes, None, None]
Piece = TypeVar("Piece")


@dataclass(frozen=True)
class CartState:
    cart: Cart
    progress: Progress


@dataclass(frozen=True)
class Shape:
    """What a download is made as: a tar or a zip, with manifests or without."""

    packing: Packing = Packing.TAR
    manifests: bool = False

    @property
    def variant(self) -> list[str]:
        """What sets its bytes apart from the plain tar's, for its tag (none for the tar)."""
        variant = []
        if self.packing is Packing.ZIP:
            variant += [Packing.ZIP.value, ZIP_LAYOUT_VERSION]
        if self.manifests:
            variant += ["manifest", MANIFEST_VERSION]
        return variant


TAR = Shape()


@dataclass(frozen=True)
class Download:
    """A cart's tar or zip: a bundle file on the volume, a stream of staged files, or, for
    a cart still being made, a stream of its files as they are verified (`live`)."""

    cart: Cart
    filename: str
    size: int
    etag: str
    bundle_path: Path | None
    layout: Layout
    chunk_size: int
    #: For a cart still being made: its files as the headers announce them.
    announced: Announcements | None = None
    live: bool = False
    shape: Shape = TAR

    @property
    def ready_at(self) -> datetime | None:
        """When the cart became ready (its `Last-Modified`); None while being made."""
        if self.live:
            return None
        return self.cart.ready_at or self.cart.updated_at

    def chunks(self, start: int = 0, end: int | None = None) -> Chunks:
        """The tar's bytes from `start` up to `end` (default: to its end)."""
        end = self.size if end is None else end
        if self.bundle_path is None:
            yield from self.layout.range(self.chunk_size, start, end)
            return
        yield from read_checked(
            self.bundle_path,
            start,
            end - start,
            self.chunk_size,
            intact=lambda stat: bundle_unchanged(stat, self.cart),
            name="the bundle",
        )


def content_tag(
    cart: Cart, files: Iterable[LaidFile], top: str, size: int, variant: Sequence[str] = ()
) -> str:
    """A strong validator derived from what the download's bytes are made of: the layout,
    the top folder, the cart's creation (its folders' time), and each file's path, size,
    modification time (whole seconds, as its header holds it) and ordered checksum (its
    verified contents, and so its CRC-32), and for a zip or a download with manifests,
    the `variant` (the plain tar's has none, so its tag is as it always was). All are
    known once the archive has told every file's size, so a download that starts while
    the cart is being made gets the tag of the download after ready; a cart made ready
    again from the same files keeps it, since its bytes are the same."""
    head: list[object] = [
        LAYOUT_VERSION,
        cart.id,
        cart.uid,
        top,
        int(cart.created_at.timestamp()),
        size,
    ]
    items = itertools.chain(
        head,
        (
            [file.path, file.size, int(file.mtime or 0.0), file.hashtype, file.hashsum]
            for file in files
        ),
        [list(variant)] if variant else [],
    )
    # The JSON of the whole list, hashed an item at a time: the same bytes as one
    # `json.dumps` of it, without holding them (or a list per file) for 100,000 files.
    digest = hashlib.sha256(b"[")
    for index, item in enumerate(items):
        digest.update((", " if index else "").encode() + json.dumps(item).encode("ascii"))
    digest.update(b"]")
    return f'"{digest.hexdigest()[:32]}"'


def bundle_unchanged(stat: os.stat_result, cart: Cart) -> bool:
    """A bundle is written just before its cart becomes ready and never again: one of
    another size, or written since, is not the one made."""
    ready_at = (cart.ready_at or cart.updated_at).timestamp()
    return stat.st_size == cart.bundle_size and stat.st_mtime <= ready_at + MTIME_TOLERANCE


class _Leased(Generic[Piece]):
    """A download's pieces, holding its cart's lease until they end: read to the end,
    closed, or collected. Ending does no database work, so it is safe wherever the garbage
    collector happens to finalise an abandoned download (see `cartd.service.leases`)."""

    def __init__(
        self,
        pieces: Generator[Piece, None, None],
        lease: Lease,
        metrics: Metrics,
        damaged: Callable[[], None],
    ) -> None:
        self._pieces = pieces
        self._lease = lease
        self._metrics = metrics
        self._damaged = damaged

    def _take(self) -> Piece:
        try:
            piece = next(self._pieces)
        except SourceChanged:
            self.close()
            self._damaged()  # while reading, never from a finaliser: it may write
            raise
        except BaseException:
            self.close()
            raise
        if isinstance(piece, bytes):
            self._metrics.bytes_served(len(piece))
        self._lease.touch()
        return piece

    def close(self) -> None:
        """End the lease and release the open file; idempotent."""
        self._lease.end()
        # ValueError: being read in another thread right now; it ends there.
        with contextlib.suppress(ValueError):
            self._pieces.close()

    def __del__(self) -> None:
        self.close()


class Stream(_Leased[bytes]):
    """The bytes of one download of a ready cart."""

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        return self._take()


class LiveStream(_Leased[bytes | Pause]):
    """The bytes of one download of a cart being made, with the pauses it waits out."""

    def next_piece(self) -> bytes | Pause | None:
        """The next bytes, or a pause to wait out before asking again; None at the end."""
        try:
            return self._take()
        except StopIteration:
            return None


def default_download_name(moment: datetime | None = None, packing: Packing = Packing.TAR) -> str:
    moment = moment or datetime.now(UTC)
    return moment.strftime("data_%Y_%m_%d_%H_%M_%S") + packing.ending


def download_name(filename: str | None, default: str, packing: Packing) -> tuple[str, str]:
    """The download's name and top folder: the name asked for (else `default`) and the
    name without its ending. A zip asked for with a name ending in `.tar` is named `.zip`
    instead, with the top folder the tar of that name has: a link made for the tar with
    `format=zip` added gives the same folder, in a file whose ending says what it is.
    Raises `InvalidRequest`."""
    name = validate_download_name(filename, default)
    if packing is Packing.ZIP and name.endswith(".tar") and name != ".tar":
        name = name[: -len(".tar")] + packing.ending
    try:
        return name, top_folder(name, packing.ending)
    except UnsafeName as exc:
        raise InvalidRequest(f"invalid filename: {exc}") from None


class CartService:
    def __init__(
        self,
        store: CartStore,
        volume: Volume,
        runner: Runner,
        *,
        bundle_default: bool,
        chunk_size: int,
        metrics: Metrics,
        callbacks: CallbackRule | None = None,
        stream_while_pulling: bool = True,
    ) -> None:
        self.metrics = metrics
        #: Where an order's callback may point (none given: callbacks are not enabled).
        self.callbacks = callbacks or CallbackRule()
        self.leases = DownloadLeases(store)
        self.counts = ProgressCounts(store)
        self.store = store
        self.volume = volume
        self.runner = runner
        self.bundle_default = bundle_default
        self.chunk_size = chunk_size
        #: Send a tar member's bytes while its file is pulled (`cartd.service.live`).
        self.stream_while_pulling = stream_while_pulling

    def create(self, uid: str, body: bytes) -> Cart:
        """Store the order durably, then hand its files to the runner."""
        validate_uid(uid)
        order = parse_cart_order(body, self.callbacks)
        bundle = self.bundle_default if order.bundle is None else order.bundle
        cart, file_ids = self.store.create_cart(uid, bundle, order.files, order.callback)
        for_cart(log, uid).info("ordered %d files (bundle=%s)", len(file_ids), bundle)
        self.runner.submit_size(cart.id)
        return cart

    def state(self, uid: str) -> CartState:
        cart = self._latest(uid)
        return CartState(cart, self.counts.of(cart))

    def watcher(self, uid: str) -> CartWatcher:
        """What `HEAD` with `Prefer: wait`, the event stream and the live page look at."""
        validate_uid(uid)
        return CartWatcher(self.store, self.counts, uid)

    def files(self, uid: str) -> tuple[Cart, list[CartFile]]:
        cart = self._latest(uid)
        return cart, self.store.files_of(cart.id)

    def shape(self, packing: str, manifest: str) -> Shape:
        """The `format` and `manifest` query parameters; raises `InvalidRequest`."""
        return Shape(parse_packing(packing), parse_manifest(manifest))

    def download(
        self, uid: str, filename: str | None, *, wait: bool = False, shape: Shape = TAR
    ) -> Download:
        """A ready cart's download; with `wait`, also one of a cart still being made whose
        files' sizes are all known and whose space is held (else `CartNotReady`)."""
        cart = self._latest(uid)
        if cart.status is CartStatus.ERROR:
            raise CartFailed(cart.error or "the cart failed")
        if cart.status is not CartStatus.READY and not (
            wait and cart.reserved_bytes is not None and not self.store.any_unsized(cart.id)
        ):
            # The layout needs every size: until then, not even a live download. (Asked
            # before the rows are read: a client waiting for a cart of 100,000 files
            # asks again and again.)
            raise CartNotReady("The cart is not ready for download.")
        # Named after the moment the cart was ordered, not the request's: every GET of
        # the cart, from while it is being made on, sends the same bytes, so a broken
        # download can be resumed.
        default = default_download_name(cart.created_at, shape.packing)
        name, top = download_name(filename, default, shape.packing)
        if cart.bundle:
            top = cart.uid  # the bundle's, written once for every name
        # The plain tar is laid out from narrow rows read a page at a time, and its tag
        # hashed from a second reading of them: a cart of 100,000 files is never held as
        # whole rows. A zip's CRCs and the manifests need the whole rows.
        whole = None if shape == TAR else self.store.files_of(cart.id)

        def files() -> Iterable[LaidFile]:
            return self.store.file_rows(cart.id) if whole is None else whole

        inline = manifests(whole, cart.created_at.timestamp()) if whole and shape.manifests else []
        if cart.status is not CartStatus.READY:
            return self._live(cart, files, name, top, shape, inline, whole)
        # The bundle is the plain tar: any other shape is made from the files.
        if cart.bundle and shape == TAR:
            if self._repair(cart):
                self._not_ready(uid)
            path = self.volume.bundle_path(cart.id)
            size = cart.bundle_size or 0
            tag = content_tag(cart, files(), top, size)
            return Download(cart, name, size, tag, path, Layout([], []), self.chunk_size)
        columns = FileColumns()
        layout = self._layout(cart, files(), top, shape, inline, whole, columns, being_made=False)
        if self._repair(cart, columns, from_files=True):
            self._not_ready(uid)
        tag = content_tag(cart, files(), top, layout.size, shape.variant)
        return Download(cart, name, layout.size, tag, None, layout, self.chunk_size, shape=shape)

    def _not_ready(self, uid: str) -> NoReturn:
        """A ready cart found damaged and sent back to staging (or deleted meanwhile)."""
        if self.store.latest_cart(uid) is None:
            raise CartNotFound(f"No cart with uid {uid} found")
        raise CartNotReady("The cart is not ready for download.")

    def _live(
        self,
        cart: Cart,
        files: Callable[[], Iterable[LaidFile]],
        name: str,
        top: str,
        shape: Shape,
        inline: list[Inline],
        whole: list[CartFile] | None,
    ) -> Download:
        """The download of a cart being made: what it will be once ready (for a bundled
        cart's plain tar, its bundle's bytes), read from its files as they are verified."""
        if cart.reserved_bytes is None:
            raise CartNotReady("The cart is not ready for download.")
        columns = FileColumns()
        layout = self._layout(cart, files(), top, shape, inline, whole, columns, being_made=True)
        if columns.unsized:
            raise CartNotReady("The cart is not ready for download.")
        tag = content_tag(cart, files(), top, layout.size, shape.variant)
        announced = announce(layout, columns)
        return Download(
            cart, name, layout.size, tag, None, layout, self.chunk_size, announced, True, shape
        )

    def _layout(
        self,
        cart: Cart,
        files: Iterable[LaidFile],
        top: str,
        shape: Shape,
        inline: list[Inline],
        whole: list[CartFile] | None,
        columns: FileColumns,
        *,
        being_made: bool,
    ) -> Layout:
        crcs = Crcs(self.store, self.volume, whole or [], self.chunk_size, being_made=being_made)
        return cart_layout(
            cart,
            files,
            self.volume,
            top,
            packing=shape.packing,
            inline=inline,
            crc_of=crcs,
            columns=columns,
        )

    def _repair(
        self, cart: Cart, files: FileColumns | None = None, *, from_files: bool = False
    ) -> bool:
        """Check a ready cart's copy on the volume; send what is no longer the verified
        bytes back to staging. True when the cart cannot be served as it stands.

        A streamed cart is its staged files; a bundled one its bundle, and its files only
        when the download is made from them (`from_files`: a zip, manifests) or the bundle
        is bad and must be remade from them. Each check is a `stat`: size and
        modification time as recorded when verified (an in-place write changes the latter).
        """
        bundle_bad = False
        if cart.bundle:
            try:
                bundle_bad = not bundle_unchanged(self.volume.bundle_path(cart.id).stat(), cart)
            except FileNotFoundError:
                bundle_bad = True
            if not bundle_bad and not from_files:
                return False
        if files is None:
            files = FileColumns.of(self.store.file_rows(cart.id))
        bad = [
            file_id
            for file_id, size, mtime in zip(files.ids, files.sizes, files.mtimes, strict=True)
            if not self.volume.holds(cart.id, file_id, size, mtime)
        ]
        if not bad and not bundle_bad:
            return False
        if not self.store.restage(cart.id, bad):
            return True  # no longer ready: another request saw it first, or it is gone
        for file_id in bad:
            self.volume.file_path(cart.id, file_id).unlink(missing_ok=True)
        if cart.bundle:
            self.volume.bundle_path(cart.id).unlink(missing_ok=True)
        for_cart(log, cart.uid).warning(
            "the volume's copy changed (%d files%s): staging it again",
            len(bad),
            ", the bundle" if bundle_bad else "",
        )
        for file_id in bad:
            self.runner.submit_file(file_id)
        if not bad:
            self.runner.submit_finish(cart.id)  # the files are sound: remake the bundle
        return True

    def _damaged(self, download: Download) -> None:
        """A download was cut because a file changed under it: repair the cart."""
        cart = self.store.get_cart(download.cart.id)
        if cart is not None and cart.status is CartStatus.READY:
            self._repair(cart, from_files=download.bundle_path is None)

    def stream(self, download: Download, start: int = 0, end: int | None = None) -> Stream:
        """The download's bytes from `start` to `end`, its cart leased against eviction
        from now until the stream ends. The lease ends with the last download of the cart
        in this process; the download counts as the cart's last use."""
        assert not download.live, "a cart being made is read by live_stream"
        cart_id = download.cart.id
        lease = self.leases.begin(cart_id)
        return Stream(
            download.chunks(start, end), lease, self.metrics, lambda: self._damaged(download)
        )

    def live_stream(self, download: Download, start: int = 0, end: int | None = None) -> LiveStream:
        """As `stream`, for a cart being made: each file's bytes once it is verified, and
        pauses meanwhile (see `cartd.service.live`). The lease, renewed at every look,
        keeps the cart from eviction once it is ready and the stream not yet done."""
        assert download.live
        assert download.announced is not None
        cart_id = download.cart.id
        lease = self.leases.begin(cart_id)
        pieces = live_pieces(
            self.store,
            self.volume,
            cart_id,
            download.layout,
            download.announced,
            self.chunk_size,
            start,
            download.size if end is None else end,
            early=self.stream_while_pulling,
        )
        return LiveStream(pieces, lease, self.metrics, lambda: self._damaged(download))

    def close(self) -> None:
        """End this process's download leases."""
        self.leases.close()

    def delete(self, uid: str) -> bool:
        """Make every cart of the uid gone; False when there was none."""
        validate_uid(uid)
        cart_ids = self.store.delete_uid(uid)
        discard(self.store, self.volume, cart_ids)
        if cart_ids:
            for_cart(log, uid).info("deleted")
        return bool(cart_ids)

    def _latest(self, uid: str) -> Cart:
        validate_uid(uid)
        cart = self.store.latest_cart(uid)
        if cart is None:
            raise CartNotFound(f"No cart with uid {uid} found")
        return cart
