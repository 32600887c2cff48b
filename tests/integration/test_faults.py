"""Faults the real archive cannot produce on demand, injected by an archive that speaks its HTTP.

Every case ends with the cart ready and byte-exact, or in error with a message
naming the file and the cause; no wrong byte is ever served.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import entry, new_id
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults

DATA = bytes(range(256)) * 2048  # 512 KiB: several chunks on the wire


@pytest.fixture(scope="module")
def archive() -> Iterator[FaultArchive]:
    with FaultArchive() as fault_archive:
        yield fault_archive


@pytest.fixture(scope="module")
def server(
    archive: FaultArchive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CartdServer]:
    workdir = tmp_path_factory.mktemp("cartd-faults")
    env = {
        "ARCHIVE_INTERFACE_URL": archive.url,
        "VOLUME_PATH": str(workdir / "vol"),
        "CARTD_ARCHIVE_TIMEOUT": "1",
        "TRANSFER_SIZE": "64 KiB",
    }
    with CartdServer(workdir, env) as cartd:
        yield cartd


@pytest.fixture
def client(server: CartdServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def order(
    client: httpx.Client, archive: FaultArchive, faults: Faults, data: bytes = DATA
) -> tuple[str, str]:
    file_id = new_id()
    archive.add(file_id, data, mtime=1_500_000_000, faults=faults)
    uid = new_id("cart")
    response = client.post(f"/{uid}", json={"fileids": [entry(file_id, data, "dir/file.bin")]})
    assert response.status_code == 201
    return uid, file_id


def assert_served_exactly(client: httpx.Client, uid: str, data: bytes) -> None:
    response = client.get(f"/{uid}?filename=out")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r|") as tar:
        for info in tar:
            if info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                assert info.name == "out/dir/file.bin"
                assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(data).digest()
                assert info.mtime == 1_500_000_000
                return
    raise AssertionError("no file in the tar")


@pytest.mark.parametrize(
    "faults",
    [
        Faults(fail_first=3),
        Faults(reset_first=2),
        Faults(truncate_first=2),
        Faults(delay_first=1, delay_seconds=3.0),
        Faults(fail_first=1, reset_first=1, truncate_first=1),
    ],
    ids=["500s", "resets", "truncated", "timeout", "mixed"],
)
def test_transient_faults_are_retried_to_a_correct_cart(
    client: httpx.Client, archive: FaultArchive, faults: Faults
) -> None:
    uid, file_id = order(client, archive, faults)
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready", head.headers
    clean_run = 3  # POST, HEAD, GET
    assert sum(1 for _, _, fid in archive.requests if fid == file_id) > clean_run
    assert_served_exactly(client, uid, DATA)


def test_file_on_tape_is_polled_with_growing_delay(
    client: httpx.Client, archive: FaultArchive
) -> None:
    uid, file_id = order(client, archive, Faults(tape_seconds=2.0))
    wait_until(lambda: archive.count("POST", file_id) == 1)  # asked to stage: on tape
    head = client.head(f"/{uid}")
    assert head.headers["X-Pacifica-Status"] == "staging"
    assert head.headers["X-Pacifica-Phase"] == "staging"
    assert client.get(f"/{uid}").status_code == 202
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready"
    heads = [t for t, method, fid in archive.requests if method == "HEAD" and fid == file_id]
    gaps = [later - earlier for earlier, later in itertools.pairwise(heads)]
    # 2 s of tape with polls starting at 50 ms: a fixed 50 ms poll would take 40.
    assert len(heads) <= 12, len(heads)
    assert gaps[-1] > gaps[0] * 2, gaps
    assert archive.count("GET", file_id) == 1
    assert_served_exactly(client, uid, DATA)


#: Big enough to be written on a helper thread, and not a whole number of blocks.
LARGE = bytes(range(256)) * (40 * 1024) + b"tail"


def test_a_large_file_broken_off_and_then_truncated_is_pulled_again_whole(
    client: httpx.Client, archive: FaultArchive, server: CartdServer
) -> None:
    uid, file_id = order(client, archive, Faults(reset_first=1, truncate_first=1), data=LARGE)
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready", head.headers
    assert archive.count("GET", file_id) == 3
    assert_served_exactly(client, uid, LARGE)
    partials = [p for p in (server.workdir / "vol" / "carts").rglob("*") if "partial" in p.parts]
    assert all(p.is_dir() for p in partials), partials


@pytest.mark.parametrize(
    ("faults", "cause"),
    [
        (Faults(corrupt_always=True), "checksum mismatch"),
        (Faults(corrupt_first=1), "checksum mismatch"),
        (Faults(not_found=True), "no such file"),
        (Faults(fail_first=1000), "archive answered 500"),
        (Faults(reset_first=1000), "GET broke off"),
    ],
    ids=["corrupt", "corrupt-once", "404", "500-forever", "reset-forever"],
)
def test_lasting_faults_end_the_cart_in_error_naming_file_and_cause(
    client: httpx.Client, archive: FaultArchive, faults: Faults, cause: str
) -> None:
    uid, file_id = order(client, archive, faults)
    head = wait_for_cart(client, uid)
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"
    message = head.headers["X-Pacifica-Message"]
    assert file_id in message
    assert "dir/file.bin" in message
    assert cause in message
    assert "Traceback" not in message
    body = client.get(f"/{uid}")
    assert body.status_code == 500
    assert cause in body.json()["message"]


def test_permanent_faults_are_not_retried(client: httpx.Client, archive: FaultArchive) -> None:
    uid, file_id = order(client, archive, Faults(not_found=True))
    wait_for_cart(client, uid)
    asked = [method for _, method, fid in archive.requests if fid == file_id]
    assert asked == ["HEAD"], "a 404 is final: no retry, no stage, no pull"


def test_no_partial_file_is_left_as_staged(
    client: httpx.Client, archive: FaultArchive, server: CartdServer
) -> None:
    uid, _ = order(client, archive, Faults(corrupt_always=True))
    wait_for_cart(client, uid)
    leftovers = [p for p in Path(server.workdir / "vol" / "carts").rglob("*") if p.is_file()]
    assert all("partial" not in p.parts for p in leftovers), leftovers
