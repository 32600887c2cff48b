"""The wire form of a cart's event stream (`GET /<uid>/events`): server-sent events, as the
HTML standard defines them (`text/event-stream`), one JSON object per event."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from cartd.service.changes import Event, EventName, Snapshot

#: Milliseconds a client (a browser's EventSource) waits before reconnecting after the
#: connection broke: sent once, in the first event.
RETRY_MS = 3000
#: What a stream sends after `HEARTBEAT` seconds without an event: a comment, which
#: clients ignore and proxies count as traffic.
KEEP_ALIVE = b": still watching\n\n"
GONE = "The cart does not exist or has already been deleted"
#: Longest `Last-Event-ID` read as a number; a longer one is ignored.
_ID_DIGITS = 19


class HoldingFile(BaseModel):
    """A file that holds its cart up, and why (at most 10 per event, most telling first)."""

    id: str = Field(description="the archive's id of the file")
    path: str = Field(description="where the file goes in the tar")
    status: Literal["waiting", "staging", "error"]
    reason: Literal["failed", "retrying", "on_tape", "shared", "queued"] = Field(
        description="failed (`error` says why), retrying after a fault (`error`), on_tape"
        " (the archive is bringing it to disk), shared (another file recalls the same"
        " archive file), queued (waiting its turn, or being pulled now)"
    )
    error: str | None = Field(description="why it failed, or the last passing fault")
    attempts: int = Field(description="failed tries since the last success")


_CHANGED = Field(
    description="what differs from the previous event of this stream: cart (a new order"
    " replaced it), phase, progress, holding; empty in the first"
)


class CartEvent(BaseModel):
    """The `data` of `state`, `change`, `ready` and `failed`: the cart as it is now."""

    uid: str
    status: Literal["staging", "ready", "error"] = Field(description="as X-Pacifica-Status")
    phase: Literal["waiting", "staging", "bundling", "ready", "error"] = Field(
        description="as X-Pacifica-Phase"
    )
    error: str | None = Field(description="why the cart failed, once it has")
    files_total: int
    files_staged: int = Field(description="files verified on the volume")
    files_sized: int = Field(
        description="files whose size the archive has told; `bytes_total` is final once"
        " this is `files_total`"
    )
    bytes_total: int = Field(description="bytes of the files sized so far")
    bytes_staged: int = Field(description="bytes of the files verified")
    holding: list[HoldingFile] = Field(description="files not verified yet, most telling first")
    changed: list[Literal["cart", "phase", "progress", "holding"]] = _CHANGED


class GoneEvent(BaseModel):
    """The `data` of `deleted`: the uid has no cart any more."""

    uid: str
    message: str
    changed: list[Literal["cart"]] = _CHANGED


def snapshot_data(snapshot: Snapshot) -> dict[str, object]:
    """The JSON of a cart as an event carries it (a `CartEvent` without `changed`)."""
    cart, progress = snapshot.cart, snapshot.progress
    return {
        "uid": cart.uid,
        "status": cart.status.pacifica_status,
        "phase": cart.status.value,
        "error": cart.error,
        "files_total": progress.files_total,
        "files_staged": progress.files_staged,
        "files_sized": progress.files_sized,
        "bytes_total": progress.bytes_total,
        "bytes_staged": progress.bytes_staged,
        "holding": [
            {
                "id": file.archive_id,
                "path": file.path,
                "status": file.status.value,
                "reason": file.reason.value,
                "error": file.error,
                "attempts": file.attempts,
            }
            for file in snapshot.holding
        ],
    }


def event_data(uid: str, event: Event) -> dict[str, object]:
    """An event's JSON: the cart and what changed (`CartEvent`); for `deleted`, only the
    uid and why (`GoneEvent`)."""
    changed = [change.value for change in event.changed]
    if event.snapshot is None:
        return {"uid": uid, "message": GONE, "changed": changed}
    return {**snapshot_data(event.snapshot), "changed": changed}


#: The models of the events' `data`, for the OpenAPI description's components.
DATA_MODELS: tuple[type[BaseModel], ...] = (CartEvent, GoneEvent)
#: One event of the stream as the OpenAPI description states it: the fields of an event
#: of the HTML standard, its `data` a JSON object of `DATA_MODELS`.
EVENT_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": [name.value for name in EventName]},
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "grows with every event, also across reconnects",
        },
        "retry": {
            "type": "integer",
            "description": "milliseconds to wait before reconnecting; in the first event",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "oneOf": [
                    {"$ref": f"#/components/schemas/{model.__name__}"} for model in DATA_MODELS
                ]
            },
        },
    },
}


def encode(name: str, data: dict[str, object], event_id: int, retry_ms: int | None) -> bytes:
    """One event as its lines: `retry:` (when given), `id:`, `event:`, and `data:` with the
    JSON on a single line (JSON escapes every line break inside its strings)."""
    lines = [] if retry_ms is None else [f"retry: {retry_ms}"]
    lines += [f"id: {event_id}", f"event: {name}", f"data: {json.dumps(data)}"]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class EventIds:
    """Event ids that only grow, across reconnects and API processes: the milliseconds
    since the epoch when the event was sent, one more than the previous when that is not
    later, and past the `Last-Event-ID` a reconnecting client sends, so that the id of
    the newest event a client has is always its largest."""

    def __init__(self, last_event_id: str | None, clock: Callable[[], float] = time.time) -> None:
        value = (last_event_id or "").strip()
        numeric = value.isascii() and value.isdigit() and len(value) <= _ID_DIGITS
        self._last = int(value) if numeric else -1
        self._clock = clock

    def next(self) -> int:
        self._last = max(self._last + 1, int(self._clock() * 1000))
        return self._last
