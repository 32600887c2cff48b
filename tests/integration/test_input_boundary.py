"""What cartd refuses at its door, over real HTTP: bodies over the size limit (413, without
reading them), text that is not Unicode, ids that would leave the archive's folder."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.cartd_server import CartdServer, wait_for_cart

LIMIT = 4096


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "a.txt").write_bytes(b"hello\n")
    return archive


@pytest.fixture
def server(cartd_factory: ServerFactory, folder: Path) -> CartdServer:
    return cartd_factory(f"file://{folder}", CARTD_MAX_ORDER_SIZE=str(LIMIT))


@pytest.fixture
def client(server: CartdServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def order(path: str = "x/a.txt", file_id: str = "a.txt") -> dict[str, object]:
    digest = hashlib.md5(b"hello\n").hexdigest()
    return {"fileids": [{"id": file_id, "path": path, "hashtype": "md5", "hashsum": digest}]}


def raw_exchange(server: CartdServer, head: bytes, deadline: float = 10.0) -> bytes:
    """Send only `head` on a fresh connection; return what the server answers until it closes
    the connection or has sent a whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=deadline) as sock:
        sock.sendall(head)
        answer = b""
        stop = time.monotonic() + deadline
        while time.monotonic() < stop:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
            headers, _, body = answer.partition(b"\r\n\r\n")
            for line in headers.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return answer
        return answer


def test_a_declared_length_over_the_limit_is_413_before_any_body_is_sent(
    server: CartdServer, client: httpx.Client
) -> None:
    head = (
        b"POST /huge1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000000\r\n\r\n"
    )
    answer = raw_exchange(server, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["status"] == 413
    assert str(LIMIT) in body["message"]
    assert body["traceback"] == ""
    assert client.head("/huge1").status_code == 404


def test_a_content_length_of_thousands_of_digits_is_413(server: CartdServer) -> None:
    head = b"POST /huge2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + b"9" * 5000
    answer = raw_exchange(server, head + b"\r\n\r\n")
    assert answer.startswith((b"HTTP/1.1 413", b"HTTP/1.1 400")), answer[:300]


def test_a_chunked_body_is_read_only_up_to_the_limit(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        for _ in range(4):
            yield b" " * 2000

    response = client.post("/huge3", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert client.head("/huge3").status_code == 404


def test_an_order_within_the_limit_is_taken(client: httpx.Client) -> None:
    body = json.dumps(order()).encode()
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    response = client.post("/fits", content=padded, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert wait_for_cart(client, "fits").headers["X-Pacifica-Status"] == "ready"
    over = client.post("/over", content=padded + b" ", headers={"Content-Type": "application/json"})
    assert over.status_code == 413
    assert client.head("/over").status_code == 404


@pytest.mark.parametrize("field", ["id", "path", "hashtype", "hashsum"])
def test_a_lone_surrogate_is_a_400_naming_the_field(client: httpx.Client, field: str) -> None:
    document = order()
    document["fileids"][0][field] = "MARK"  # type: ignore[index]
    body = json.dumps(document).encode().replace(b'"MARK"', b'"\\ud800"')
    response = client.post("/surrogate", content=body)
    assert response.status_code == 400
    assert f"fileids[0].{field}" in response.json()["message"]
    assert client.head("/surrogate").status_code == 404


@pytest.mark.parametrize("file_id", ["../a.txt", "x/../../a.txt", "%2e%2e%2fa.txt", "%2Fetc"])
def test_an_id_leaving_the_archive_folder_is_refused(client: httpx.Client, file_id: str) -> None:
    response = client.post("/escape", json=order(file_id=file_id))
    assert response.status_code == 400
    assert "fileids[0].id" in response.json()["message"]
    assert client.head("/escape").status_code == 404


def test_a_cart_at_every_length_limit_unpacks_with_gnu_tar_and_python(
    client: httpx.Client, tmp_path: Path
) -> None:
    longest = "/".join(["\u00e9" * 127 + "p"] * 12)  # 12 segments of 255 bytes: 3071 bytes
    assert len(longest.encode()) == 3071
    response = client.post("/longest", json=order(path=longest))
    assert response.status_code == 201, response.text
    assert wait_for_cart(client, "longest").headers["X-Pacifica-Status"] == "ready"
    top = "t" * 255  # no .tar ending: the name is the top folder
    data = client.get("/longest", params={"filename": top})
    assert data.status_code == 200
    archive = tmp_path / "cart.tar"
    archive.write_bytes(data.content)

    by_tar = tmp_path / "gnu"
    by_tar.mkdir()
    subprocess.run(["tar", "-xf", str(archive)], cwd=by_tar, check=True, capture_output=True)
    assert (by_tar / top / longest).read_bytes() == b"hello\n"

    by_python = tmp_path / "python"
    with tarfile.open(archive) as tar:
        tar.extractall(by_python, filter="data")
    assert (by_python / top / longest).read_bytes() == b"hello\n"
