"""Callbacks over real HTTP: a cartd with callbacks enabled POSTs signed events to a real
receiver on a loopback port when a cart becomes ready or fails, tries again while the
receiver answers 500, keeps the event through a crash, and refuses an order naming a
host it does not allow. Embedded (one process, SQLite), and once distributed (an API
process and a `cartd worker`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import FileEntry, new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.cluster import cluster
from tests.support.metrics import sample, scrape
from tests.support.receiver import Receiver

pytestmark = pytest.mark.archive

SECRET = "a shared secret of the tests"
#: Quick tries, and enough of them that an event outlives the restart below.
QUICK = {
    "CARTD_CALLBACK_SECRET": SECRET,
    "CARTD_CALLBACK_RETRY_INITIAL": "0.05",
    "CARTD_CALLBACK_RETRY_MAX": "0.2",
    "CARTD_CALLBACK_ATTEMPTS": "1000",
    "CARTD_CALLBACK_TIMEOUT": "5",
}

Store = Callable[..., list[FileEntry]]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    receiver: Receiver,
    archive_interface: ArchiveInterface,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CartdServer]:
    workdir = tmp_path_factory.mktemp("callbacks")
    env = {
        "ARCHIVE_INTERFACE_URL": archive_interface.url,
        "VOLUME_PATH": str(workdir / "vol"),
        "CARTD_CALLBACK_HOSTS": f"{receiver.host}, localhost:1",
        **QUICK,
    }
    with CartdServer(workdir, env) as cartd:
        yield cartd


@pytest.fixture
def client(server: CartdServer, receiver: Receiver) -> Iterator[httpx.Client]:
    receiver.answer(200)
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def order(client: httpx.Client, uid: str, fileids: list[FileEntry], callback: str) -> None:
    response = client.post(f"/{uid}", json={"fileids": fileids, "callback": callback})
    assert response.status_code == 201, response.text


def callbacks(client: httpx.Client, outcome: str) -> float:
    found = scrape(str(client.base_url.join("/metrics")))
    return sample(found, "cartd_callbacks_total", outcome=outcome)


def test_a_ready_cart_posts_a_signed_event_to_its_callback(
    client: httpx.Client, receiver: Receiver, store_files: Store
) -> None:
    files = {"a.txt": b"a" * 1000, "b/c.txt": b"c" * 24}
    uid = new_id("cart")
    order(client, uid, store_files(files), f"{receiver.url}/hooks/{uid}?token=t1")
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"

    [got] = receiver.wait_for(f"/hooks/{uid}?token=t1")
    assert got.signed_with(SECRET)
    assert not got.signed_with(SECRET + "x")
    assert got.headers["content-type"] == "application/json"
    event = got.event
    assert got.headers["x-cartd-event-id"] == event["event_id"]
    assert set(event) == {
        "event_id",
        "uid",
        "status",
        "message",
        "files_total",
        "bytes_total",
        "ordered_at",
        "time",
    }
    assert (event["uid"], event["status"], event["message"]) == (uid, "ready", "")
    assert (event["files_total"], event["bytes_total"]) == (2, 1024)
    ordered = datetime.fromisoformat(event["ordered_at"])
    assert ordered <= datetime.fromisoformat(event["time"])
    assert ordered.utcoffset() is not None
    assert not ordered.utcoffset()


def test_a_failed_cart_posts_its_error(
    client: httpx.Client, receiver: Receiver, store_files: Store
) -> None:
    [wrong] = store_files({"bad.txt": b"the archive's bytes\n"})
    wrong["hashsum"] = hashlib.md5(b"other bytes").hexdigest()
    uid = new_id("cart")
    order(client, uid, [wrong], f"{receiver.url}/hooks/{uid}")
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "error"

    [got] = receiver.wait_for(f"/hooks/{uid}")
    assert got.signed_with(SECRET)
    assert got.event["status"] == "error"
    assert got.event["message"] == head.headers["X-Pacifica-Message"]
    assert "checksum mismatch" in got.event["message"]


def test_an_event_is_sent_again_while_the_receiver_answers_500(
    client: httpx.Client, receiver: Receiver, store_files: Store
) -> None:
    before = {outcome: callbacks(client, outcome) for outcome in ("retried", "delivered")}
    receiver.answer(200, fail_first=2)
    uid = new_id("cart")
    order(client, uid, store_files({"a.txt": b"retried\n"}), f"{receiver.url}/hooks/{uid}")

    tries = receiver.wait_for(f"/hooks/{uid}", count=3)
    assert [got.answered for got in tries] == [500, 500, 200]
    assert len({got.body for got in tries}) == 1, "the same bytes every time"
    assert len({got.headers["x-cartd-event-id"] for got in tries}) == 1
    assert all(got.signed_with(SECRET) for got in tries)
    wait_until(lambda: callbacks(client, "delivered") == before["delivered"] + 1)
    assert callbacks(client, "retried") == before["retried"] + 2


def test_each_cart_of_a_uid_ordered_again_tells_its_own_callback(
    client: httpx.Client, receiver: Receiver, store_files: Store
) -> None:
    uid = new_id("cart")
    order(client, uid, store_files({"a.txt": b"first\n"}), f"{receiver.url}/first/{uid}")
    order(client, uid, store_files({"a.txt": b"second\n"}), f"{receiver.url}/second/{uid}")

    [first] = receiver.wait_for(f"/first/{uid}")
    [second] = receiver.wait_for(f"/second/{uid}")
    assert first.event["uid"] == second.event["uid"] == uid
    assert first.event["event_id"] != second.event["event_id"]
    assert first.event["ordered_at"] < second.event["ordered_at"]


def test_a_receiver_refusing_with_a_4xx_is_not_asked_again(
    client: httpx.Client, server: CartdServer, receiver: Receiver, store_files: Store
) -> None:
    before = callbacks(client, "abandoned")
    receiver.answer(410)
    uid = new_id("cart")
    order(client, uid, store_files({"a.txt": b"gone\n"}), f"{receiver.url}/hooks/{uid}")

    wait_until(lambda: callbacks(client, "abandoned") == before + 1)
    assert [got.answered for got in receiver.to(f"/hooks/{uid}")] == [410]
    assert f"cart={uid}" in server.log()
    assert "given up at try 1: answered 410" in server.log()


@pytest.mark.parametrize(
    ("callback", "says"),
    [
        ("http://127.0.0.2:{port}/hooks", "names '127.0.0.2:{port}', to which this server"),
        ("http://localhost:2/hooks", "names 'localhost:2'"),
        ("http://user:pw@127.0.0.1:{port}/hooks", "must not carry a user name or password"),
        ("ftp://127.0.0.1:{port}/hooks", "must be an http:// or https:// URL"),
        ("http://127.0.0.1:{port}/a b", "may hold after its host only the URL characters"),
        ("http://127.0.0.1:{port}/" + "x" * 2048, "is over 2048 characters"),
        (12, "must be a URL (a string) or null"),
    ],
)
def test_an_order_naming_a_host_not_allowed_gets_400_and_nothing_is_stored(
    client: httpx.Client,
    receiver: Receiver,
    store_files: Store,
    callback: object,
    says: str,
) -> None:
    if isinstance(callback, str):
        callback = callback.format(port=receiver.port)
    uid = new_id("cart")
    response = client.post(
        f"/{uid}", json={"fileids": store_files({"a": b"a"}), "callback": callback}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("'callback' ")
    assert says.format(port=receiver.port) in response.json()["message"]
    assert client.head(f"/{uid}").status_code == 404


def test_the_description_states_the_hosts_allowed(client: httpx.Client, receiver: Receiver) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Order"]
    callback = schema["properties"]["callback"]
    text, null = callback["anyOf"]
    assert null == {"type": "null"}
    assert text["maxLength"] == 2048
    assert "127\\.0\\.0\\.1" in text["pattern"]
    assert f":{receiver.port}" in text["pattern"]
    assert receiver.host in callback["description"]


def test_an_event_waiting_for_its_receiver_is_sent_after_a_crash(
    server: CartdServer, receiver: Receiver, store_files: Store
) -> None:
    """Killed (SIGKILL) after the cart is ready while the receiver answers 500: the event
    is in the database, and the process started again sends it. (Last: it restarts the
    module's server.)"""
    receiver.answer(500)
    uid = new_id("cart")
    hook = f"/hooks/{uid}"
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        order(client, uid, store_files({"a.txt": b"kept\n"}), receiver.url + hook)
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        receiver.wait_for(hook)
    server.kill()
    assert all(got.answered == 500 for got in receiver.to(hook))
    receiver.answer(200)
    server.start()

    wait_until(lambda: any(got.answered == 200 for got in receiver.to(hook)))
    tries = receiver.to(hook)
    assert len({got.headers["x-cartd-event-id"] for got in tries}) == 1
    assert tries[-1].answered == 200
    assert tries[-1].signed_with(SECRET)


def test_in_distributed_mode_the_worker_that_made_the_cart_sends_its_event(
    archive_interface: ArchiveInterface, receiver: Receiver, store_files: Store, tmp_path: Path
) -> None:
    receiver.answer(200)
    env = {"CARTD_CALLBACK_HOSTS": receiver.host, **QUICK}
    with (
        cluster(tmp_path, archive_interface.url, "redis", "sqlite", env=env) as running,
        httpx.Client(base_url=running.server.url, timeout=30.0) as client,
    ):
        uid = new_id("cart")
        order(client, uid, store_files({"a.txt": b"distributed\n"}), f"{receiver.url}/d/{uid}")
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        [got] = receiver.wait_for(f"/d/{uid}")
        assert got.signed_with(SECRET)
        assert got.event["uid"] == uid
        # Logged once the receiver has answered and the outbox forgot the event.
        sent = f"callback event {got.event['event_id']} (ready) delivered"
        wait_until(lambda: sent in running.workers[0].log())
        assert "callback event" not in running.server.log()
