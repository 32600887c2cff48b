"""Distributed mode under races and faults: many carts on two workers, a worker killed
mid-pull.

Real processes on loopback: `cartd serve` and `cartd worker`, the machine's RabbitMQ,
Redis, PostgreSQL and MariaDB, or private Redis and PostgreSQL servers that a test stops
and starts again; the fault-injecting archive counts every request and stalls a pull.
Kills are SIGKILL.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from cartd.db.engine import database_url
from tests.conftest import FileEntry, entry, new_id
from tests.support.cartd_server import wait_for_cart, wait_until
from tests.support.cluster import CELLS, Cluster, cluster, post
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.tars import tar_files

#: Archive requests that stall are not cut short by cartd's own timeout in these tests.
PATIENT = {"CARTD_ARCHIVE_TIMEOUT": "60"}


def stored(
    archive: FaultArchive, files: dict[str, bytes], faults: Faults | None = None
) -> list[FileEntry]:
    """Put files in the fault archive under new ids; the `fileids` that order them."""
    entries = []
    for path, data in files.items():
        file_id = new_id()
        archive.add(file_id, data, faults=faults)
        entries.append(entry(file_id, data, path))
    return entries


def pulls_per_file(archive: FaultArchive, orders: dict[str, list[FileEntry]]) -> dict[str, int]:
    """How many GETs the archive served of each file ordered."""
    return {
        order["id"]: archive.count("GET", order["id"])
        for entries in orders.values()
        for order in entries
    }


def assert_ready_and_correct(
    client: httpx.Client, uid: str, files: dict[str, bytes], timeout: float = 30.0
) -> None:
    head = wait_for_cart(client, uid, timeout=timeout)
    assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
    download = client.get(f"/{uid}", params={"filename": "d.tar"})
    assert download.status_code == 200, download.text
    assert tar_files(download.content) == {f"d/{path}": data for path, data in files.items()}


@contextmanager
def inspect(running: Cluster) -> Iterator[Engine]:
    """The cluster's database, to look at what the processes wrote."""
    engine = create_engine(database_url(running.env["PEEWEE_URL"], running.workdir))
    try:
        yield engine
    finally:
        engine.dispose()


def files_of_volume(running: Cluster) -> list[Path]:
    carts = Path(running.env["VOLUME_PATH"]) / "carts"
    return sorted(path for path in carts.rglob("*") if path.is_file()) if carts.exists() else []


def verified_on_volume(running: Cluster) -> list[Path]:
    """Files pulled, checked and moved into place (whether or not their rows say so)."""
    return [path for path in files_of_volume(running) if path.parent.name == "files"]


# -- sharing many carts ------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_two_workers_pull_every_file_of_many_carts_exactly_once(
    cell: tuple[str, str], fault_archive: FaultArchive, tmp_path: Path
) -> None:
    broker, database = cell
    carts = {
        new_id("many"): {
            f"c{cart}/f{index}.bin": f"{cart}:{index};".encode() * (50 + 40 * index)
            for index in range(10)
        }
        for cart in range(10)
    }
    orders = {uid: stored(fault_archive, files) for uid, files in carts.items()}
    with (
        cluster(tmp_path, fault_archive.url, broker, database, workers=2) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
        ThreadPoolExecutor(len(carts)) as pool,
    ):
        list(pool.map(lambda uid: post(client, uid, orders[uid]), carts))  # all at once
        for uid, files in carts.items():
            assert_ready_and_correct(client, uid, files, timeout=60)
        taken = [worker.tasks_run("cartd.files") for worker in running.workers]
    assert all(count >= 1 for count in taken), f"one worker did it all: {taken}"
    gets = pulls_per_file(fault_archive, orders)
    assert set(gets.values()) == {1}, {fid: n for fid, n in gets.items() if n != 1}


# -- a worker killed mid-pull ------------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_a_worker_killed_mid_pull_leaves_the_file_to_a_live_worker(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    files = {f"k{index}.bin": bytes([65 + index]) * 3000 for index in range(4)}
    stalled = {"stalled.bin": b"stalled, then killed\n" * 500}
    orders = stored(fault_archive, files)
    stall = stored(fault_archive, stalled, Faults(delay_first=1, delay_seconds=60))
    stalled_id = stall[0]["id"]
    env = {**PATIENT, "CARTD_CLAIM_SECONDS": "3"}
    with (
        cluster(tmp_path, fault_archive.url, "rabbitmq", "postgres", workers=2, env=env) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
        inspect(running) as db,
    ):
        post(client, "killed", [*orders, *stall])
        wait_until(lambda: fault_archive.count("GET", stalled_id) == 1)
        with db.connect() as connection:
            holder = connection.scalar(
                text("SELECT claimed_by FROM cart_files WHERE archive_id = :a"), {"a": stalled_id}
            )
        pid = int(holder.split(":")[1])
        [victim] = [w for w in running.workers if w.process and w.process.pid == pid]
        victim.kill()  # SIGKILL mid-pull: its message was never acknowledged

        assert_ready_and_correct(client, "killed", {**files, **stalled})
    pulls = [
        at for at, method, fid in fault_archive.requests if method == "GET" and fid == stalled_id
    ]
    assert len(pulls) == 2, pulls
    left = fault_archive.departures(stalled_id)
    assert len(left) == 1, "the killed worker's pull ended when it died"
    assert left[0] < pulls[1], "the second pull began while the first was still under way"
    assert all(fault_archive.count("GET", order["id"]) == 1 for order in orders)
