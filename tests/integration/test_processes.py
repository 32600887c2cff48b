"""Several API processes, and cartd under another ASGI server: `cartd serve --workers N`
on PostgreSQL, and `uvicorn cartd.asgi:app` with its settings from the environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import entry, new_id, run_cartd, scratch_database
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.metrics import own_counters, sample, scrape
from tests.support.tars import tar_files

#: Longer than the embedded runner's sweep (5 s): a second process sweeping the database
#: while a pull stalls would pull the same file again. The archive timeout is raised
#: above it, so the stall is not a fault to retry.
STALL = 5.5
PATIENT = {"CARTD_ARCHIVE_TIMEOUT": "30"}


def order_and_fetch(url: str, archive: FaultArchive, carts: int, files: int) -> dict[str, str]:
    """Order `carts` carts of `files` files (each first GET stalled), wait until all are
    ready, check every download; return file id -> cart uid."""
    placed: dict[str, dict[str, bytes]] = {}
    owners: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for number in range(carts):
            uid = new_id(f"multi{number}")
            contents, fileids = {}, []
            for index in range(files):
                file_id, data = new_id(), f"{uid} file {index}\n".encode() * 500
                archive.add(file_id, data, faults=Faults(delay_first=1, delay_seconds=STALL))
                fileids.append(entry(file_id, data, f"d/{index}.txt"))
                contents[f"c/d/{index}.txt"] = data
                owners[file_id] = uid
            response = client.post(f"/{uid}", json={"fileids": fileids})
            assert response.status_code == 201, response.text
            placed[uid] = contents
        for uid, contents in placed.items():
            head = wait_for_cart(client, uid, timeout=60)
            assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
            download = client.get(f"/{uid}?filename=c.tar")
            assert download.status_code == 200
            assert tar_files(download.content) == contents
    return owners


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_serve_with_two_processes_on_postgres_makes_every_cart_pulling_each_file_once(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    with scratch_database("postgres") as database:
        env = {
            "ARCHIVE_INTERFACE_URL": fault_archive.url,
            "VOLUME_PATH": str(tmp_path / "volume"),
            "PEEWEE_URL": database,
            **PATIENT,
        }
        synced = run_cartd("dbsync", env={"HOME": str(tmp_path), **env})
        assert synced.returncode == 0, synced.stderr
        with CartdServer(tmp_path / "two", env, args=["--workers", "2"]) as server:
            wait_until(lambda: server.log().count("cartd is serving carts from") == 2)
            log = server.log()
            assert log.count("this process runs the staging steps") == 1, log
            assert log.count("another process runs the staging steps") == 1, log

            owners = order_and_fetch(server.url, fault_archive, carts=3, files=2)

            pulls = {file_id: fault_archive.count("GET", file_id) for file_id in owners}
            assert pulls == dict.fromkeys(owners, 1), "a file was pulled by two processes"
            assert "Traceback" not in server.log()


@pytest.mark.timeout(60)
def test_one_scrape_of_serve_with_two_processes_adds_up_the_counters_of_both(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    file_id, data = new_id(), b"served by either process\n" * 400
    fault_archive.add(file_id, data)
    env = {"ARCHIVE_INTERFACE_URL": fault_archive.url, "VOLUME_PATH": str(tmp_path / "volume")}
    with CartdServer(tmp_path / "two", env, args=["--workers", "2"]) as server:
        wait_until(lambda: server.log().count("cartd is serving carts from") == 2)
        kept = re.search(r"adds up their counters kept in (\S+)", server.log())
        assert kept, server.log()
        folder = Path(kept.group(1))
        uid = new_id("cart")
        order = {"fileids": [entry(file_id, data, "s.txt")]}
        assert httpx.post(f"{server.url}/{uid}", json=order, timeout=30).status_code == 201
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"

        served = 0

        def both_served() -> bool:
            nonlocal served
            # A new connection each time: either process may take it.
            download = httpx.get(f"{server.url}/{uid}", params={"filename": "s.tar"}, timeout=30)
            assert download.status_code == 200
            served += len(download.content)
            counted = own_counters(folder)
            return sum(1 for c in counted.values() if c.get("cartd_bytes_served_total")) == 2

        wait_until(both_served, timeout=30, interval=0)
        per_process = [c.get("cartd_bytes_served_total", 0) for c in own_counters(folder).values()]
        assert sum(per_process) == served
        assert all(count < served for count in per_process), per_process

        for _ in range(4):  # whichever process answers, the scrape shows the sum
            found = scrape(f"{server.url}/metrics")
            assert sample(found, "cartd_bytes_served_total") == served
            assert sample(found, "cartd_files_staged_total") == 1
            assert sample(found, "cartd_bytes_pulled_total") == len(data)
            assert sample(found, "cartd_carts", status="ready") == 1
        assert "Traceback" not in server.log()
    assert not folder.exists(), "the run's folder is removed when the server stops"


def test_serve_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    result = run_cartd("serve", "--workers", "0", env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "at least 1" in result.stderr


def test_uvicorn_serves_cartd_asgi_app_with_settings_from_file_and_environment(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    config = tmp_path / "cartd.ini"
    config.write_text(f"[archiveinterface]\nurl = {fault_archive.url}\n")
    volume = tmp_path / "asgi-volume"
    env = {"CARTD_CONFIG": str(config), "VOLUME_PATH": str(volume), **PATIENT}
    command = [sys.executable, "-m", "uvicorn", "cartd.asgi:app", "--port", "{port}"]
    with CartdServer(tmp_path / "uvicorn", env, command=command) as server:
        assert (volume / "cartd.sqlite3").is_file()  # the volume of the environment
        owners = order_and_fetch(server.url, fault_archive, carts=1, files=2)  # the file's archive
        assert all(fault_archive.count("GET", file_id) == 1 for file_id in owners)
        assert "Traceback" not in server.log()


def test_uvicorn_with_a_wrong_setting_stops_with_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "cartd.asgi:app", "--port", "0"],
        env={"HOME": str(tmp_path), "CARTD_STAGE_WORKERS": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "cartd cannot start: invalid configuration: cartd.stage_workers" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
