"""The HTTP layer's own answers, without a runtime: routing faults and the OpenAPI description."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from cartd.api.app import create_app
from cartd.config import Settings
from cartd.schemas import NAME_PATTERN, UID_PATTERN, Order


class Client:
    """Requests straight into the ASGI app. Its lifespan (database, workers) is never
    started: the answers tested here come before any use case is called."""

    def __init__(self, volume: Path) -> None:
        self.app = create_app(Settings(volume_path=volume, max_order_size=65536))

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


def test_the_order_in_the_openapi_description_is_the_validating_model(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    order = Order.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in order.pop("$defs").items():
        assert components[name] == definition
    assert components["Order"] == order
    assert components["Order"]["properties"]["fileids"]["minItems"] == 1
    post = spec["paths"]["/{uid}"]["post"]
    assert "65536 bytes" in post["requestBody"]["description"]
    assert sorted(post["responses"]) == ["201", "400", "413"]


def test_the_uid_and_filename_parameters_say_their_limits(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            parameters = {p["name"]: p["schema"] for p in operation.get("parameters", [])}
            if "{uid}" in path:
                assert parameters["uid"]["pattern"] == UID_PATTERN, (method, path)
                assert "400" in operation["responses"], (method, path)
    filename = {p["name"]: p["schema"] for p in spec["paths"]["/{uid}"]["get"]["parameters"]}[
        "filename"
    ]
    assert filename["pattern"] == NAME_PATTERN
    assert filename["maxLength"] == 255
    head = spec["paths"]["/{uid}"]["head"]["responses"]
    assert "X-Pacifica-Status" in head["400"]["headers"]
    assert "X-Pacifica-Status" in head["404"]["headers"]
    assert "Content-Range" in spec["paths"]["/{uid}"]["get"]["responses"]["416"]["headers"]
