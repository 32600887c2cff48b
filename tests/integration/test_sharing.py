"""One recall for many carts: carts (or files of one cart) that name the same archive file
with the same checksum pull it once and share one copy on the volume.

Real cartd processes on loopback against the fault-injecting archive, which counts the
requests for every file id; in distributed mode, real workers on a real broker and
database.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, entry, new_id
from tests.support.cartd_server import CartdServer, wait_for_cart
from tests.support.cells import RABBITMQ_POSTGRES
from tests.support.cluster import cluster, post
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.tars import tar_files

KB = 1000


def stored(archive: FaultArchive, size: int, faults: Faults | None = None) -> tuple[str, bytes]:
    file_id, data = new_id("shared"), os.urandom(size)
    archive.add(file_id, data, mtime=1_600_000_000, faults=faults)
    return file_id, data


def make(client: httpx.Client, files: dict[str, tuple[str, bytes]]) -> str:
    """Order a cart of {path: (archive id, bytes)}; its uid."""
    uid = new_id("cart")
    post(client, uid, [entry(file_id, data, path) for path, (file_id, data) in files.items()])
    return uid


def assert_serves(client: httpx.Client, uid: str, files: dict[str, tuple[str, bytes]]) -> None:
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
    download = client.get(f"/{uid}", params={"filename": "d.tar"})
    assert download.status_code == 200, download.text
    assert tar_files(download.content) == {f"d/{path}": data for path, (_, data) in files.items()}


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def links(server: CartdServer) -> dict[int, int]:
    """Each verified file's link count on the volume, by inode."""
    root = server.workdir / "volume" / "carts"
    found = {}
    for path in root.glob("*/files/*"):
        stat = path.stat()
        found[stat.st_ino] = stat.st_nlink
    return found


