"""Distributed mode: `cartd serve` with a broker records and sends, `cartd worker` runs the steps.

Real processes on loopback against the machine's real brokers and database servers and
the real Archive Interface. The core below runs on every pairing of broker and database;
the rest on one cell. The whole of test_api.py runs on two cells (RabbitMQ with PostgreSQL,
Redis with MariaDB) through the `ai_server` fixture.
"""

from __future__ import annotations

import io
import itertools
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FileEntry, entry, new_id, run_cartd
from tests.support.archive_interface import ArchiveInterface, free_port
from tests.support.brokers import scratch_queue
from tests.support.cartd_server import CartdServer, CartdWorker, wait_for_cart, wait_until
from tests.support.cells import CELLS, MATRIX
from tests.support.cluster import Cluster, cluster, post
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.metrics import names, sample, scrape
from tests.support.tars import tar_files

pytestmark = pytest.mark.archive

Store = Callable[..., list[FileEntry]]


@pytest.fixture(scope="module", params=MATRIX)
def distributed(
    request: pytest.FixtureRequest,
    archive_interface: ArchiveInterface,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    broker, database = request.param
    workdir = tmp_path_factory.mktemp("distributed")
    with cluster(workdir, archive_interface.url, broker, database) as running:
        yield running


@pytest.fixture
def client(distributed: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=distributed.server.url, timeout=30.0) as http:
        yield http


def mtimes(data: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return {info.name: int(info.mtime) for info in tar if info.isfile()}


# -- the API's core, on every pairing of broker and database ---------------------------------------


def test_a_cart_is_made_by_the_worker_and_served_by_the_api(
    distributed: Cluster, client: httpx.Client, store_files: Store
) -> None:
    files = {"1/2/3/foo.txt": b"foo contents\n", "2/3/4/baz.ini": b"[baz]\nx = 1\n" * 500}
    fileids = store_files(files, hashtype="sha256", mtime=1_600_000_000)
    uid = new_id("cart")

    post(client, uid, fileids)
    head = wait_for_cart(client, uid)
    assert head.status_code == 204
    assert head.headers["X-Pacifica-Status"] == "ready"
    assert head.headers["X-Pacifica-Files-Staged"] == "2"

    download = client.get(f"/{uid}", params={"filename": "mydata.tar"})
    assert download.status_code == 200
    assert tar_files(download.content) == {f"mydata/{path}": data for path, data in files.items()}
    assert set(mtimes(download.content).values()) == {1_600_000_000}
    # The API process recorded and sent; a worker pulled.
    assert f"cart={uid} file={fileids[0]['id']} verified" in distributed.workers[0].log()
    about = [line for line in distributed.server.log().splitlines() if f"cart={uid}" in line]
    assert not [line for line in about if "verified" in line], about


def test_a_missing_file_fails_its_cart_with_a_message_naming_it(
    client: httpx.Client, store_files: Store
) -> None:
    present = store_files({"here.txt": b"here\n"})
    missing = entry(new_id("missing"), b"never stored\n", "gone.txt")
    uid = new_id("cart")

    post(client, uid, [*present, missing])
    head = wait_for_cart(client, uid)
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"
    assert missing["id"] in head.headers["X-Pacifica-Message"]
    answer = client.get(f"/{uid}")
    assert answer.status_code == 500
    assert missing["id"] in answer.json()["message"]
    assert "Traceback" not in answer.text


def test_a_deleted_cart_is_gone(client: httpx.Client, store_files: Store) -> None:
    uid = new_id("cart")
    post(client, uid, store_files({"a.txt": b"a" * 1000}))
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"

    deleted = client.delete(f"/{uid}")
    assert deleted.status_code == 200
    assert deleted.json() == {"message": "Cart Deleted Successfully"}
    assert client.head(f"/{uid}").status_code == 404
    assert client.get(f"/{uid}").status_code == 404
    again = client.delete(f"/{uid}")
    assert again.status_code == 404
    assert again.json()["message"] == "Not Found"


# -- tape: countdowns, never a worker held ----------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_a_file_on_tape_is_polled_by_countdown_while_the_only_worker_thread_makes_other_carts(
    cell: tuple[str, str], fault_archive: FaultArchive, tmp_path: Path
) -> None:
    broker, database = cell
    tape_id, disk_id = new_id("tape"), new_id("disk")
    fault_archive.add(tape_id, b"from tape\n" * 100, faults=Faults(tape_seconds=3.0))
    fault_archive.add(disk_id, b"on disk\n" * 100)
    polls = {"CARTD_POLL_INITIAL": "2", "CARTD_POLL_MAX": "4"}  # questions at 2 s, then 3 s
    with (
        cluster(tmp_path, fault_archive.url, broker, database, concurrency=1, env=polls) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, "tape-cart", [entry(tape_id, b"from tape\n" * 100, "t.txt")])
        wait_until(lambda: fault_archive.count("POST", tape_id) == 1)  # on tape: asked to stage
        posted = time.monotonic()
        post(client, "disk-cart", [entry(disk_id, b"on disk\n" * 100, "d.txt")])
        head = wait_for_cart(client, "disk-cart", timeout=15)
        waited = time.monotonic() - posted

        assert head.headers["X-Pacifica-Status"] == "ready"
        # A worker that slept through the 2 s until the tape file's next question would
        # have held its only thread, and this cart, that long.
        assert waited < 1.5, f"the other cart waited {waited:.1f}s for the worker's thread"
        assert client.head("/tape-cart").headers["X-Pacifica-Status"] == "staging"
        assert wait_for_cart(client, "tape-cart").headers["X-Pacifica-Status"] == "ready"

    heads = [t for t, method, fid in fault_archive.requests if method == "HEAD" and fid == tape_id]
    gaps = [later - earlier for earlier, later in itertools.pairwise(heads)]
    # Sizing (whose answer the step that asks to stage uses), then after 2 s and 3 s more:
    # a re-queue at once would ask hundreds of times.
    assert len(heads) == 3, gaps
    assert 1.8 < gaps[0] < gaps[1], gaps
    assert fault_archive.count("GET", tape_id) == 1


# -- one cell: recovery, sharing, the original's configuration ---------------------------


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_steps_lost_in_the_queue_or_never_sent_are_sent_again_by_a_workers_sweep(
    archive_interface: ArchiveInterface, store_files: Store, tmp_path: Path
) -> None:
    lost_files = {"x/lost.txt": b"lost and found\n" * 10}
    unsent_files = {"y/unsent.txt": b"never sent\n" * 10}
    lost, unsent = new_id("lost"), new_id("unsent")
    with (
        cluster(
            tmp_path,
            archive_interface.url,
            "rabbitmq",
            "postgres",
            workers=0,
            env={"CARTD_SWEEP_GRACE": "2"},
        ) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, lost, store_files(lost_files))  # no worker runs: its step waits...
        wait_until(lambda: running.queue.depth() == 1)
        assert running.queue.purge() == 1  # ... and is lost, as by a broker that lost it

        # A second API process on the same database whose broker cannot be reached: the
        # order is taken all the same, its step recorded but never sent.
        cut_off = {**running.env, "BROKER_URL": "pyamqp://guest:guest@127.0.0.1:1//"}
        with (
            CartdServer(tmp_path / "cut-off", cut_off) as other,
            httpx.Client(base_url=other.url, timeout=30.0) as other_client,
        ):
            post(other_client, unsent, store_files(unsent_files))
        assert running.queue.depth() == 0

        worker = running.start_worker()
        for uid, files in ((lost, lost_files), (unsent, unsent_files)):
            assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
            download = client.get(f"/{uid}", params={"filename": "d.tar"})
            assert tar_files(download.content) == {
                f"d/{path}": data for path, data in files.items()
            }
        assert "sweep: sent again 2 sizing" in worker.log()


@pytest.mark.parametrize("cell", [("rabbitmq", "postgres"), ("redis", "mysql")])
def test_a_large_carts_sizing_ahead_does_not_wait_behind_its_file_messages(
    cell: tuple[str, str], fault_archive: FaultArchive, tmp_path: Path
) -> None:
    """Its first step sends 25 file messages and a step sizing the rest ahead; that step
    goes by a queue of the carts' own steps, so every size (which a `Prefer: wait`
    download waits for) is known while most files are still to be pulled."""
    count, slow = 400, Faults(delay_first=1, delay_seconds=0.03)
    fileids = []
    for index in range(count):
        file_id, data = new_id("ahead"), f"file {index}\n".encode()
        fault_archive.add(file_id, data, faults=slow)
        fileids.append(entry(file_id, data, f"d/{index}.txt"))
    broker, database = cell
    with (
        cluster(tmp_path, fault_archive.url, broker, database, concurrency=2) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, "ahead", fileids)
        seen: list[tuple[int, int]] = []  # (files sized, files staged) at each look

        def all_sized() -> bool:
            files = client.get("/ahead/files").json()["files"]
            sized = sum(1 for file in files if file["size"] is not None)
            seen.append((sized, sum(1 for file in files if file["status"] == "staged")))
            return sized == count

        wait_until(all_sized, timeout=60, interval=0.1)
        assert seen[-1][1] < count // 2, f"sized only as the pulls went: {seen[-5:]}"
        assert wait_for_cart(client, "ahead", timeout=60).headers["X-Pacifica-Status"] == "ready"


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_two_workers_share_the_files_of_a_cart(
    archive_interface: ArchiveInterface, store_files: Store, tmp_path: Path
) -> None:
    files = {f"f{index}.bin": bytes([index]) * 5000 for index in range(8)}
    uid = new_id("cart")
    with (
        cluster(tmp_path, archive_interface.url, "rabbitmq", "postgres", workers=2) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, uid, store_files(files))
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        download = client.get(f"/{uid}", params={"filename": "all.tar"})
        assert tar_files(download.content) == {f"all/{path}": data for path, data in files.items()}
        taken = [worker.tasks_run("cartd.files") for worker in running.workers]
        assert all(count >= 1 for count in taken), taken
        # One round of messages, of two files each (8 files spread over 4): each sizes its
        # files, holds their bytes and pulls them; no second round for files parked.
        assert sum(taken) <= len(files) // 2, f"more than one round of messages: {taken}"


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_a_worker_serves_its_own_counters_on_its_metrics_port(
    archive_interface: ArchiveInterface, store_files: Store, tmp_path: Path
) -> None:
    files = {f"m{index}.bin": bytes([index]) * 3000 for index in range(3)}
    uid = new_id("cart")
    port = free_port()
    with (
        cluster(tmp_path, archive_interface.url, "rabbitmq", "postgres", workers=0) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        # A host-wide PROMETHEUS_MULTIPROC_DIR meant for API processes: a worker keeps out of
        # it, or an API process using that folder would add the worker's counters to its own.
        api_folder = tmp_path / "api-metrics"
        api_folder.mkdir()
        worker = running.start_worker(
            CARTD_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(api_folder)
        )
        url = f"http://127.0.0.1:{port}/metrics"
        assert f"serves its metrics at {url}" in worker.log()
        before = scrape(url)
        assert sample(before, "cartd_files_staged_total") == 0
        assert sample(before, "cartd_steps_total", kind="file") == 0

        post(client, uid, store_files(files))
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        # The last file's counter may be added just after its cart became ready.
        wait_until(lambda: sample(scrape(url), "cartd_files_staged_total") == len(files))
        after = scrape(url)
        assert sample(after, "cartd_bytes_pulled_total") == 9000
        assert sample(after, "cartd_steps_total", kind="file") >= len(files)
        assert sample(after, "cartd_steps_total", kind="size") >= 1
        assert sample(after, "cartd_archive_errors_total", kind="transient") == 0
        # The database's gauges are the API's to show: no worker queries it per scrape.
        assert not {"cartd_carts", "cartd_volume_used_bytes"} & names(after)

        api = scrape(running.server.url + "/metrics")
        assert sample(api, "cartd_carts", status="ready") == 1
        assert sample(api, "cartd_volume_used_bytes") == 9000
        assert sample(api, "cartd_files_staged_total") == 0, "the API process pulls nothing"
        assert list(api_folder.iterdir()) == []


ORIGINAL_SAMPLE = """\
[cartd]
; This section describes cartd specific configuration

; Local directory to stage data
volume_path = /tmp/

; Least recently used buffer time
lru_buffer_time = 0

; Bundle backend task enable/disable
bundle_task = True

[archiveinterface]
; URL to the archive interface
url = http://127.0.0.1:8080/

[celery]
; Broker message url
broker_url = pyamqp://

; Backend task channel
backend_url = rpc://

[database]
peewee_url = sqliteext:///db.sqlite3
connect_attempts = 10
connect_wait = 20
"""


@pytest.mark.rabbitmq
def test_the_original_sample_configuration_runs_as_it_is(
    archive_interface: ArchiveInterface, store_files: Store, tmp_path: Path
) -> None:
    sample = tmp_path / "config.ini"
    sample.write_text(ORIGINAL_SAMPLE, encoding="utf-8")
    # Only where this machine differs from the sample's: the archive's port, a volume
    # and a queue of this test's own. The broker, backend and database are the file's.
    with (
        scratch_queue("rabbitmq") as queue,
        CartdServer(
            tmp_path,
            {
                "CARTD_CONFIG": str(sample),
                "ARCHIVE_INTERFACE_URL": archive_interface.url,
                "VOLUME_PATH": str(tmp_path / "vol"),
                "CARTD_CELERY_QUEUE": queue.name,
            },
        ) as server,
        CartdWorker(tmp_path, server.env),
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        files = {"sample.txt": b"as it is\n"}
        uid = new_id("cart")
        post(client, uid, store_files(files))
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        bundle = client.get(f"/{uid}").content
        assert tar_files(bundle) == {f"{uid}/sample.txt": b"as it is\n"}, "bundled, top is uid"
    assert (tmp_path / "db.sqlite3").exists(), "the sample's own database"


@pytest.mark.redis
@pytest.mark.mysql
def test_the_celery_command_runs_the_same_worker(
    archive_interface: ArchiveInterface, store_files: Store, tmp_path: Path
) -> None:
    files = {"celery.txt": b"celery -A\n"}
    uid = new_id("cart")
    with (
        cluster(tmp_path, archive_interface.url, "redis", "mysql", workers=0) as running,
        CartdWorker(tmp_path, running.env, celery_cli=True) as worker,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, uid, store_files(files))
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        assert tar_files(client.get(f"/{uid}", params={"filename": "c.tar"}).content) == {
            "c/celery.txt": b"celery -A\n"
        }
        assert worker.tasks_run("cartd.files") >= 1
        assert "concurrency: 2 (thread)" in worker.log(), "the threads pool, as cartd worker"


def test_a_worker_without_a_broker_says_what_is_missing(tmp_path: Path) -> None:
    result = run_cartd("worker", env={"HOME": str(tmp_path), "VOLUME_PATH": str(tmp_path / "v")})
    assert result.returncode == 2
    assert "celery.broker_url (BROKER_URL)" in result.stderr


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_a_worker_killed_while_a_file_waits_on_tape_leaves_its_step_to_the_next(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    data = b"survives a crash\n" * 50
    tape_id = new_id("tape")
    fault_archive.add(tape_id, data, faults=Faults(tape_seconds=2.0))
    polls = {"CARTD_POLL_INITIAL": "1", "CARTD_POLL_MAX": "1"}
    with (
        cluster(tmp_path, fault_archive.url, "rabbitmq", "postgres", env=polls) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        post(client, "crash-cart", [entry(tape_id, data, "c.txt")])
        wait_until(lambda: fault_archive.count("POST", tape_id) == 1)  # its next step: 1 s away
        running.workers[0].kill()  # SIGKILL: the message under countdown was never acked
        asked = fault_archive.count("HEAD", tape_id)

        running.start_worker()  # the sweep's grace is 300 s: only the broker can bring it
        assert wait_for_cart(client, "crash-cart").headers["X-Pacifica-Status"] == "ready"
        assert fault_archive.count("HEAD", tape_id) > asked
        assert fault_archive.count("GET", tape_id) == 1
        assert tar_files(client.get("/crash-cart", params={"filename": "k.tar"}).content) == {
            "k/c.txt": data
        }
