"""The ASGI application for servers other than `cartd serve`:

    uvicorn cartd.asgi:app --host 0.0.0.0 --port 8081 --workers 4
    gunicorn -k uvicorn.workers.UvicornWorker -w 4 -b 0.0.0.0:8081 cartd.asgi:app
    hypercorn -b 0.0.0.0:8081 cartd.asgi:app

Importing this module builds nothing: `app` makes the real application when the server
starts it (the ASGI lifespan start), from the settings read exactly as `cartd serve`
reads them (`CARTD_CONFIG`, else `~/.pacifica-cartd/config.ini` when it exists, then the
environment, then the original's CherryPy file named by `CARTD_CPCONFIG`, else
`~/.pacifica-cartd/cpconfig.ini` when it exists). The server given the module chooses its
own address and port; `log.access_file` and `log.error_file` are honoured as by `cartd
serve`. `CARTD_LOG_LEVEL` and `CARTD_LOG_FORMAT` set cartd's own log lines as
`cartd --log-level/--log-format` do. A setting that is wrong, or a database that cannot
be reached, fails the start with one clear line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cartd import __version__
from cartd.errors import CartdError, ConfigError

log = logging.getLogger("cartd")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What a request gets from a server that never ran the lifespan start.
#: (The keys of `cartd.api.views.ErrorBody`, whose module this one does not import.)
_NO_LIFESPAN = json.dumps(
    {
        "status": 500,
        "message": "cartd was not started: run it with the ASGI lifespan protocol on (the"
        " default of uvicorn, gunicorn's UvicornWorker and hypercorn)",
        "traceback": "",
        "version": __version__,
    }
).encode()


def _build() -> ASGIApp:
    """Settings, runtime and app, as `cartd serve` makes them (blocking: run off the loop)."""
    from cartd.api.app import create_app
    from cartd.observability.logs import configure_logging
    from cartd.runtime import build_runtime
    from cartd.serving import server_settings

    log_format = os.environ.get("CARTD_LOG_FORMAT", "text")
    try:
        configure_logging(os.environ.get("CARTD_LOG_LEVEL", "INFO"), log_format)
    except ValueError as exc:
        raise ConfigError(f"CARTD_LOG_LEVEL / CARTD_LOG_FORMAT: {exc}") from None
    settings = server_settings(None, log_format=log_format)
    return create_app(settings, build_runtime(settings))


class LazyApp:
    """An ASGI app that builds cartd's on the lifespan start, then hands everything to it."""

    def __init__(self, build: Callable[[], ASGIApp] = _build) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is not None:
            await self._app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._start(scope, receive, send)
        else:
            await _refuse(scope, send)

    async def _start(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "lifespan.startup":  # a shutdown before any start
            await send({"type": "lifespan.shutdown.complete"})
            return
        try:
            self._app = await asyncio.to_thread(self._build)
        except CartdError as exc:
            log.error("cartd cannot start: %s", exc.message)
            await send({"type": "lifespan.startup.failed", "message": exc.message})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self._app(scope, replay, send)


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] != "http":
        return  # a websocket: closed unanswered
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _NO_LIFESPAN})


app = LazyApp()
