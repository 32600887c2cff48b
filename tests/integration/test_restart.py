"""Orders survive a crash: SIGKILL cartd mid-cart, start it again, the cart completes,
and no file that was already verified is pulled from the archive a second time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, entry, new_id
from tests.support.cartd_server import wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.tars import tar_files


def staged(url: str, uid: str) -> int:
    return int(httpx.head(f"{url}/{uid}").headers.get("X-Pacifica-Files-Staged", "0"))


def test_killed_server_resumes_without_pulling_verified_files_again(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    workdir = tmp_path / "crashy"
    quick = {f"quick/{i}.dat": f"quick {i}\n".encode() * (i + 1) for i in range(20)}
    tape = {f"tape/{i}.dat": f"tape {i}\n".encode() * 50 for i in range(5)}
    fileids, ids_of = [], {}
    for path, data in {**quick, **tape}.items():
        file_id = new_id()
        faults = Faults(tape_seconds=3.0) if path.startswith("tape") else None
        fault_archive.add(file_id, data, faults=faults)
        fileids.append(entry(file_id, data, path, "sha256"))
        ids_of[path] = file_id

    server = cartd_factory(fault_archive.url, workdir=workdir)
    uid = new_id("crash")
    assert httpx.post(f"{server.url}/{uid}", json={"fileids": fileids}).status_code == 201
    wait_until(lambda: staged(server.url, uid) >= len(quick), timeout=30)
    assert staged(server.url, uid) == len(quick), "tape files cannot be staged yet"
    server.kill()

    restarted = cartd_factory(fault_archive.url, workdir=workdir)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        head = wait_for_cart(client, uid, timeout=60)
        assert head.headers["X-Pacifica-Status"] == "ready", head.headers
        files = tar_files(client.get(f"/{uid}?filename=out").content)
    assert files == {f"out/{path}": data for path, data in {**quick, **tape}.items()}
    pulls = {path: fault_archive.count("GET", file_id) for path, file_id in ids_of.items()}
    assert all(count == 1 for count in pulls.values()), pulls


def test_kill_during_pulls_still_ends_with_a_correct_cart(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    workdir = tmp_path / "crashy"
    payload = {f"slow/{i}.bin": hashlib.sha512(str(i).encode()).digest() * 4000 for i in range(8)}
    fileids = []
    for path, data in payload.items():
        file_id = new_id()
        fault_archive.add(file_id, data, faults=Faults(delay_first=1, delay_seconds=0.5))
        fileids.append(entry(file_id, data, path))
    server = cartd_factory(fault_archive.url, workdir=workdir, CARTD_STAGE_WORKERS="2")
    uid = new_id("crash")
    httpx.post(f"{server.url}/{uid}", json={"fileids": fileids, "bundle": True})
    wait_until(lambda: fault_archive.count("GET") >= 3, timeout=30)
    server.kill()

    restarted = cartd_factory(fault_archive.url, workdir=workdir, CARTD_STAGE_WORKERS="2")
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        head = wait_for_cart(client, uid, timeout=60)
        assert head.headers["X-Pacifica-Status"] == "ready", head.headers
        files = tar_files(client.get(f"/{uid}").content)
    assert files == {f"{uid}/{path}": data for path, data in payload.items()}
    in_flight_at_kill = 2
    assert fault_archive.count("GET") <= len(payload) + in_flight_at_kill
    partials = list((workdir / "volume").rglob("partial/*"))
    assert partials == []


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_a_file_in_place_but_not_yet_recorded_is_checked_again_after_a_crash(
    tampered: bool,
    fault_archive: FaultArchive,
    cartd_factory: ServerFactory,
    tmp_path: Path,
) -> None:
    """Verified files are recorded in groups, after they are moved into place. Killed in
    between, cartd checks the bytes found in place: the right ones are kept, not pulled
    again; wrong ones are pulled again."""
    workdir = tmp_path / "crashy"
    first, second = b"first file\n" * 300, b"second file\n" * 300
    first_id, second_id = new_id(), new_id()
    fault_archive.add(first_id, first)
    # The second pull stalls, holding the first file's group unrecorded meanwhile.
    fault_archive.add(second_id, second, faults=Faults(delay_first=1, delay_seconds=60))
    fileids = [entry(first_id, first, "a/first.txt"), entry(second_id, second, "b/second.txt")]
    # One worker takes both files in one batch, the first one first.
    server = cartd_factory(fault_archive.url, workdir=workdir, CARTD_STAGE_WORKERS="1")
    uid = new_id("crash")
    assert httpx.post(f"{server.url}/{uid}", json={"fileids": fileids}).status_code == 201

    def in_place() -> list[Path]:
        return list((workdir / "volume").glob("carts/*/files/*"))

    wait_until(lambda: len(in_place()) == 1 and fault_archive.count("GET", second_id) == 1)
    assert staged(server.url, uid) == 0, "recorded only with its group"
    server.kill()
    if tampered:
        in_place()[0].write_bytes(b"not the first file\n" * 300)

    restarted = cartd_factory(fault_archive.url, workdir=workdir)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        head = wait_for_cart(client, uid)
        assert head.headers["X-Pacifica-Status"] == "ready", head.headers
        files = tar_files(client.get(f"/{uid}?filename=out").content)
    assert files == {"out/a/first.txt": first, "out/b/second.txt": second}
    assert fault_archive.count("GET", first_id) == (2 if tampered else 1)
    assert fault_archive.count("GET", second_id) == 2
