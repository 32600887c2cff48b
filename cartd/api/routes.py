"""The compatible Pacifica Cartd surface (API.md section 2). Each route calls one use case."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import format_datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from cartd.api.cuts import mark_cut
from cartd.api.headers import (
    content_disposition,
    header_text,
    preferred_wait,
    requested_range,
    validator_holds,
)
from cartd.api.views import CartView, Message, cart_view, error, error_body
from cartd.api.watching import waited_state
from cartd.errors import (
    CartdError,
    CartFailed,
    CartNotFound,
    CartNotReady,
    DownloadCut,
    PayloadTooLarge,
    RangeNotSatisfiable,
    SourceChanged,
)
from cartd.schemas import MANIFEST_VALUES, NAME_MAX_BYTES, NAME_PATTERN, UID_PATTERN, Packing
from cartd.service.carts import CartService, Download, LiveStream, Stream
from cartd.service.live import SIZES_POLL, SIZES_WAIT, Pause

log = logging.getLogger(__name__)
router = APIRouter()

UP = "Pacifica Cartd Interface Up and Running"
GONE = "The cart does not exist or has already been deleted"


class _DownloadResponse(StreamingResponse):
    """Streams a download and closes it when the response ends however it ends (sent, the
    client gone, the server stopping), here rather than whenever the garbage collector
    gets to the abandoned stream. A file found changed under the stream cuts it: the
    client sees a short body, never a wrong byte (the cart is already being repaired); so
    does a cart that fails or goes while a download of it waits for its files."""

    def __init__(
        self,
        stream: Stream | LiveStream,
        content: Iterator[bytes] | AsyncIterator[bytes],
        status_code: int,
        headers: dict[str, str],
        media_type: str,
    ) -> None:
        super().__init__(content, status_code, headers, media_type=media_type)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* (SourceChanged, DownloadCut) as cut:
            log.warning("download of %s cut: %s", scope.get("path"), cut.exceptions[0])
            mark_cut()
        finally:
            self._stream.close()


def _carts(request: Request) -> CartService:
    service: CartService = request.app.state.runtime.carts
    return service


@router.get("/")
def status_root() -> dict[str, str]:
    """Liveness, with the original's message."""
    return {"message": UP}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics. A cart named `metrics` cannot be fetched by GET: a uid of the
    original's form never is one."""
    body, content_type = request.app.state.runtime.metrics.render()
    return Response(body, media_type=content_type)


#: The uid as the OpenAPI description states it. Checked by the use cases (a bad one gets
#: 400 with cartd's message, and on HEAD its status headers), not by FastAPI.
Uid = Annotated[
    str,
    Path(
        description="the cart's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not `.` or `..`",
        json_schema_extra={"pattern": UID_PATTERN, "minLength": 1, "maxLength": 64},
    ),
]
DownloadName = Annotated[
    str,
    Query(
        description="the download's file name, and without its `.tar` ending (a zip's: `.zip`)"
        " the top folder; a zip asked for as `NAME.tar` is sent as `NAME.zip`, with the"
        f" tar's top folder `NAME`. At most {NAME_MAX_BYTES} bytes of UTF-8, no `/`, no"
        " control character, not `.` or `..`; empty or absent:"
        " `data_YYYY_MM_DD_HH_MM_SS.tar` (`.zip`), the time the cart was ordered",
        json_schema_extra={"pattern": NAME_PATTERN, "maxLength": NAME_MAX_BYTES},
    ),
]
DownloadPacking = Annotated[
    str,
    Query(
        alias="format",
        description="`tar` (the default): the tar, the same bytes as without it; `zip`: the same"
        " folders and files as a zip, stored (not compressed), zip64 where a size, an"
        " offset or the count needs it, with a tag of its own",
        json_schema_extra={"enum": [packing.value for packing in Packing]},
    ),
]
Manifests = Annotated[
    str,
    Query(
        alias="manifest",
        description="`1`: the archive opens with `manifest-<hashtype>.txt` in its top"
        " folder, one per hash type of the order, a line `<checksum>  <path>` per file"
        " (`sha256sum -c` reads it), with a tag of its own; `0` (the default): none",
        json_schema_extra={"enum": list(MANIFEST_VALUES)},
    ),
]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
#: The media type of each format: the tar's is the original's.
_MEDIA_TYPES = {Packing.TAR: "application/octet-stream", Packing.ZIP: "application/zip"}
_ARCHIVE = {media_type: _BINARY for media_type in _MEDIA_TYPES.values()}
_STATUS_HEADERS = {
    name: {"schema": {"type": "string"}, "description": text}
    for name, text in {
        "X-Pacifica-Status": "staging until the cart is ready; ready; error",
        "X-Pacifica-Message": "the cart's error, if any",
        "X-Pacifica-Phase": "waiting, staging, bundling, ready or error",
        "X-Pacifica-Files-Total": "files in the cart",
        "X-Pacifica-Files-Staged": "files verified on the volume",
        "X-Pacifica-Bytes-Total": "bytes in the cart, once the archive has said",
        "X-Pacifica-Bytes-Staged": "bytes verified on the volume",
    }.items()
}
#: HEAD of a bad uid or of no cart: only these two.
_ERROR_STATUS_HEADERS = {
    name: _STATUS_HEADERS[name] for name in ("X-Pacifica-Status", "X-Pacifica-Message")
}


