"""Several processes on one database and volume: every archive file is pulled once.

Two `cartd serve` processes share a PostgreSQL database and a volume, as the API
processes of one host do. Each runs its staging runner, which sweeps the database for
unfinished work every few seconds, so each finds the other's carts: without a claim
on file rows both would pull the same files.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, new_id, run_cartd, scratch_database
from tests.support.cartd_server import wait_for_cart
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.tars import tar_files

pytestmark = pytest.mark.postgres


def test_two_processes_pull_every_file_exactly_once(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    carts: dict[str, dict[str, bytes]] = {}
    orders: dict[str, list[dict[str, str]]] = {}
    for _ in range(3):
        uid = new_id("shared")
        carts[uid], orders[uid] = {}, []
        for index in range(16):
            file_id, data = new_id(), f"{uid}/{index}\n".encode() * 500
            # Slow pulls: each cart takes seconds, so the other process's sweep finds
            # files still to pull while the first is pulling them.
            fault_archive.add(file_id, data, faults=Faults(delay_first=1, delay_seconds=1.0))
            carts[uid][f"d/{index}.bin"] = data
            orders[uid].append(
                {
                    "id": file_id,
                    "path": f"d/{index}.bin",
                    "hashtype": "md5",
                    "hashsum": hashlib.md5(data).hexdigest(),
                }
            )
    with scratch_database("postgres") as url:
        env = {"PEEWEE_URL": url, "VOLUME_PATH": str(tmp_path / "shared-volume")}
        synced = run_cartd("dbsync", env={"HOME": str(tmp_path), **env})
        assert synced.returncode == 0, synced.stderr
        servers = [
            cartd_factory(fault_archive.url, workdir=tmp_path / f"api{n}", **env) for n in (0, 1)
        ]
        for number, (uid, fileids) in enumerate(orders.items()):
            server = servers[number % 2]
            answer = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids}, timeout=30)
            assert answer.status_code == 201
        for number, uid in enumerate(carts):
            with httpx.Client(base_url=servers[(number + 1) % 2].url, timeout=60) as client:
                assert (
                    wait_for_cart(client, uid, timeout=90).headers["X-Pacifica-Status"] == "ready"
                )
                body = client.get(f"/{uid}", params={"filename": "x"}).content
            assert tar_files(body) == {f"x/{path}": data for path, data in carts[uid].items()}
        gets = Counter(file_id for _, method, file_id in fault_archive.requests if method == "GET")
        pulled_twice = {file_id: count for file_id, count in gets.items() if count != 1}
        assert not pulled_twice, f"files pulled more than once: {pulled_twice}"
        assert len(gets) == 48
        both = [server for server in servers if "verified" in server.log()]
        assert len(both) == 2, "the work was not shared: one process did it all"
