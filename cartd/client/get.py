"""`cartd get` from start to end: order the cart, follow it, download and verify its tar,
keep it, unpack it.

The download is asked for with `Prefer: wait`: cartd then sends the tar while the cart
is being made, and the staging and download bars move together. A server that does not
honour it (the original Pacifica Cartd) answers `202` until the cart is ready, and is
then polled with `HEAD` until it is. Everything downloaded goes to FILE.part first and
is verified as it arrives; FILE appears only once every member matched the order.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import httpx

from cartd.client.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CartFailed,
    GetError,
    OrderError,
    TransferFailed,
    VerificationFailed,
)
from cartd.client.extract import extract
from cartd.client.order import LoadedOrder
from cartd.client.parts import PartFiles, Resumable
from cartd.client.progress import Display
from cartd.client.session import (
    ERROR,
    MISSING,
    READY,
    STAGING,
    CartSession,
    CartState,
    extent,
    refused,
)
from cartd.client.transfer import RetryPolicy, StartOver, TarBody, resumed_at
from cartd.client.verify import MemberCheck, check_ending, verify_tar
from cartd.client.watch import Watcher
from cartd.errors import InvalidRequest
from cartd.schemas import validate_uid

#: Seconds a cartd may hold a download of a cart being made until it knows every file's
#: size (`Prefer: wait=N`); it answers 202 after that, and is asked again.
GET_WAIT = 10
#: Seconds to wait for news of the cart after a 202 before asking for the tar again.
NEWS_WAIT = 30.0
#: Times a tar that changed under the download is taken from its start again.
RESTARTS = 3


@dataclass(frozen=True)
class GetRequest:
    server: str
    order: LoadedOrder
    uid: str | None = None
    output: Path | None = None
    extract: Path | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    #: Where FILE goes by default, and where parts of earlier runs are looked for.
    folder: Path = field(default_factory=Path)


@dataclass(frozen=True)
class Fetched:
    path: Path
    files: int
    extracted: Path | None


Sessions = Callable[[], CartSession]


def _place(request: GetRequest) -> tuple[PartFiles, Resumable | None]:
    """Which FILE this run makes, and the earlier run's part to take up, if any."""
    found = None
    if request.output is not None:
        parts = PartFiles(request.output)
    elif request.uid is not None:
        parts = PartFiles(request.folder / f"{request.uid}.tar")
    else:
        found = PartFiles.find(request.folder, request.server, request.order.digest)
        parts = found or PartFiles(request.folder / f"{uuid.uuid4()}.tar")
    kept = parts.load()
    if kept is None or (kept.server, kept.order) != (request.server, request.order.digest):
        return parts, None
    if request.uid is not None and kept.uid != request.uid:
        return parts, None
    return parts, kept


def _uid_of(request: GetRequest, parts: PartFiles) -> str:
    if request.uid is not None:
        return request.uid
    if request.output is None:  # FILE was named after a new uid
        return parts.target.name.removesuffix(".tar")
    return str(uuid.uuid4())


def get(request: GetRequest, display: Display, sessions: Sessions) -> Fetched:
    """Run the whole command; raises a `GetError` saying how it ended otherwise."""
    parts, kept = _place(request)
    try:
        with sessions() as session:
            kept = _ordered(session, request, parts, kept, display)
            watcher = Watcher(sessions, kept.uid, display).start()
            try:
                count = _download(session, watcher, request, parts, kept, display)
            finally:
                watcher.stop()
            _made(watcher.latest, display)
    except CartFailed:
        parts.discard()  # run again, the same command orders the cart anew
        raise
    except TransferFailed as exc:
        exc.resumable = parts.state.exists()
        raise
    parts.complete()
    display.note(f"verified {count} files against the order's checksums; saved {parts.target}")
    if request.extract is not None:
        extract(parts.target, request.extract)
        display.note(f"unpacked into {request.extract}")
    return Fetched(parts.target, count, request.extract)


def _made(last: CartState | None, display: Display) -> None:
    """Show the cart made: a whole tar came, though the watcher may not have seen the
    cart ready before the download ended."""
    if last is not None and not last.settled:
        display.staging(
            replace(
                last,
                status=READY,
                phase=None if last.phase is None else READY,
                files_staged=last.files_total,
                bytes_staged=last.bytes_total,
            )
        )


def _ordered(
    session: CartSession,
    request: GetRequest,
    parts: PartFiles,
    kept: Resumable | None,
    display: Display,
) -> Resumable:
    """The cart this run downloads: the earlier run's, or one ordered now."""
    if kept is not None:
        state = session.state(kept.uid)
        if state.status == ERROR:
            raise CartFailed(state.message or "the cart failed")
        if state.status == MISSING:
            display.note(f"cart {kept.uid} is gone from the server: ordering it again")
            session.order(kept.uid, request.order.body)
        else:
            display.note(f"taking up cart {kept.uid}: {parts.size()} bytes already in {parts.part}")
        return kept
    parts.discard()
    parts.part.write_bytes(b"")  # a folder that cannot be written to fails before the order
    uid = _uid_of(request, parts)
    try:
        session.order(uid, request.order.body)
    except GetError:
        parts.discard()
        raise
    fresh = Resumable(request.server, uid, request.order.digest)
    parts.save(fresh)
    display.note(f"ordered cart {uid} of {len(request.order.files)} files from {request.server}")
    return fresh


