"""Waiting on the server (API.md section 3): `HEAD` with `Prefer: wait=N`, the event stream
`GET /<uid>/events` and the live page's HTML, over real HTTP against a real cartd process
and the fault-injecting archive, whose files stay on tape until each test lets them go."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import FileEntry, new_id
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.watching import EventReader, ServerEvent, TapeShelf

pytestmark = pytest.mark.archive


@pytest.fixture(scope="module")
def archive() -> Iterator[FaultArchive]:
    with FaultArchive() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    archive: FaultArchive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CartdServer]:
    workdir = tmp_path_factory.mktemp("watched")
    env = {"ARCHIVE_INTERFACE_URL": archive.url, "VOLUME_PATH": str(workdir / "volume")}
    with CartdServer(workdir, env) as running:
        yield running


@pytest.fixture
def client(server: CartdServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        yield http


@pytest.fixture
def shelf(archive: FaultArchive) -> TapeShelf:
    return TapeShelf(archive)


def order(client: httpx.Client, fileids: list[FileEntry], uid: str | None = None) -> str:
    uid = uid or new_id("cart")
    answer = client.post(f"/{uid}", json={"fileids": fileids})
    assert answer.status_code == 201, answer.text
    return uid


def on_tape(client: httpx.Client, uid: str, count: int) -> None:
    """Wait until `count` of the cart's files are known to be on tape."""

    def shelved() -> bool:
        files = client.get(f"/{uid}/files").json()["files"]
        return sum(file["reason"] == "on_tape" for file in files) == count

    wait_until(shelved)


def test_a_waiting_head_answers_when_its_cart_changes(
    client: httpx.Client, shelf: TapeShelf
) -> None:
    first, second = shelf.add("a/first.bin"), shelf.add("b/second.bin")
    uid = order(client, [first, second])
    on_tape(client, uid, 2)

    plain = client.head(f"/{uid}")
    assert plain.status_code == 204
    assert "Preference-Applied" not in plain.headers

    # Nothing changes: the answer comes after the N seconds, the same as before.
    quiet = client.head(f"/{uid}", headers={"Prefer": "wait=1"})
    assert quiet.headers["Preference-Applied"] == "wait=1"
    assert {k: v for k, v in quiet.headers.items() if k.startswith("x-pacifica")} == {
        k: v for k, v in plain.headers.items() if k.startswith("x-pacifica")
    }

    # A file leaves tape: the waiting HEAD answers with the new counts, long before its
    # N seconds (cut to cartd.max_wait, 50 s by default) and the client's 20 s timeout.
    # Had it come only after the first file was verified, the second one is its change.
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.head, f"/{uid}", headers={"Prefer": "wait=3600"})
        shelf.release(first)
        wait_until(lambda: client.head(f"/{uid}").headers["X-Pacifica-Files-Staged"] == "1")
        shelf.release(second)
        answer = waiting.result()
    assert answer.status_code == 204
    assert answer.headers["Preference-Applied"] == "wait=50"
    assert int(answer.headers["X-Pacifica-Files-Staged"]) >= 1

    # A cart that is ready answers at once: nothing more happens to it by itself.
    wait_for_cart(client, uid)
    ready = client.head(f"/{uid}", headers={"Prefer": "wait=3600"})
    assert ready.headers["X-Pacifica-Status"] == "ready"
    assert "Preference-Applied" not in ready.headers


def test_a_waiting_head_of_a_cart_deleted_meanwhile_says_it_is_gone(
    client: httpx.Client, shelf: TapeShelf
) -> None:
    uid = order(client, [shelf.add("held.bin")])
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.head, f"/{uid}", headers={"Prefer": "wait=3600"})
        assert client.delete(f"/{uid}").status_code == 200
        answer = waiting.result()
    assert answer.status_code == 404
    assert answer.headers["X-Pacifica-Message"] == f"No cart with uid {uid} found"
    unknown = client.head(f"/{new_id('none')}", headers={"Prefer": "wait=3600"})
    assert unknown.status_code == 404


def _ids(events: list[ServerEvent]) -> list[int]:
    return [int(event.id or "") for event in events]


