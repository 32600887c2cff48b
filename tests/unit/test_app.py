"""The HTTP layer's own answers, without a runtime: routing faults and the OpenAPI description."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from cartd.api.app import create_app
from cartd.config import Settings


class Client:
    """Requests straight into the ASGI app. Its lifespan (database, workers) is never
    started: the answers tested here come before any use case is called."""

    def __init__(self, volume: Path) -> None:
        self.app = create_app(Settings(volume_path=volume))

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cartd") as http:
                return await http.request(method, path, **options)

        return asyncio.run(send())

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(tmp_path)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/cart1", {"GET", "HEAD", "POST", "DELETE"}),
        ("PATCH", "/cart1", {"GET", "HEAD", "POST", "DELETE"}),
        ("POST", "/", {"GET"}),
        ("DELETE", "/cart1/files", {"GET"}),
    ],
)
def test_a_wrong_method_gets_405_saying_which_are_allowed(
    client: Client, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"status": 405, "message": "Method Not Allowed"}
    assert {name.strip() for name in response.headers["Allow"].split(",")} == allowed
