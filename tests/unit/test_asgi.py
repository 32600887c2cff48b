"""`cartd.asgi:app`: nothing is built at import, the app is made at the lifespan start, and
a start that cannot succeed says why in one line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cartd.asgi import LazyApp
from cartd.errors import ConfigError


def test_importing_the_module_builds_nothing(tmp_path: Path) -> None:
    volume = tmp_path / "never-made"
    probe = (
        "import sys, cartd.asgi\n"
        "loaded = [m for m in ('cartd.runtime', 'cartd.api.app', 'sqlalchemy', 'fastapi')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"HOME": str(tmp_path), "VOLUME_PATH": str(volume), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not volume.exists()


def _run(app: LazyApp, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_a_start_that_fails_is_reported_to_the_server_in_one_line() -> None:
    def broken() -> Any:
        raise ConfigError("invalid configuration: cartd.stage_workers: too small")

    sent = _run(LazyApp(broken), {"type": "lifespan"}, [{"type": "lifespan.startup"}])
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "invalid configuration: cartd.stage_workers: too small",
        }
    ]


def test_a_request_before_any_start_gets_a_json_500_naming_the_lifespan() -> None:
    built: list[int] = []

    def build() -> Any:
        built.append(1)
        raise AssertionError("must not be built outside the lifespan start")

    sent = _run(LazyApp(build), {"type": "http", "method": "GET", "path": "/"}, [])
    assert sent[0]["status"] == 500
    body = json.loads(sent[1]["body"])
    assert body["status"] == 500
    assert "lifespan" in body["message"]
    assert built == []


def test_the_built_app_gets_the_startup_message_then_everything_else() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], await receive()))
        if scope["type"] == "lifespan":
            await send({"type": "lifespan.startup.complete"})
            seen.append(await receive())

    app = LazyApp(lambda: inner)
    sent = _run(
        app, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    )
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert seen == [("lifespan", {"type": "lifespan.startup"}), {"type": "lifespan.shutdown"}]
    _run(app, {"type": "http"}, [{"type": "http.request"}])
    assert seen[-1] == ("http", {"type": "http.request"})