def test_the_event_stream_carries_each_change_until_the_cart_is_ready(
    client: httpx.Client, shelf: TapeShelf
) -> None:
    first, second = shelf.add("one/first.bin"), shelf.add("two/second.bin", size=50_000)
    uid = order(client, [first, second])
    reader = EventReader(client, f"/{uid}/events")
    opened = reader.start()
    assert opened.status_code == 200
    assert opened.headers["Content-Type"].startswith("text/event-stream")
    assert opened.headers["Cache-Control"] == "no-store"

    start = reader.next()
    assert start.name == "state"
    assert start.retry == 3000, "the first event says how soon to reconnect"
    assert start.data["uid"] == uid
    assert start.data["changed"] == []
    assert start.data["files_total"] == 2
    assert start.data["files_staged"] == 0

    def shelved(event: ServerEvent) -> bool:
        holding = event.data["holding"]
        assert isinstance(holding, list)
        return [file["reason"] for file in holding] == ["on_tape", "on_tape"]

    seen = [start, *reader.until(shelved)]
    held = seen[-1].data
    assert held["files_sized"] == 2
    assert held["bytes_total"] == 150_000
    assert held["holding"] == [
        {
            "id": first["id"],
            "path": "one/first.bin",
            "status": "staging",
            "reason": "on_tape",
            "error": None,
            "attempts": 0,
        },
        {
            "id": second["id"],
            "path": "two/second.bin",
            "status": "staging",
            "reason": "on_tape",
            "error": None,
            "attempts": 0,
        },
    ]

    shelf.release(first)
    seen += reader.until(lambda event: event.data["files_staged"] == 1)
    assert seen[-1].name == "change"
    assert "progress" in seen[-1].data["changed"]
    assert seen[-1].data["bytes_staged"] == 100_000
    assert [file["path"] for file in seen[-1].data["holding"]] == ["two/second.bin"]

    shelf.release(second)
    seen += reader.rest()
    names = [event.name for event in seen]
    assert names[0] == "state"
    assert names[-1] == "ready"
    assert set(names[1:-1]) == {"change"}, names
    last = seen[-1].data
    assert (last["status"], last["phase"], last["files_staged"]) == ("ready", "ready", 2)
    assert last["bytes_staged"] == 150_000
    assert last["holding"] == []
    ids = _ids(seen)
    assert ids == sorted(set(ids)), "ids only grow"
    staged = [event.data["files_staged"] for event in seen]
    assert staged == sorted(staged)

    # Reconnecting with the last id: the current state again, with ids past it.
    again = EventReader(client, f"/{uid}/events", {"Last-Event-ID": str(ids[-1] + 10**9)})
    assert again.start().status_code == 200
    after = again.rest()
    assert [event.name for event in after] == ["state", "ready"]
    assert min(_ids(after)) > ids[-1] + 10**9
    assert after[0].data == {**last, "changed": []}


def test_the_event_stream_ends_when_the_cart_is_deleted(
    client: httpx.Client, shelf: TapeShelf
) -> None:
    uid = order(client, [shelf.add("kept/on/tape.bin")])
    reader = EventReader(client, f"/{uid}/events")
    assert reader.start().status_code == 200
    assert reader.next().name == "state"
    assert client.delete(f"/{uid}").status_code == 200
    last = reader.rest()[-1]
    assert last.name == "deleted"
    assert last.data == {
        "uid": uid,
        "message": "The cart does not exist or has already been deleted",
        "changed": ["cart"],
    }
    gone = client.get(f"/{uid}/events")
    assert gone.status_code == 404
    assert gone.json()["message"] == f"No cart with uid {uid} found"
    bad = client.get("/bad%20uid/events")
    assert bad.status_code == 400
    assert "invalid cart uid" in bad.json()["message"]


def test_the_live_page_is_served_with_a_strict_policy(
    client: httpx.Client, shelf: TapeShelf
) -> None:
    # A cart named `view` keeps its compatible routes; its page is /view/view.
    order(client, [shelf.add("v.bin")], uid="view")
    cart = client.get("/view/view")
    assert cart.status_code == 200
    assert cart.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = cart.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; script-src 'sha256-")
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert 'data-uid="view"' in cart.text
    assert 'data-page="live"' in cart.text
    assert client.head("/view").headers["X-Pacifica-Status"] == "staging"
    assert client.get("/view").status_code == 202
    assert client.delete("/view").status_code == 200

    missing = client.get(f"/{new_id('none')}/view")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "it was never ordered, or it was deleted" in missing.text
    assert missing.headers["Content-Security-Policy"] == policy
    invalid = client.get("/%3Cb%3Eevil/view")
    assert invalid.status_code == 400
    assert "evil" not in invalid.text, "a name that is no uid is not shown"
    assert "That is not the name of a cart" in invalid.text


def test_a_stream_of_a_cart_already_ready_is_its_state_and_the_end(
    client: httpx.Client, shelf: TapeShelf
) -> None:
    uid = order(client, [shelf.add("quick.bin", size=1000, faults=Faults())])
    wait_for_cart(client, uid)
    answer = client.get(f"/{uid}/events")  # ends, within the client's timeout
    assert answer.status_code == 200
    events = [line for line in answer.text.split("\n") if line.startswith("event:")]
    assert events == ["event: state", "event: ready"]