def _header(description: str, **schema: object) -> dict[str, object]:
    return {"description": description, "schema": {"type": "string", **schema}}


_TAR_HEADERS = {
    "Content-Disposition": _header("attachment; filename=NAME (RFC 6266)"),
    "Content-Length": _header("bytes in this answer", pattern="^[0-9]+$"),
    "Accept-Ranges": _header("bytes", enum=["bytes"]),
    "ETag": _header(
        "the download's tag, from what its bytes are made of (each format and manifest its"
        " own): the same before ready"
    ),
    "Last-Modified": _header("when the cart became ready (HTTP date); absent before"),
    "Preference-Applied": _header(
        "`wait` when the cart is still being made and its files are sent as verified",
        enum=["wait"],
    ),
}
_RANGE_HEADERS = {
    **_TAR_HEADERS,
    "Content-Range": _header("bytes FIRST-LAST/SIZE", pattern="^bytes [0-9]+-[0-9]+/[0-9]+$"),
}
_UNSATISFIABLE_HEADERS = {
    "Content-Range": _header("bytes */SIZE", pattern="^bytes \\*/[0-9]+$"),
}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the order is over {limit} bytes, the most this cartd takes (cartd.max_order_size)"
    )


async def _read_order(request: Request, limit: int) -> bytes:
    """The body of an order, refused with 413 as soon as it is known to be over `limit`:
    from its `Content-Length` before a byte of it is read (a client that sent
    `Expect: 100-continue` is then never asked for it), else once the chunks read pass it."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit():  # compared by length first: int() refuses 4,300+ digits
        significant = declared.lstrip("0")
        if len(significant) > len(str(limit)) or int(significant or "0") > limit:
            raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


@router.post(
    "/{uid}",
    status_code=201,
    response_model=Message,
    responses={
        400: error("a bad order or uid; nothing was stored"),
        413: error("the body is over cartd.max_order_size; it was not read, nothing was stored"),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
        }
    },
)
async def order_cart(uid: Uid, request: Request) -> JSONResponse:
    """Store the order and start staging its files in the background."""
    limit: int = request.app.state.runtime.settings.max_order_size
    body = await _read_order(request, limit)
    await run_in_threadpool(_carts(request).create, uid, body)
    return JSONResponse({"message": "Cart Processing has begun"}, status_code=201)


_WAITED_HEADERS = {
    **_STATUS_HEADERS,
    "Preference-Applied": {
        "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
        "description": "`wait=N` when the answer waited for a change, N the seconds applied",
    },
}
_PREFER_HEAD = (
    "`wait=N` (RFC 7240): for a cart still being made, answer as soon as anything these"
    " headers say changes (status, phase, message, a count of files or bytes; or the uid"
    " gets a new cart or none), else after N seconds, at most `cartd.max_wait`; the"
    " answer then says `Preference-Applied: wait=N` with the seconds applied. A cart"
    " that is ready or failed, or none, is answered at once. Other preferences are ignored."
)


@router.head(
    "/{uid}",
    status_code=204,
    responses={
        204: {"description": "the cart's status and progress", "headers": _WAITED_HEADERS},
        400: {"description": "a bad uid", "headers": _ERROR_STATUS_HEADERS},
        404: {"description": "no such cart", "headers": _ERROR_STATUS_HEADERS},
        500: {"description": "the cart failed", "headers": _WAITED_HEADERS},
    },
)
async def cart_status(
    uid: Uid,
    request: Request,
    prefer: Annotated[str, Header(description=_PREFER_HEAD)] = "",
) -> Response:
    """Status headers; `X-Pacifica-Status` stays `staging` until the cart is ready."""
    carts = _carts(request)
    # `prefer` is declared for the OpenAPI description; every Prefer header is read here.
    ceiling: int = request.app.state.runtime.settings.max_wait
    wait = preferred_wait(request.headers.getlist("prefer"), ceiling)
    try:
        if wait is None:
            state, waited = await run_in_threadpool(carts.state, uid), False
        else:
            state, waited = await waited_state(carts, uid, wait, request.is_disconnected)
    except CartdError as exc:
        headers = {"X-Pacifica-Status": "error", "X-Pacifica-Message": header_text(exc.message)}
        return Response(status_code=exc.status_code, headers=headers)
    cart, progress = state.cart, state.progress
    headers = {
        "X-Pacifica-Status": cart.status.pacifica_status,
        "X-Pacifica-Message": header_text(cart.error or ""),
        "X-Pacifica-Phase": cart.status.value,
        "X-Pacifica-Files-Total": str(progress.files_total),
        "X-Pacifica-Files-Staged": str(progress.files_staged),
        "X-Pacifica-Bytes-Total": str(progress.bytes_total),
        "X-Pacifica-Bytes-Staged": str(progress.bytes_staged),
    }
    if waited:
        headers["Preference-Applied"] = f"wait={wait:.0f}"
    return Response(status_code=500 if cart.error else 204, headers=headers)


@router.get(
    "/{uid}/files",
    responses={400: error("a bad uid"), 404: error("no such cart")},
)
def cart_files(uid: Uid, request: Request) -> CartView:
    """Each file of the newest cart of the uid, with its status and error: which file holds
    a cart up, and why."""
    cart, files = _carts(request).files(uid)
    return cart_view(cart, files)


_PREFER = (
    "`wait` (RFC 7240): for a cart still being made, answer at once (200, or 206 for a"
    " `Range`) with the final `Content-Length` and `ETag` and send each file as it is"
    " pulled, its last 64 KiB once it is verified (each file once verified with"
    " `cartd.stream_while_pulling` false), the very bytes of a download after ready;"
    " `Preference-Applied: wait` says so. Until the archive has told every file's size,"
    f" the answer waits for it, at most `wait=N` seconds, {SIZES_WAIT:.0f} or"
    " `cartd.max_wait`, then is 202 as without the preference. A file that fails, or the"
    " cart deleted, cuts the body short (fewer bytes than `Content-Length`, no file"
    " completed wrong): `HEAD` then says why. Other preferences are ignored."
)


@router.get(
    "/{uid}",
    response_model=None,
    responses={
        200: {
            "description": "the whole tar (`application/octet-stream`) or zip (`application/zip`)",
            "content": _ARCHIVE,
            "headers": _TAR_HEADERS,
        },
        202: {
            "description": "The cart is not ready for download (without `Prefer: wait`,"
            " or its sizes were not known in time).",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        206: {
            "description": "the byte range asked for with Range",
            "content": _ARCHIVE,
            "headers": _RANGE_HEADERS,
        },
        400: error(
            "a bad uid, filename, format or manifest, or manifest=1 for a cart with a file"
            " where a manifest would go"
        ),
        404: error("no such cart"),
        416: {
            **error("the range starts past the end of the download"),
            "headers": _UNSATISFIABLE_HEADERS,
        },
        500: error("the cart failed; the message is its error"),
    },
)
async def download_cart(
    uid: Uid,
    request: Request,
    filename: DownloadName = "",
    packing: DownloadPacking = Packing.TAR.value,
    manifest: Manifests = "0",
    prefer: Annotated[str, Header(description=_PREFER)] = "",
) -> Response | StreamingResponse:
    """The tar (or zip) of a ready cart; 202 while it is being made; 500 with its error if
    it failed.

    A `Range` request for one byte range gets 206 and exactly those bytes (unless an
    `If-Range` no longer holds), so a broken download can be resumed. With `Prefer: wait`,
    a cart still being made is sent as its files are verified.
    """
    carts = _carts(request)
    shape = carts.shape(packing, manifest)
    # `prefer` is declared for the OpenAPI description; every Prefer header is read here.
    # The wait for the sizes holds the connection before the answer begins: no longer
    # than a waiting HEAD may be held (`cartd.max_wait`), nor than `SIZES_WAIT`.
    ceiling = min(SIZES_WAIT, request.app.state.runtime.settings.max_wait)
    wait = preferred_wait(request.headers.getlist("prefer"), ceiling)
    try:
        download = await _download(partial(carts.download, uid, filename, shape=shape), wait)
    except CartNotFound:
        return JSONResponse(error_body(404, GONE), status_code=404)
    except CartNotReady as exc:
        return PlainTextResponse(exc.message, status_code=202)
    except CartFailed as exc:
        return JSONResponse(error_body(500, exc.message), status_code=500)
    ready_at = download.ready_at
    last_modified = None if ready_at is None else format_datetime(ready_at, usegmt=True)
    headers = {
        "Content-Disposition": content_disposition(download.filename),
        "Accept-Ranges": "bytes",
        "ETag": download.etag,
    }
    if last_modified is not None:
        headers["Last-Modified"] = last_modified
    wanted = None
    if validator_holds(request.headers.get("if-range"), download.etag, last_modified):
        try:
            wanted = requested_range(request.headers.get("range"), download.size)
        except RangeNotSatisfiable as exc:
            headers["Content-Range"] = f"bytes */{download.size}"
            return JSONResponse(
                error_body(416, f"Range Not Satisfiable: {exc}"),
                status_code=416,
                headers=headers,
            )
    media_type = _MEDIA_TYPES[download.shape.packing]
    status, (start, end) = (200, (0, download.size)) if wanted is None else (206, wanted)
    headers["Content-Length"] = str(end - start)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{download.size}"
    if download.live:
        headers["Preference-Applied"] = "wait"
        live = await run_in_threadpool(carts.live_stream, download, start, end)
        return _DownloadResponse(live, _paced(live), status, headers, media_type)
    stream = await run_in_threadpool(carts.stream, download, start, end)
    return _DownloadResponse(stream, stream, status, headers, media_type)


async def _download(download: Callable[..., Download], wait: float | None) -> Download:
    """The cart's download (`download(wait=...)`); with a `wait` (seconds), that of a cart
    being made too, once its sizes are known, looked for again with growing pauses for at
    most `wait`."""
    if wait is None:
        return await run_in_threadpool(download)
    deadline = time.monotonic() + wait
    looks = 0
    while True:
        try:
            return await run_in_threadpool(partial(download, wait=True))
        except CartNotReady:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            await asyncio.sleep(min(SIZES_POLL.delay(looks), remaining))
            looks += 1


async def _paced(stream: LiveStream) -> AsyncIterator[bytes]:
    """The bytes of a download of a cart being made, each read in a thread; its pauses are
    waited out here, holding no thread (the client leaving cancels the wait)."""
    while (piece := await run_in_threadpool(stream.next_piece)) is not None:
        if isinstance(piece, Pause):
            await asyncio.sleep(piece.seconds)
        else:
            yield piece


@router.delete(
    "/{uid}",
    response_model=Message,
    responses={400: error("a bad uid"), 404: error("no such cart")},
)
def delete_cart(uid: Uid, request: Request) -> JSONResponse:
    """Remove every cart of the uid and its files."""
    if _carts(request).delete(uid):
        return JSONResponse({"message": "Cart Deleted Successfully"})
    return JSONResponse(error_body(404, "Not Found"), status_code=404)
