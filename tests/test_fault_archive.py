"""The fault archive's faults are real on the wire, as a plain httpx client sees them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.fault_archive import FaultArchive, Faults

DATA = bytes(range(256)) * 40  # 10 KiB: several 1 KiB chunks


def poll(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` until true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def archive() -> Iterator[FaultArchive]:
    with FaultArchive(chunk_size=1024) as fa:
        yield fa


@pytest.fixture
def client(archive: FaultArchive) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=archive.url, timeout=5.0) as c:
        yield c


def test_speaks_the_archive_protocol(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("7", DATA, mtime=1700000000.25)
    assert archive.url.startswith("http://127.0.0.1:")
    assert archive.url.endswith("/")
    assert client.get("/").json() == {"message": "Pacifica Archive Interface Up and Running"}

    head = client.head("/7")
    assert head.status_code == 204
    assert head.headers["X-Content-Length"] == str(len(DATA))
    assert head.headers["Last-Modified"] == "1700000000.25"
    assert head.headers["X-Pacifica-File-Storage-Media"] == "disk"
    assert head.headers["X-Pacifica-Messsage"] == "File was found"
    assert head.headers["X-Pacifica-Bytes-Per-Level"] == f"({len(DATA)},)"
    assert float(head.headers["X-Pacifica-Ctime"]) > 0

    staged = client.post("/7")
    assert staged.status_code == 200
    assert staged.json() == {"message": "File was staged", "file": "7"}

    got = client.get("/7")
    assert got.status_code == 200
    assert got.headers["Transfer-Encoding"] == "chunked"
    assert got.content == DATA

    put = client.put("/8", content=b"new", headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201
    assert archive.data("8") == b"new"


def test_unknown_id_and_not_found(archive: FaultArchive, client: httpx.Client) -> None:
    for method in ("HEAD", "GET", "POST"):
        resp = client.request(method, "/404", content=b"" if method == "POST" else None)
        assert resp.status_code == 500, method
        if method != "HEAD":
            assert "traceback" in resp.json()
    archive.add("gone", DATA, faults=Faults(not_found=True))
    for method in ("HEAD", "GET", "POST"):
        assert client.request(method, "/gone").status_code == 404


def test_post_without_content_length_is_411(archive: FaultArchive) -> None:
    # httpx always sends Content-Length: 0 on a bodiless POST, so go raw.
    archive.add("1", DATA)
    port = int(archive.url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 411 Length Required"
    assert "traceback" in json.loads(rest.partition(b"\r\n\r\n")[2])


def test_tape_until_staged_then_disk(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("t", DATA, faults=Faults(tape_seconds=0.3))
    assert client.head("/t").headers["X-Pacifica-File-Storage-Media"] == "tape"
    assert client.get("/t").status_code == 500  # not staged: a real backend fails too
    assert client.head("/t").headers["X-Pacifica-File-Storage-Media"] == "tape"  # no POST yet

    staged_at = time.monotonic()
    assert client.post("/t").status_code == 200
    poll(lambda: client.head("/t").headers["X-Pacifica-File-Storage-Media"] == "disk")
    assert time.monotonic() - staged_at >= 0.3
    assert client.get("/t").content == DATA


def test_fail_first_then_ok(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("f", DATA, faults=Faults(fail_first=2))
    first, second = client.head("/f"), client.get("/f")
    assert (first.status_code, second.status_code) == (500, 500)
    assert "traceback" in second.json()
    assert client.get("/f").content == DATA


def test_reset_cuts_the_connection_mid_body(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("r", DATA, faults=Faults(reset_first=1))
    received = bytearray()

    def read_all() -> None:
        with client.stream("GET", "/r") as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_bytes():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    assert 0 < len(received) < len(DATA)
    assert DATA.startswith(received)
    assert client.get("/r").content == DATA  # only the first GET is cut


def test_delay_triggers_client_timeout(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("d", DATA, faults=Faults(delay_first=1, delay_seconds=30))
    with pytest.raises(httpx.ReadTimeout):
        client.get("/d", timeout=0.2)
    started = time.monotonic()
    assert client.get("/d").content == DATA
    assert time.monotonic() - started < 5


def test_truncated_body_ends_cleanly_but_short(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("s", DATA, faults=Faults(truncate_first=1))
    assert client.head("/s").headers["X-Content-Length"] == str(len(DATA))
    short = client.get("/s")
    assert short.status_code == 200
    assert 0 < len(short.content) < len(DATA)
    assert DATA.startswith(short.content)
    assert client.get("/s").content == DATA


def test_corrupt_bytes_keep_length(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("once", DATA, faults=Faults(corrupt_first=1))
    archive.add("always", DATA, faults=Faults(corrupt_always=True))
    bad = client.get("/once").content
    assert len(bad) == len(DATA)
    assert bad != DATA
    assert client.get("/once").content == DATA
    for _ in range(2):
        bad = client.get("/always").content
        assert len(bad) == len(DATA)
        assert bad != DATA


def test_combined_faults_fire_one_after_another(
    archive: FaultArchive, client: httpx.Client
) -> None:
    archive.add("c", DATA, faults=Faults(fail_first=1, reset_first=1, truncate_first=1))
    assert client.get("/c").status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/c")
    assert len(client.get("/c").content) < len(DATA)
    assert client.get("/c").content == DATA


def test_request_accounting(archive: FaultArchive, client: httpx.Client) -> None:
    archive.add("a", DATA)
    archive.add("b", DATA)
    before = time.monotonic()
    client.head("/a")
    client.get("/a")
    client.get("/b")
    client.post("/a")
    assert archive.count("GET") == 2
    assert archive.count("get", "a") == 1
    assert archive.count("HEAD", "a") == 1
    assert archive.count("POST", "b") == 0
    log = archive.requests
    assert [(m, i) for _, m, i in log] == [("HEAD", "a"), ("GET", "a"), ("GET", "b"), ("POST", "a")]
    assert all(t >= before for t, _, _ in log)
    assert [t for t, _, _ in log] == sorted(t for t, _, _ in log)
    archive.reset_counts()
    assert archive.requests == []
    assert archive.count("GET") == 0