def test_two_carts_posted_at_once_pull_each_shared_file_once_and_outlive_each_other(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    # Each shared file's pull stalls, so the second cart's steps meet the first's pull.
    slow = Faults(delay_first=1, delay_seconds=0.5)
    shared = {f"s/{n}.bin": stored(fault_archive, (20 + n) * KB, slow) for n in range(3)}
    own_a = {"a.bin": stored(fault_archive, 5 * KB)}
    own_b = {"b.bin": stored(fault_archive, 6 * KB)}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = make(client, {**shared, **own_a})
        second = make(client, {**own_b, **shared})
        assert_serves(client, first, {**shared, **own_a})
        assert_serves(client, second, {**own_b, **shared})
        for file_id, _ in [*shared.values(), *own_a.values(), *own_b.values()]:
            assert fault_archive.count("GET", file_id) == 1, file_id
            assert fault_archive.count("POST", file_id) == 0, file_id
        assert metric(client, "cartd_files_shared_total") == 3
        assert sorted(links(server).values()) == [1, 1, 2, 2, 2], "one copy, linked twice"
        shared_bytes = sum(len(data) for _, data in shared.values())
        assert metric(client, "cartd_volume_used_bytes") == shared_bytes + 11 * KB

        assert client.delete(f"/{first}").status_code == 200
        assert_serves(client, second, {**own_b, **shared})
        assert sorted(links(server).values()) == [1, 1, 1, 1]
        assert metric(client, "cartd_volume_used_bytes") == shared_bytes + 6 * KB


def test_a_cart_ordered_later_links_what_an_earlier_one_holds_and_fits_where_two_copies_would_not(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url, VOLUME_SIZE_LIMIT="100 kB")
    big = {"big.bin": stored(fault_archive, 50 * KB)}
    other = {"other.bin": stored(fault_archive, 30 * KB)}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = make(client, {**big, **other})
        assert_serves(client, first, {**big, **other})
        # 80 kB held, 50 kB more would not fit in 100 kB: but they are the same 50 kB.
        second = make(client, {"again/big.bin": big["big.bin"]})
        assert_serves(client, second, {"again/big.bin": big["big.bin"]})
        assert fault_archive.count("GET", big["big.bin"][0]) == 1
        assert metric(client, "cartd_volume_used_bytes") == 80 * KB
        assert metric(client, "cartd_volume_reserved_bytes") == 80 * KB
        assert metric(client, "cartd_carts_evicted_total") == 0

        # 40 kB more: the least recently used cart (the first) is evicted, which frees only
        # the 30 kB no other cart names; the shared 50 kB stay with the second cart.
        newcomer = {"new.bin": stored(fault_archive, 40 * KB)}
        third = make(client, newcomer)
        assert_serves(client, third, newcomer)
        assert client.head(f"/{first}").status_code == 404
        assert metric(client, "cartd_carts_evicted_total") == 1
        assert metric(client, "cartd_bytes_evicted_total") == 30 * KB
        assert_serves(client, second, {"again/big.bin": big["big.bin"]})
        assert metric(client, "cartd_volume_used_bytes") == 90 * KB
        assert metric(client, "cartd_volume_reserved_bytes") == 90 * KB
        assert fault_archive.count("GET", big["big.bin"][0]) == 1


def test_a_cart_whose_files_are_all_in_another_frees_nothing_and_is_not_evicted_for_room(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url, VOLUME_SIZE_LIMIT="100 kB")
    big = {"big.bin": stored(fault_archive, 50 * KB)}
    other = {"other.bin": stored(fault_archive, 30 * KB)}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        copy = make(client, big)  # least recently used: all of its bytes are shared below
        assert_serves(client, copy, big)
        holder = make(client, {**big, **other})
        # (Not downloaded: a download's lease would keep it from eviction a moment longer.)
        assert wait_for_cart(client, holder).headers["X-Pacifica-Status"] == "ready"
        newcomer = {"new.bin": stored(fault_archive, 40 * KB)}
        third = make(client, newcomer)
        assert_serves(client, third, newcomer)
        # The copy was skipped: evicting it would have freed nothing.
        assert client.head(f"/{copy}").headers["X-Pacifica-Status"] == "ready"
        assert client.head(f"/{holder}").status_code == 404
        assert_serves(client, copy, big)
        assert metric(client, "cartd_bytes_evicted_total") == 30 * KB
        assert fault_archive.count("GET", big["big.bin"][0]) == 1


def test_carts_that_share_their_files_are_evicted_together_when_only_both_make_room(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url, VOLUME_SIZE_LIMIT="100 kB")
    big = stored(fault_archive, 50 * KB)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = make(client, {"big.bin": big})
        assert wait_for_cart(client, first).headers["X-Pacifica-Status"] == "ready"
        second = make(client, {"again/big.bin": big})
        assert wait_for_cart(client, second).headers["X-Pacifica-Status"] == "ready"
        assert metric(client, "cartd_volume_reserved_bytes") == 50 * KB
        # 60 kB more: neither cart frees the shared 50 kB alone, both together do.
        newcomer = {"new.bin": stored(fault_archive, 60 * KB)}
        third = make(client, newcomer)
        assert_serves(client, third, newcomer)
        assert client.head(f"/{first}").status_code == 404
        assert client.head(f"/{second}").status_code == 404
        assert metric(client, "cartd_carts_evicted_total") == 2
        assert metric(client, "cartd_bytes_evicted_total") == 50 * KB
        assert metric(client, "cartd_volume_used_bytes") == 60 * KB
        assert list(links(server).values()) == [1], "only the newcomer's file is left"


def test_two_files_of_one_cart_naming_one_archive_file_pull_it_once(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    file = stored(fault_archive, 30 * KB, Faults(delay_first=1, delay_seconds=0.3))
    files = {"one/x.bin": file, "two/x.bin": file, "three/x.bin": file}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        uid = make(client, files)
        assert_serves(client, uid, files)
        assert fault_archive.count("GET", file[0]) == 1
        assert metric(client, "cartd_volume_used_bytes") == 30 * KB
        assert metric(client, "cartd_volume_reserved_bytes") == 30 * KB


def test_two_carts_naming_a_file_on_tape_ask_for_it_to_be_staged_once(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    on_tape = {"t.bin": stored(fault_archive, 10 * KB, Faults(tape_seconds=1.0))}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        uids = [make(client, on_tape) for _ in range(2)]
        for uid in uids:
            assert_serves(client, uid, on_tape)
    file_id = on_tape["t.bin"][0]
    assert fault_archive.count("POST", file_id) == 1
    assert fault_archive.count("GET", file_id) == 1


def test_a_file_ordered_with_another_checksum_is_not_shared(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    file_id, data = stored(fault_archive, 20 * KB)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        md5 = new_id("cart")
        post(client, md5, [entry(file_id, data, "x.bin")])
        assert wait_for_cart(client, md5).headers["X-Pacifica-Status"] == "ready"

        sha = new_id("cart")
        post(client, sha, [entry(file_id, data, "x.bin", hashtype="sha256")])
        assert wait_for_cart(client, sha).headers["X-Pacifica-Status"] == "ready"
        assert fault_archive.count("GET", file_id) == 2, "another checksum: pulled again"

        wrong = new_id("cart")
        bad = {**entry(file_id, data, "x.bin"), "hashsum": hashlib.md5(b"other").hexdigest()}
        post(client, wrong, [bad])
        head = wait_for_cart(client, wrong)
        assert head.headers["X-Pacifica-Status"] == "error"
        assert "checksum mismatch" in head.headers["X-Pacifica-Message"]
        assert fault_archive.count("GET", file_id) == 3, "pulled, and found not to match"
        for uid in (md5, sha):
            download = client.get(f"/{uid}", params={"filename": "d.tar"})
            assert tar_files(download.content) == {"d/x.bin": data}


@pytest.mark.parametrize("cell", [RABBITMQ_POSTGRES])
def test_two_carts_on_two_workers_pull_each_shared_file_once(
    cell: tuple[str, str], fault_archive: FaultArchive, tmp_path: Path
) -> None:
    broker, database = cell
    slow = Faults(delay_first=1, delay_seconds=0.3)
    shared = {f"s/{n}.bin": stored(fault_archive, (10 + n) * KB, slow) for n in range(6)}
    own = [{f"own{m}.bin": stored(fault_archive, 3 * KB)} for m in range(2)]
    with (
        cluster(tmp_path, fault_archive.url, broker, database, workers=2) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        uids = [make(client, {**shared, **mine}) for mine in own]
        for uid, mine in zip(uids, own, strict=True):
            assert_serves(client, uid, {**shared, **mine})
    for file_id, _ in [*shared.values(), *own[0].values(), *own[1].values()]:
        assert fault_archive.count("GET", file_id) == 1, file_id