def _answer(
    session: CartSession,
    watcher: Watcher,
    uid: str,
    name: str,
    start: int,
    validator: str | None,
    policy: RetryPolicy,
) -> httpx.Response:
    """A `GET` answer that carries the tar (200, 206) or says where it ends (416): asked
    again while the cart is not ready and the server does not send it as it is made."""
    failures, seen = 0, 0
    while True:
        try:
            response = session.tar(uid, name, start=start, etag=validator, wait=GET_WAIT)
        except httpx.TransportError as exc:
            failures += 1
            if failures > policy.tries:
                raise TransferFailed(f"cannot download from {session.server}: {exc}") from None
            time.sleep(policy.delay(failures))
            continue
        failures = 0
        if response.status_code in (200, 206, 416):
            return response
        if response.status_code != 202:
            raise refused(response)
        response.close()
        seen, state = _news(watcher, seen)
        if state is not None and state.status == ERROR:
            raise CartFailed(state.message or "the cart failed")
        if state is not None and state.status == MISSING:
            raise CartFailed(f"the server no longer has cart {uid}")


def _news(watcher: Watcher, seen: int) -> tuple[int, CartState | None]:
    """Wait for the watcher's next answer; from a server that tells no phase (the
    original, which never sends a cart before it is ready), until it is settled."""
    while True:
        version, state = watcher.next_state(seen, NEWS_WAIT)
        if version == seen or state is None:
            return version, state  # no news in time: ask for the tar again
        seen = version
        if state.phase is not None or state.status != STAGING:
            return seen, state


def _download(
    session: CartSession,
    watcher: Watcher,
    request: GetRequest,
    parts: PartFiles,
    kept: Resumable,
    display: Display,
) -> int:
    """Download into FILE.part, verifying as it comes; the number of files verified."""
    name, uid = parts.target.name, kept.uid
    have = parts.size() if kept.validator else 0
    if not have:
        parts.part.write_bytes(b"")
    response = _answer(session, watcher, uid, name, have, kept.validator, request.policy)
    for _ in range(RESTARTS + 1):
        if response.status_code == 416:
            response.close()
            if extent(response).total != have:
                parts.part.write_bytes(b"")
                have = 0
                response = _answer(session, watcher, uid, name, 0, None, request.policy)
                continue
        elif response.status_code == 200 and have:
            display.note("the server sent the whole tar (it changed, or cannot resume)")
            parts.part.write_bytes(b"")
            have = 0
        where = extent(response)
        if response.status_code == 206:
            resumed_at(where, have)
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        kept = kept.with_validator(validator)
        parts.save(kept)

        def reopen(start: int, validator: str | None = validator) -> httpx.Response:
            again = _answer(session, watcher, uid, name, start, validator, request.policy)
            if again.status_code == 206 or (start == 0 and again.status_code == 200):
                resumed_at(extent(again), start)
                return again
            if again.status_code == 200:
                raise StartOver(again)
            again.close()
            raise TransferFailed(f"the server answered {again.status_code} to a resumption")

        display.download(where.total, have)
        body = TarBody(
            parts.part,
            have,
            response,
            where.total,
            reopen,
            policy=request.policy,
            on_bytes=display.advance,
        )
        try:
            with body:
                count = verify_tar(body, MemberCheck(request.order.members()))
                body.drain()
            check_ending(parts.part)
        except StartOver as changed:
            display.note("the server sent the whole tar again (it changed): starting over")
            parts.part.write_bytes(b"")
            have, response = 0, changed.response
            continue
        except VerificationFailed as exc:
            bad = parts.reject()
            raise VerificationFailed(f"{exc.message}; the download is kept as {bad}") from None
        display.downloaded()
        return count
    response.close()
    raise TransferFailed(f"the tar changed {RESTARTS} times while it was downloaded")


def _stderr_line(text: str, err: TextIO) -> None:
    print(f"cartd get: {text}", file=err, flush=True)


def _check_server(server: str) -> None:
    try:
        url = httpx.URL(server)
    except httpx.InvalidURL as exc:
        raise OrderError(f"--server {server!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise OrderError(f"--server must be an http:// or https:// URL, not {server!r}")


def run(
    request: GetRequest,
    display: Display,
    sessions: Sessions | None = None,
    err: TextIO | None = None,
) -> int:
    """`get`, with its outcome as an exit code and a message on `err` (standard error)."""
    err = err or sys.stderr
    for noisy in ("httpx", "httpcore"):  # one line per request is not for a person
        logging.getLogger(noisy).setLevel(logging.WARNING)
    lines: list[str] = []
    try:
        try:
            if request.uid is not None:
                validate_uid(request.uid)
        except InvalidRequest as exc:
            raise OrderError(exc.message) from None
        _check_server(request.server)
        get(request, display, sessions or (lambda: CartSession(request.server)))
        code = EXIT_OK
    except GetError as exc:
        code = exc.exit_code
        lines.append(("the cart failed: " if isinstance(exc, CartFailed) else "") + exc.message)
        if isinstance(exc, TransferFailed) and exc.resumable:
            lines.append("the part downloaded is kept: run the same command again to resume")
    except OSError as exc:  # the disk: no space, no permission
        code = EXIT_FAILED
        lines.append(f"{exc.strerror or exc} ({exc.filename})")
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        lines.append(
            "interrupted; the part downloaded is kept: run the same command again to resume"
        )
    finally:
        display.close()  # before the message, so that no bar is drawn over it
    for line in lines:
        _stderr_line(line, err)
    return code
