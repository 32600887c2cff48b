"""Waiting on the server and the live page (API.md section 3): `HEAD` with `Prefer:
wait=N`, the event stream `GET /<uid>/events`, and the page `GET /<uid>/view`, over real
HTTP against a real cartd process and the fault-injecting archive, whose files stay on
tape until each test lets them go. The page is opened in a real headless Chromium
(Debian's `chromium` package, driven by Playwright; no browser is ever downloaded).

Every run writes a screenshot of the page under the test's temporary folder;
`CARTD_SCREENSHOT=docs` also replaces the one kept in `docs/images/view.png`."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import FileEntry, new_id
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.watching import EventReader, ServerEvent, TapeShelf

pytestmark = pytest.mark.archive

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Time for anything the page shows after a change: the server looks at most every 2 s.
SHOWN = 15_000


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


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Browser, server: CartdServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 640})
    opened = context.new_page()
    yield opened
    context.close()


def order(client: httpx.Client, fileids: list[FileEntry], uid: str | None = None) -> str:
    uid = uid or new_id("cart")
    answer = client.post(f"/{uid}", json={"fileids": fileids})
    assert answer.status_code == 201, answer.text
    return uid


def on_tape(client: httpx.Client, uid: str, count: int) -> None:
    """Wait until `count` of the cart's files were asked to be staged and are on tape (a
    file is known to be on tape once sized, and asked to be staged by its step after)."""

    def shelved() -> bool:
        files = client.get(f"/{uid}/files").json()["files"]
        asked = [(file["status"], file["reason"]) for file in files]
        return asked.count(("staging", "on_tape")) == count

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
        return [(file["status"], file["reason"]) for file in holding] == [
            ("staging", "on_tape"),
            ("staging", "on_tape"),
        ]

    seen = [start] if shelved(start) else [start, *reader.until(shelved)]
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


# -- the live page in a browser --------------------------------------------------------


def record(page: Page) -> tuple[list[str], list[str]]:
    """Every request the page makes, and every error it logs (a blocked script or style
    would be one: the policy names them by hash)."""
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return requests, errors


def test_the_page_follows_files_leaving_tape_then_offers_the_download(
    page: Page, server: CartdServer, client: httpx.Client, shelf: TapeShelf, tmp_path: Path
) -> None:
    files = [shelf.add(f"run/{name}.dat", size=400_000) for name in ("alpha", "beta", "gamma")]
    uid = order(client, files)
    requests, errors = record(page)
    page.goto(f"{server.url}/{uid}/view")

    # Accessible: the bars have their labels, the status is a live region.
    files_bar = page.get_by_role("progressbar", name="Files staged")
    expect(files_bar).to_be_visible(timeout=SHOWN)
    expect(page.get_by_role("progressbar", name="Bytes staged")).to_be_visible()
    expect(page.get_by_role("status")).to_have_attribute("aria-live", "polite")
    expect(page.locator("html")).to_have_attribute("lang", "en")

    holding = page.locator("#holding li")
    expect(holding).to_have_count(3, timeout=SHOWN)
    expect(holding.filter(has_text="On tape")).to_have_count(3, timeout=SHOWN)
    expect(page.locator("#files-text")).to_have_text("0 of 3 files")
    expect(page.locator("#bytes-text")).to_have_text("0 bytes of 1.20 MB")

    shelf.release(files[0])
    expect(page.locator("#files-text")).to_have_text("1 of 3 files", timeout=SHOWN)
    expect(files_bar).to_have_attribute("value", "1")
    shelf.release(files[1])
    expect(page.locator("#files-text")).to_have_text("2 of 3 files", timeout=SHOWN)
    expect(page.locator("#bytes-text")).to_have_text("800.0 kB of 1.20 MB")
    # The one left is named, with why it waits.
    expect(holding).to_have_count(1)
    expect(holding).to_contain_text("run/gamma.dat")
    expect(holding).to_contain_text("On tape: the archive is bringing it to disk")
    expect(page.get_by_role("status")).to_have_text("Staging files: 2 of 3 files staged")
    expect(page.locator("#rate")).to_contain_text("/s")
    expect(page.locator("#eta")).to_have_text("waiting for tape")
    page.screenshot(path=tmp_path / "view.png", full_page=True)
    if os.environ.get("CARTD_SCREENSHOT") == "docs":
        page.screenshot(path=ROOT / "docs" / "images" / "view.png", full_page=True)
    expect(page.locator("#done")).to_be_hidden()

    shelf.release(files[2])
    download = page.get_by_role("link", name="Download the tar")
    expect(download).to_be_visible(timeout=SHOWN)
    expect(page.get_by_role("status")).to_have_text("Ready: every file is staged and verified")
    expect(page.locator("#holding-section")).to_be_hidden()

    href = download.get_attribute("href")
    assert href == f"../{uid}"
    tar_url = page.evaluate("url => new URL(url, location.href).href", href)
    assert tar_url == f"{server.url}/{uid}"
    answer = httpx.get(tar_url, timeout=30)
    assert answer.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        got = {
            member.name.split("/", 1)[1]: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }
    assert got == {file["path"]: shelf.contents[file["id"]] for file in files}

    # "Every file" reads the per-file view.
    page.get_by_text("Every file", exact=True).click()
    expect(page.locator("#files tr")).to_have_count(3, timeout=SHOWN)
    expect(page.locator("#files tr").first).to_contain_text("staged")

    # Nothing but the server was asked for anything, and nothing was blocked.
    assert requests, "the page made its requests"
    assert all(url.startswith(f"{server.url}/") for url in requests), requests
    assert f"{server.url}/{uid}/events" in requests
    assert f"{server.url}/{uid}/files" in requests
    assert errors == []

    # Readable on a phone: nothing wider than the screen.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_failed_cart_shows_its_error_and_every_name_as_text(
    page: Page, server: CartdServer, client: httpx.Client, shelf: TapeShelf
) -> None:
    markup = "<img src=x onerror=window.pwned=1>.bin"
    bad = shelf.add(markup, size=10_000, faults=Faults(corrupt_always=True))
    held = shelf.add("never/<b>leaves</b>.bin")
    uid = order(client, [bad, held])
    requests, errors = record(page)
    page.goto(f"{server.url}/{uid}/view")

    status = page.get_by_role("status")
    expect(status).to_contain_text("Failed: ", timeout=SHOWN)
    expect(status).to_contain_text("checksum")
    expect(status).to_contain_text(markup)
    expect(page.locator("#holding li").first).to_contain_text(markup)
    expect(page.locator("#holding li").first).to_contain_text("Failed")
    expect(page.locator("#done")).to_be_hidden()
    # Shown as text, never made into elements.
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img, main b").count() == 0
    assert errors == []
    assert all(url.startswith(f"{server.url}/") for url in requests), requests
