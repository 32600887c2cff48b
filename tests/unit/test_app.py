"""The HTTP layer's own answers, without a runtime: routing faults and the OpenAPI description."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from cartd import __version__
from cartd.api.app import create_app
from cartd.config import Settings
from cartd.errors import PayloadTooLarge
from cartd.schemas import NAME_PATTERN, UID_PATTERN, CallbackRule, order_json_schema


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


def _database_away() -> None:
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


def _a_bug() -> None:
    raise RuntimeError("secret detail of a bug")


def _too_large() -> None:
    raise PayloadTooLarge("the order is over 65536 bytes")


def _wants_a_number(number: int) -> None:
    """A query parameter FastAPI validates: a wrong one goes to its validation handler."""


@pytest.mark.parametrize(
    ("method", "path", "options", "status"),
    [
        ("GET", "/a/b/c", {}, 404),
        ("PUT", "/cart1", {}, 405),
        ("GET", "/test/validation/fault?number=many", {}, 400),
        ("GET", "/test/too/large", {}, 413),
        ("GET", "/test/database/away", {}, 503),
        ("GET", "/test/a/bug", {}, 500),
    ],
)
def test_every_error_body_carries_the_original_keys(
    client: Client, method: str, path: str, options: dict[str, Any], status: int
) -> None:
    """The original's CherryPy error pages had `status`, `message`, `traceback` and
    `version`: every error of cartd has them too, the traceback always empty."""
    # Routes of three segments, which none of cartd's own (`/{uid}`, `/{uid}/files`) takes.
    client.app.add_api_route("/test/validation/fault", _wants_a_number)
    client.app.add_api_route("/test/too/large", _too_large)
    client.app.add_api_route("/test/database/away", _database_away)
    client.app.add_api_route("/test/a/bug", _a_bug)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cartd") as http:
            return await http.request(method, path, **options)

    response = asyncio.run(send())
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"status", "message", "traceback", "version"}
    assert body["status"] == status
    assert body["message"]
    assert body["traceback"] == ""
    assert body["version"] == __version__
    assert "secret detail" not in response.text


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
    assert response.json() == {
        "status": 405,
        "message": "Method Not Allowed",
        "traceback": "",
        "version": __version__,
    }
    assert {name.strip() for name in response.headers["Allow"].split(",")} == allowed


def test_the_order_in_the_openapi_description_is_the_validating_model(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    order = order_json_schema(CallbackRule(), ref_template="#/components/schemas/{model}")
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


def test_the_description_of_an_error_has_the_original_keys(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"status", "message", "traceback", "version"}
    delete = spec["paths"]["/{uid}"]["delete"]["responses"]["404"]
    assert delete["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
