"""The cache volume over real HTTP: reservations, eviction by use, no space, delete in flight."""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import FileEntry, ServerFactory, entry, new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults

Store = Callable[..., list[FileEntry]]
KB = 1000


def blob(size: int) -> bytes:
    return os.urandom(size)


def order(server: CartdServer, fileids: list[FileEntry], **extra: object) -> str:
    uid = new_id("vol")
    response = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids, **extra})
    assert response.status_code == 201
    return uid


def settle(server: CartdServer, uid: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return wait_for_cart(client, uid)


def status(server: CartdServer, uid: str) -> str:
    head = httpx.head(f"{server.url}/{uid}")
    return "gone" if head.status_code == 404 else head.headers["X-Pacifica-Status"]


def cart_dirs(server: CartdServer) -> list[Path]:
    root = server.workdir / "volume" / "carts"
    return sorted(root.iterdir()) if root.exists() else []


def metric(server: CartdServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.mark.archive
def test_eviction_follows_use_not_creation(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url, VOLUME_SIZE_LIMIT="100 kB")
    older = order(server, store_files({"a.bin": blob(40 * KB)}))
    newer = order(server, store_files({"b.bin": blob(40 * KB)}))
    assert settle(server, older).headers["X-Pacifica-Status"] == "ready"
    assert settle(server, newer).headers["X-Pacifica-Status"] == "ready"
    assert httpx.get(f"{server.url}/{older}").status_code == 200  # the older one is used

    third = order(server, store_files({"c.bin": blob(40 * KB)}))
    assert settle(server, third).headers["X-Pacifica-Status"] == "ready"
    assert status(server, newer) == "gone", "the least recently used cart is evicted"
    assert status(server, older) == "ready"
    assert len(cart_dirs(server)) == 2
    assert metric(server, "cartd_carts_evicted_total") == 1
    assert metric(server, "cartd_volume_reserved_bytes") == 80 * KB


@pytest.mark.archive
def test_recent_use_within_buffer_time_is_safe_and_no_space_keeps_nothing(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(
        archive_interface.url, VOLUME_SIZE_LIMIT="100 kB", LRU_BUFFER_TIME="3600"
    )
    first = order(server, store_files({"a.bin": blob(60 * KB)}))
    assert settle(server, first).headers["X-Pacifica-Status"] == "ready"
    second = order(server, store_files({"b.bin": blob(60 * KB)}))
    head = settle(server, second)
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"
    assert head.headers["X-Pacifica-Message"] == "No Space Available"
    assert status(server, first) == "ready"
    assert len(cart_dirs(server)) == 1, "the refused cart keeps nothing on disk"


@pytest.mark.archive
def test_cart_bigger_than_the_volume_is_refused_without_evicting(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url, VOLUME_SIZE_LIMIT="100 kB")
    kept = order(server, store_files({"a.bin": blob(10 * KB)}))
    settle(server, kept)
    huge = order(server, store_files({"h1.bin": blob(60 * KB), "h2.bin": blob(60 * KB)}))
    head = settle(server, huge)
    assert head.headers["X-Pacifica-Message"] == "No Space Available"
    assert status(server, kept) == "ready"


@pytest.mark.archive
def test_bundled_cart_reserves_room_for_its_tar(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url, VOLUME_SIZE_LIMIT="100 kB", LRU_PURGE="off")
    files = {"x.bin": blob(30 * KB), "y.bin": blob(30 * KB)}
    bundled = order(server, store_files(files), bundle=True)
    assert settle(server, bundled).headers["X-Pacifica-Message"] == "No Space Available"
    streamed = order(server, store_files(files), bundle=False)
    assert settle(server, streamed).headers["X-Pacifica-Status"] == "ready"


@pytest.mark.archive
def test_concurrent_carts_share_the_volume_without_overcommitting(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url, VOLUME_SIZE_LIMIT="100 kB", LRU_PURGE="off")
    orders = [store_files({f"{n}.bin": blob(30 * KB)}) for n in range(5)]
    uids = [order(server, fileids) for fileids in orders]
    heads = {uid: settle(server, uid) for uid in uids}
    ready = [uid for uid, head in heads.items() if head.headers["X-Pacifica-Status"] == "ready"]
    refused = [uid for uid, head in heads.items() if head.status_code == 500]
    assert len(ready) == 3, "three carts of 30 kB fit in 100 kB, and no more"
    assert len(refused) == 2
    assert all(heads[uid].headers["X-Pacifica-Message"] == "No Space Available" for uid in refused)
    for uid in ready:
        assert httpx.delete(f"{server.url}/{uid}").status_code == 200
    again = order(server, store_files({"again.bin": blob(90 * KB)}))
    assert settle(server, again).headers["X-Pacifica-Status"] == "ready", "space was released"


def test_cart_in_progress_is_never_evicted(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url, VOLUME_SIZE_LIMIT="100 kB")

    def put(size: int, faults: Faults | None = None) -> list[FileEntry]:
        file_id, data = new_id(), blob(size)
        fault_archive.add(file_id, data, faults=faults)
        return [entry(file_id, data, f"{file_id}.bin")]

    done = order(server, put(40 * KB))
    assert settle(server, done).headers["X-Pacifica-Status"] == "ready"
    on_tape = order(server, put(40 * KB, Faults(tape_seconds=60)))
    wait_until(
        lambda: httpx.head(f"{server.url}/{on_tape}").headers["X-Pacifica-Phase"] == "staging"
    )
    wait_until(lambda: metric(server, "cartd_volume_reserved_bytes") == 80 * KB)

    newcomer = order(server, put(40 * KB))
    assert settle(server, newcomer).headers["X-Pacifica-Status"] == "ready"
    assert status(server, done) == "gone", "the ready cart made room"
    assert status(server, on_tape) == "staging", "the cart in progress was left alone"

    last = order(server, put(40 * KB))
    assert settle(server, last).headers["X-Pacifica-Status"] == "ready"
    assert status(server, newcomer) == "gone"
    assert status(server, on_tape) == "staging", "still left alone"


@pytest.mark.archive
def test_cart_being_downloaded_is_not_evicted(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    # Bigger than the loopback socket buffers, so the server is still sending when the
    # newcomer arrives.
    server = cartd_factory(archive_interface.url, VOLUME_SIZE_LIMIT="60 MB", TRANSFER_SIZE="64 KiB")
    data = blob(40_000 * KB)
    busy = order(server, store_files({"big.bin": data}))
    assert settle(server, busy).headers["X-Pacifica-Status"] == "ready"
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{server.url}/{busy}?filename=d") as download,
    ):
        chunks = download.iter_raw(64 * 1024)
        received = [next(chunks)]
        newcomer = order(server, store_files({"n.bin": blob(30_000 * KB)}))
        head = settle(server, newcomer)
        assert head.headers["X-Pacifica-Message"] == "No Space Available"
        received.extend(chunks)
    with tarfile.open(fileobj=io.BytesIO(b"".join(received)), mode="r|") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                assert handle.read() == data
    assert status(server, busy) == "ready"


def test_delete_while_a_file_is_being_pulled_cuts_the_pull_within_a_second(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    file_id, data = new_id(), blob(300 * KB)
    fault_archive.add(file_id, data, faults=Faults(delay_first=1, delay_seconds=60))
    uid = order(server, [entry(file_id, data, "slow.bin")])
    wait_until(lambda: fault_archive.count("GET", file_id) == 1)
    assert httpx.delete(f"{server.url}/{uid}").status_code == 200
    deleted = time.monotonic()
    assert status(server, uid) == "gone"
    # cartd hangs up on the stalled GET rather than waiting a minute for it.
    wait_until(lambda: bool(fault_archive.departures(file_id)), timeout=5)
    assert fault_archive.departures(file_id)[0] - deleted < 1.0
    wait_until(lambda: cart_dirs(server) == [], timeout=5)
    assert fault_archive.count("GET", file_id) == 1, "the pull was tried again"
    assert status(server, uid) == "gone"


def test_delete_while_a_cart_is_being_sized_stops_asking_the_archive(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    fileids = []
    for index in range(200):
        file_id, data = new_id(), b"%d" % index
        fault_archive.add(file_id, data, faults=Faults(head_seconds=0.1))
        fileids.append(entry(file_id, data, f"f/{index}"))
    uid = order(server, fileids)  # sizing them all takes 5 s, four HEADs at a time
    wait_until(lambda: fault_archive.count("HEAD") >= 5)
    assert httpx.delete(f"{server.url}/{uid}").status_code == 200
    deleted = time.monotonic()
    # Watch the archive for a while: nothing may be asked of it a second after the DELETE.
    time.sleep(2.0)
    late = [when for when, method, _ in fault_archive.requests if when > deleted + 1.0]
    assert late == [], f"{len(late)} archive requests after the DELETE"
    assert fault_archive.count("HEAD") < 100
    assert cart_dirs(server) == []


def _folder_archive(root: Path, count: int, size: int, prefix: str) -> list[FileEntry]:
    """`count` files of `size` bytes in a folder served as a `file://` archive."""
    (root / prefix).mkdir(parents=True)
    fileids = []
    for index in range(count):
        data = ((b"%08d" % index) * (size // 8 + 1))[:size]
        (root / prefix / str(index)).write_bytes(data)
        fileids.append(entry(f"{prefix}/{index}", data, f"{prefix}/{index}.bin"))
    return fileids


def test_a_large_cart_pulls_while_it_is_still_being_sized_and_is_sized_ahead_of_its_pulls(
    cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "archive"
    fileids = _folder_archive(folder, 20_000, 8, "many")
    server = cartd_factory(f"file://{folder}")
    uid = new_id("many")
    response = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids}, timeout=30)
    assert response.status_code == 201
    seen: list[dict[str, object]] = []

    def pulling() -> bool:
        view = httpx.get(f"{server.url}/{uid}/files", timeout=30).json()
        seen[:] = view["files"]
        return any(file["status"] == "staged" for file in seen)

    wait_until(pulling, timeout=30, interval=0.2)
    unsized = [file for file in seen if file["size"] is None]
    assert unsized, "every file was sized before the first was verified"

    # Sized ahead of the pulls, from the last file back: every size is known long before
    # the last pull, and a download with `Prefer: wait` (which needs them) begins then.
    def sized() -> bool:
        view = httpx.get(f"{server.url}/{uid}/files", timeout=30).json()
        seen[:] = view["files"]
        return all(file["size"] is not None for file in seen)

    wait_until(sized, timeout=60, interval=0.2)
    staged = sum(file["status"] == "staged" for file in seen)
    assert staged < len(fileids) / 2, f"{staged} of {len(fileids)} pulled when all were sized"
    with httpx.stream("GET", f"{server.url}/{uid}", headers={"Prefer": "wait=5"}) as live:
        assert live.status_code == 200
        assert live.headers["Preference-Applied"] == "wait"
    assert httpx.delete(f"{server.url}/{uid}", timeout=30).status_code == 200
    wait_until(lambda: cart_dirs(server) == [], timeout=10)


def test_a_cart_refused_midway_gives_back_its_space_and_keeps_nothing(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url, VOLUME_SIZE_LIMIT="100 kB")
    fileids, first_ids = [], []
    for index in range(40):
        file_id, data = new_id(), blob(5 * KB)
        # The first half is sized at once and fits (100 kB): pulled before the rest,
        # whose sizing is slow, asks for more than the volume holds.
        slow = Faults(head_seconds=0.3) if index >= 20 else None
        fault_archive.add(file_id, data, faults=slow)
        fileids.append(entry(file_id, data, f"{index}.bin"))
        if index < 20:
            first_ids.append(file_id)
    uid = order(server, fileids)
    head = settle(server, uid)
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Message"] == "No Space Available"
    assert sum(fault_archive.count("GET", file_id) for file_id in first_ids) > 0, (
        "no file was pulled before the cart was refused"
    )
    wait_until(lambda: cart_dirs(server) == [], timeout=10)
    view = httpx.get(f"{server.url}/{uid}/files").json()
    assert all(file["status"] != "staged" for file in view["files"]), "keeps nothing"
    assert metric(server, "cartd_volume_reserved_bytes") == 0, "its space was given back"
    again = order(server, store_in(fault_archive, 90 * KB))
    assert settle(server, again).headers["X-Pacifica-Status"] == "ready"


def store_in(fault_archive: FaultArchive, size: int) -> list[FileEntry]:
    file_id, data = new_id(), blob(size)
    fault_archive.add(file_id, data)
    return [entry(file_id, data, f"{file_id}.bin")]


def test_carts_growing_together_never_hold_the_same_bytes(
    cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "archive"
    first = _folder_archive(folder, 20, 3 * KB, "one")
    second = _folder_archive(folder, 20, 3 * KB, "two")
    server = cartd_factory(f"file://{folder}", VOLUME_SIZE_LIMIT="100 kB", LRU_PURGE="off")
    uids = [order(server, first), order(server, second)]
    heads = {uid: settle(server, uid) for uid in uids}
    ready = [uid for uid, head in heads.items() if head.headers["X-Pacifica-Status"] == "ready"]
    refused = [uid for uid, head in heads.items() if head.status_code == 500]
    assert len(ready) == 1, "two carts of 60 kB do not both fit in 100 kB; one does"
    assert [heads[uid].headers["X-Pacifica-Message"] for uid in refused] == ["No Space Available"]
    wait_until(lambda: len(cart_dirs(server)) == 1, timeout=10)
    assert metric(server, "cartd_volume_reserved_bytes") == 20 * 3 * KB
