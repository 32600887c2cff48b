"""Distributed mode under races and faults: many carts on two workers, a worker killed
mid-pull, the broker and the database restarted under carts in flight, API processes
racing, and the operator's `stuck` and `fixit`.

Real processes on loopback: `cartd serve` and `cartd worker`, the machine's RabbitMQ,
Redis, PostgreSQL and MariaDB, or private Redis and PostgreSQL servers that a test stops
and starts again; the fault-injecting archive counts every request and stalls a pull.
Kills are SIGKILL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, bindparam, create_engine, text

from cartd.db.engine import database_url
from tests.conftest import FileEntry, entry, new_id, run_cartd
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.cells import CELLS
from tests.support.cluster import Cluster, cluster, post
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.private_servers import PrivatePostgres, PrivateRedis
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
    client: httpx.Client,
    uid: str,
    files: dict[str, bytes],
    timeout: float = 30.0,
    bundled: bool = False,
) -> None:
    head = wait_for_cart(client, uid, timeout=timeout)
    assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
    download = client.get(f"/{uid}", params={"filename": "d.tar"})
    assert download.status_code == 200, download.text
    top = uid if bundled else "d"  # a bundle was written once, under the uid
    assert tar_files(download.content) == {f"{top}/{path}": data for path, data in files.items()}


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


@pytest.mark.parametrize("cell", CELLS)
def test_a_worker_killed_mid_pull_leaves_the_file_to_a_live_worker(
    cell: tuple[str, str], fault_archive: FaultArchive, tmp_path: Path
) -> None:
    # RabbitMQ delivers the killed worker's message again at once, to a worker that finds
    # the file claimed; Redis holds it for its visibility timeout. Either way the file is
    # sent again once the dead step's claim lapses.
    broker, database = cell
    files = {f"k{index}.bin": bytes([65 + index]) * 3000 for index in range(4)}
    stalled = {"stalled.bin": b"stalled, then killed\n" * 500}
    orders = stored(fault_archive, files)
    stall = stored(fault_archive, stalled, Faults(delay_first=1, delay_seconds=60))
    stalled_id = stall[0]["id"]
    env = {**PATIENT, "CARTD_CLAIM_SECONDS": "3"}
    with (
        cluster(tmp_path, fault_archive.url, broker, database, workers=2, env=env) as running,
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
        killed_at = time.monotonic()  # the process is gone, its sockets closed

        assert_ready_and_correct(client, "killed", {**files, **stalled})
    gets = [(at, fid) for at, method, fid in fault_archive.requests if method == "GET"]
    stalled_pulls = [at for at, fid in gets if fid == stalled_id]
    assert len(stalled_pulls) == 2, stalled_pulls
    left = fault_archive.departures(stalled_id)
    assert len(left) == 1, "the killed worker's pull ended when it died"
    assert left[0] < stalled_pulls[1], "the second pull began while the first was under way"
    # While both lived, and then for the one left, each file was pulled once at most (the
    # killed worker may have been pulling another file too, which is pulled again).
    for fid in {fid for _, fid in gets}:
        before = [at for at, other in gets if other == fid and at < killed_at]
        after = [at for at, other in gets if other == fid and at >= killed_at]
        assert len(before) <= 1, (fid, before, killed_at)
        assert len(after) <= 1, (fid, after, killed_at)


# -- the broker restarted ----------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.mysql
def test_carts_in_flight_and_orders_taken_while_the_broker_is_down_are_all_made(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    in_flight = {
        new_id("flight"): {
            f"f{index}.txt": f"{cart} {index}\n".encode() * 200 for index in range(3)
        }
        for cart in range(3)
    }
    orders = {uid: stored(fault_archive, files) for uid, files in in_flight.items()}
    stalled = {uid: {"slow.txt": f"slow {uid}\n".encode() * 300} for uid in in_flight}
    for uid, files in stalled.items():  # each cart's last pull outlives the broker
        orders[uid] += stored(fault_archive, files, Faults(delay_first=1, delay_seconds=2))
        in_flight[uid] |= files
    during = {new_id("during"): {"d.txt": f"ordered while down {n}\n".encode()} for n in range(2)}
    orders |= {uid: stored(fault_archive, files) for uid, files in during.items()}
    env = {**PATIENT, "CARTD_SWEEP_GRACE": "2"}  # messages lost with the broker: the sweep
    with (
        PrivateRedis(tmp_path / "redis") as broker,
        cluster(
            tmp_path, fault_archive.url, "redis", "mysql", workers=2, env=env, broker_url=broker.url
        ) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        for uid in in_flight:
            post(client, uid, orders[uid])
        slow_ids = [orders[uid][-1]["id"] for uid in in_flight]
        wait_until(lambda: all(fault_archive.count("GET", fid) == 1 for fid in slow_ids))

        broker.kill()  # every message it held is gone
        for uid in during:
            started = time.monotonic()
            post(client, uid, orders[uid])  # taken, its step recorded; the send gives up
            assert time.monotonic() - started < 10, "a POST waited long on the broker"
        assert client.head(next(iter(in_flight))).status_code == 204
        assert client.get("/").status_code == 200

        broker.start()  # empty, on the same port
        for uid, files in {**in_flight, **during}.items():
            assert_ready_and_correct(client, uid, files, timeout=45)
    pulls = pulls_per_file(fault_archive, orders)
    assert set(pulls.values()) == {1}, pulls


# -- the database restarted --------------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_carts_in_flight_while_the_database_restarts_are_all_made(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    carts = {
        new_id("db"): {f"f{index}.txt": f"{cart} {index}\n".encode() * 300 for index in range(3)}
        for cart in range(3)
    }
    orders = {uid: stored(fault_archive, files) for uid, files in carts.items()}
    for uid in carts:  # a pull of each cart under way while the database is away
        slow = {"slow.txt": f"slow {uid}\n".encode() * 300}
        orders[uid] += stored(fault_archive, slow, Faults(delay_first=1, delay_seconds=2))
        carts[uid] |= slow
    with (
        PrivatePostgres() as database,
        cluster(
            tmp_path,
            fault_archive.url,
            "rabbitmq",
            "postgres",
            workers=2,
            # A claim the database was away to release lapses, then the sweep sends it.
            env={**PATIENT, "CARTD_CLAIM_SECONDS": "3"},
            database_url=database.url,
        ) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        for uid in carts:
            post(client, uid, orders[uid])
        slow_ids = [orders[uid][-1]["id"] for uid in carts]
        wait_until(lambda: all(fault_archive.count("GET", fid) == 1 for fid in slow_ids))

        with inspect(running) as db, db.connect() as connection:
            places = [
                Path(running.env["VOLUME_PATH"]) / "carts" / str(cart_id) / "files" / str(file_id)
                for cart_id, file_id in connection.execute(
                    text("SELECT cart_id, id FROM cart_files WHERE archive_id IN :ids").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"ids": slow_ids},
                )
            ]
        database.halt()  # as a crash: the pulls under way end while it is away
        some = next(iter(carts))
        for answer in (
            client.get(f"/{some}"),
            client.post(f"/{new_id('refused')}", json={"fileids": orders[some]}),
        ):
            assert answer.status_code >= 500, answer.text
            assert "message" in answer.json()
            assert "Traceback" not in answer.text
        assert client.head(f"/{some}").status_code >= 500
        wait_until(lambda: all(place.exists() for place in places))  # their rows cannot say so

        database.start()
        for uid, files in carts.items():
            assert_ready_and_correct(client, uid, files)
        assert "trying again in 5s" in "".join(worker.log() for worker in running.workers)


@pytest.mark.postgres
def test_after_the_database_restarts_under_an_idle_api_the_very_first_requests_succeed(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    # The pool's connections died with the server; each is pinged before use once it
    # has sat idle, and replaced, rather than failing the request that drew it.
    files = {"a.txt": b"a" * 5000}
    fileids = stored(fault_archive, files)
    with PrivatePostgres() as database:
        env = {
            "ARCHIVE_INTERFACE_URL": fault_archive.url,
            "VOLUME_PATH": str(tmp_path / "vol"),
            "PEEWEE_URL": database.url,
        }
        synced = run_cartd("dbsync", env={"HOME": str(tmp_path), **env})
        assert synced.returncode == 0, synced.stderr
        with (
            CartdServer(tmp_path, env) as server,
            httpx.Client(base_url=server.url, timeout=30.0) as client,
        ):
            uid = new_id("idle")
            post(client, uid, fileids)
            assert_ready_and_correct(client, uid, files)
            with ThreadPoolExecutor(4) as pool:  # several pooled connections in use
                assert {a.status_code for a in pool.map(client.head, [f"/{uid}"] * 8)} == {204}

            database.halt()
            database.start()
            answers = [
                client.head(f"/{uid}"),
                client.get(f"/{uid}"),
                client.post(f"/{new_id('after')}", json={"fileids": fileids}),
            ]
            assert [a.status_code for a in answers] == [204, 200, 201], answers[-1].text


# -- API processes racing ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, FaultArchive]]:
    """Two `cartd serve` processes on one database, broker and volume, and a worker."""
    workdir = tmp_path_factory.mktemp("two-apis")
    with (
        FaultArchive() as archive,
        cluster(workdir, archive.url, "redis", "mysql", env=PATIENT) as running,
    ):
        running.start_server()
        yield running, archive


def live_carts(running: Cluster, uids: list[str]) -> list[tuple[int, str, str]]:
    """(id, uid, status) of the carts of these uids not deleted."""
    with inspect(running) as db, db.connect() as connection:
        query = text(
            "SELECT id, uid, status FROM carts WHERE uid IN :uids AND status != 'deleted'"
        ).bindparams(bindparam("uids", expanding=True))
        return [tuple(row) for row in connection.execute(query, {"uids": uids})]


def idle(running: Cluster) -> bool:
    """Every task each worker received has ended (its log says so)."""
    for worker in running.workers:
        log = worker.log()
        if log.count("] received") != log.count("] succeeded") + log.count("] raised"):
            return False
    return True


@pytest.mark.redis
@pytest.mark.mysql
def test_two_posts_of_one_uid_at_once_on_two_api_processes(
    two_apis: tuple[Cluster, FaultArchive],
) -> None:
    running, archive = two_apis
    uid = new_id("twice")
    contents = [{"one.txt": b"the first order\n"}, {"a.txt": b"a\n" * 100, "b.txt": b"b\n" * 99}]
    orders = [stored(archive, files) for files in contents]
    urls = [running.server.url, running.servers[0].url]
    barrier = threading.Barrier(2)

    def send(index: int) -> int:
        with httpx.Client(base_url=urls[index], timeout=30.0) as client:
            barrier.wait(10)
            return client.post(f"/{uid}", json={"fileids": orders[index]}).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(send, range(2))) == [201, 201]
    carts = live_carts(running, [uid])
    assert len(carts) == 2, carts
    with inspect(running) as db, db.connect() as connection:
        newest_files = set(
            connection.scalars(
                text("SELECT archive_id FROM cart_files WHERE cart_id = :c"),
                {"c": max(cart_id for cart_id, _, _ in carts)},
            )
        )
    [newest] = [i for i, order in enumerate(orders) if {o["id"] for o in order} == newest_files]

    for url in urls:  # both processes act on the newest
        with httpx.Client(base_url=url, timeout=30.0) as client:
            head = wait_for_cart(client, uid)
            assert head.headers["X-Pacifica-Files-Total"] == str(len(contents[newest]))
            assert_ready_and_correct(client, uid, contents[newest])
    with httpx.Client(base_url=urls[1], timeout=30.0) as client:
        assert client.delete(f"/{uid}").status_code == 200
    for url in urls:
        assert httpx.head(f"{url}/{uid}").status_code == 404
    assert live_carts(running, [uid]) == [], "the DELETE removed both"
    volume = Path(running.env["VOLUME_PATH"]) / "carts"
    wait_until(lambda: not any((volume / str(cart_id)).exists() for cart_id, _, _ in carts))


@pytest.mark.redis
@pytest.mark.mysql
def test_a_delete_racing_the_last_file_of_a_cart_leaves_nothing(
    two_apis: tuple[Cluster, FaultArchive],
) -> None:
    running, archive = two_apis
    stall = 1.0
    # DELETEs aimed from well before the last pull ends to after it (and its cart's
    # bundling) is over, one cart each.
    offsets = [0.3, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5]
    carts = {new_id("race"): index for index in range(len(offsets))}
    orders = {}
    for uid in carts:
        orders[uid] = stored(archive, {"first.txt": f"{uid} first\n".encode() * 100})
        orders[uid] += stored(
            archive,
            {"last.txt": f"{uid} last\n".encode() * 100},
            Faults(delay_first=1, delay_seconds=stall),
        )
    with httpx.Client(base_url=running.server.url, timeout=30.0) as client:
        for uid in carts:
            post(client, uid, orders[uid], bundle=True)
    cart_ids = [cart_id for cart_id, _, _ in live_carts(running, list(carts))]

    def delete_when_aimed(uid: str) -> int:
        last = orders[uid][-1]["id"]
        wait_until(lambda: archive.count("GET", last) == 1)
        [(started, _, _)] = [r for r in archive.requests if r[1] == "GET" and r[2] == last]
        aim = started + offsets[carts[uid]]
        time.sleep(max(0.0, aim - time.monotonic()))  # aiming the race, not waiting for a state
        with httpx.Client(base_url=running.servers[0].url, timeout=30.0) as other:
            return other.delete(f"/{uid}").status_code

    with ThreadPoolExecutor(len(carts)) as pool:
        assert set(pool.map(delete_when_aimed, carts)) == {200}
    wait_until(lambda: idle(running))
    volume = Path(running.env["VOLUME_PATH"]) / "carts"
    wait_until(lambda: not any((volume / str(cart_id)).exists() for cart_id in cart_ids))
    assert live_carts(running, list(carts)) == [], "a deleted cart came back"
    for uid in carts:
        assert httpx.head(f"{running.server.url}/{uid}").status_code == 404


@pytest.mark.redis
@pytest.mark.mysql
def test_head_during_bundling_says_staging_in_phase_bundling(
    two_apis: tuple[Cluster, FaultArchive],
) -> None:
    running, archive = two_apis
    files = {f"big{index}.bin": bytes([index]) * (2 << 20) for index in range(16)}  # 32 MiB
    uid = new_id("bundle")
    with httpx.Client(base_url=running.server.url, timeout=30.0) as client:
        post(client, uid, stored(archive, files), bundle=True)
    seen: list[tuple[str, str]] = []
    with httpx.Client(base_url=running.servers[0].url, timeout=30.0) as other:

        def answered() -> bool:
            head = other.head(f"/{uid}")
            seen.append((head.headers["X-Pacifica-Status"], head.headers["X-Pacifica-Phase"]))
            return seen[-1][0] != "staging"

        wait_until(answered, timeout=60, interval=0)
        assert_ready_and_correct(other, uid, files, bundled=True)
    phases = [phase for _, phase in seen]
    assert "bundling" in phases, sorted(set(phases))
    assert {status for status, phase in seen if phase != "ready"} == {"staging"}
    assert phases == sorted(phases, key=["waiting", "staging", "bundling", "ready"].index)


# -- the operator: stuck and fixit -------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_a_cart_whose_steps_were_lost_is_listed_as_stuck_and_made_after_fixit(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    files = {"x/stuck.txt": b"stuck, then fixed\n" * 50, "y/too.txt": b"too\n"}
    uid = new_id("stuck")
    env = {"CARTD_SWEEP_GRACE": "3600"}  # no sweep sends it again on its own
    with (
        cluster(tmp_path, fault_archive.url, "rabbitmq", "postgres", workers=0, env=env) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, uid, stored(fault_archive, files))
        wait_until(lambda: running.queue.depth() == 1)
        assert running.queue.purge() == 1  # its first step lost
        running.start_worker()
        admin = {"HOME": str(tmp_path), **running.env}

        def stuck() -> list[str]:
            listed = run_cartd("stuck", "--older-than", "1 second", "--json", env=admin)
            assert listed.returncode == 0, listed.stderr
            return [cart["uid"] for cart in json.loads(listed.stdout)]

        wait_until(lambda: uid in stuck(), timeout=20)
        assert client.head(f"/{uid}").headers["X-Pacifica-Phase"] == "waiting"
        assert fault_archive.requests == [], "no step ran for it"

        fixed = run_cartd("fixit", "--cartid", uid, env=admin)
        assert fixed.returncode == 0, fixed.stderr
        fixed_at = time.monotonic()
        assert_ready_and_correct(client, uid, files, timeout=20)
        # The worker's next sweep (every 5 s) sends it, its grace of an hour notwithstanding.
        assert time.monotonic() - fixed_at < 10
        assert uid not in stuck()
