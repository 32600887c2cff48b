"""Watching a cart (API.md section 3): `HEAD` with `Prefer: wait=N`, the event stream
`GET /<uid>/events` and the live page `GET /<uid>/view`. What changes, and how it is
looked for, is `cartd.service.changes`; here it is waited out and put on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from cartd.api import page
from cartd.api.events import (
    EVENT_SCHEMA,
    KEEP_ALIVE,
    RETRY_MS,
    EventIds,
    encode,
    event_data,
)
from cartd.api.views import error
from cartd.errors import CartNotFound, InvalidRequest
from cartd.schemas import UID_PATTERN
from cartd.service.carts import CartService, CartState
from cartd.service.changes import (
    WATCH_POLL,
    CartWatcher,
    Quiet,
    Snapshot,
    cart_events,
    head_view,
    settled,
)
from cartd.service.live import Pause

log = logging.getLogger(__name__)
router = APIRouter()

Uid = Annotated[
    str,
    Path(
        description="the cart's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not `.` or `..`",
        json_schema_extra={"pattern": UID_PATTERN, "minLength": 1, "maxLength": 64},
    ),
]


def _carts(request: Request) -> CartService:
    service: CartService = request.app.state.runtime.carts
    return service


async def waited_state(
    carts: CartService, uid: str, wait: float, left: Callable[[], Awaitable[bool]]
) -> tuple[CartState, bool]:
    """The cart's state for a `HEAD` that prefers to wait `wait` seconds: as soon as
    anything its headers say differs from when it came (or the uid has no cart any more:
    `CartNotFound`), else when the time is up. A cart that is ready or failed is answered
    at once, as nothing more happens to it by itself. True when the answer waited. Looks
    stop once the client has `left`."""
    state = await run_in_threadpool(carts.state, uid)
    if settled(state.cart.status):
        return state, False
    seen = head_view(state.cart, state.progress)
    deadline = time.monotonic() + wait
    looks = 0
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(WATCH_POLL.delay(looks), remaining))
        looks += 1
        if await left():
            break
        state = await run_in_threadpool(carts.state, uid)
        if head_view(state.cart, state.progress) != seen:
            break
    return state, True


def _tolerant(watcher: CartWatcher, first: Snapshot) -> Callable[[], Snapshot | None]:
    """`watcher.look`, where a database that cannot be reached just now counts as no
    change: the stream waits on, and sees the change at a later look."""
    kept = [first]

    def look() -> Snapshot | None:
        try:
            found = watcher.look()
        except (OperationalError, InterfaceError) as exc:
            log.warning("events of %s: database unavailable: %s", watcher.uid, exc.orig)
            return kept[0]
        if found is not None:
            kept[0] = found
        return found

    return look


async def _stream(watcher: CartWatcher, first: Snapshot, ids: EventIds) -> AsyncIterator[bytes]:
    """The stream's bytes: each look in a thread, each pause waited out holding none."""
    events = cart_events(first, _tolerant(watcher, first))
    retry: int | None = RETRY_MS
    try:
        while (item := await run_in_threadpool(next, events, None)) is not None:
            if isinstance(item, Pause):
                await asyncio.sleep(item.seconds)
            elif isinstance(item, Quiet):
                yield KEEP_ALIVE
            else:
                yield encode(item.name, event_data(watcher.uid, item), ids.next(), retry)
                retry = None
    finally:
        # ValueError: a look is still running in its thread (the client left); it ends there.
        with contextlib.suppress(ValueError):
            events.close()


_EVENTS = (
    "Server-sent events (`text/event-stream`) of the cart's changes: `state` at once, a"
    " `change` whenever its phase, counts or the files that hold it up change, and last"
    " `ready`, `failed` or `deleted`, after which the stream ends. Each event's `data` is"
    " one JSON object (the README lists its fields); ids grow, also across reconnects;"
    " a comment every 15 s of quiet keeps the connection open."
)


@router.get(
    "/{uid}/events",
    response_class=StreamingResponse,
    description=_EVENTS,
    responses={
        200: {
            "description": "the stream, until the cart is ready, failed or gone",
            # Each event as schemathesis and OpenAPI 3.1 tools read an event stream's schema.
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        400: error("a bad uid"),
        404: error("no such cart"),
    },
)
async def cart_events_stream(
    uid: Uid,
    request: Request,
    last_event_id: Annotated[
        str,
        Header(
            description="the id of the last event a reconnecting client had: the new"
            " stream's ids are larger; it starts with the current state all the same"
        ),
    ] = "",
) -> StreamingResponse:
    """The cart's changes as they happen, for a program or the live page."""
    watcher = _carts(request).watcher(uid)
    first = await run_in_threadpool(watcher.first)
    return StreamingResponse(
        _stream(watcher, first, EventIds(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


_HTML = {"text/html": {"schema": {"type": "string"}}}


@router.get(
    "/{uid}/view",
    response_class=HTMLResponse,
    responses={
        200: {"description": "the live page of the cart", "content": _HTML},
        400: {"description": "a page saying the uid is not a cart's name", "content": _HTML},
        404: {"description": "a page saying there is no such cart", "content": _HTML},
    },
)
async def cart_view_page(uid: Uid, request: Request) -> HTMLResponse:
    """A page that follows the cart live: status, files and bytes staged, throughput and
    time left, the files that hold it up and why, and a download button once ready. It
    loads nothing but this server's `/<uid>/events` and `/<uid>/files`."""
    try:
        await run_in_threadpool(_carts(request).state, uid)
    except InvalidRequest:
        kind, status = page.PageKind.INVALID, 400
    except CartNotFound:
        kind, status = page.PageKind.MISSING, 404
    else:
        kind, status = page.PageKind.LIVE, 200
    return HTMLResponse(page.render(uid, kind), status_code=status, headers=page.headers())
