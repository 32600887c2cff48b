"""The live page of a cart (`GET /<uid>/view`) in a real headless Chromium (Debian's
`chromium` package, driven by Playwright; no browser is ever downloaded), against a real
cartd process and the fault-injecting archive, whose files leave tape when the test says.

`CARTD_SCREENSHOT=docs` also writes the screenshot kept in `docs/images/view.png`; every
run writes one under the test's temporary folder."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import FileEntry, new_id
from tests.support.cartd_server import CartdServer
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.watching import TapeShelf

pytestmark = pytest.mark.archive

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Time for anything the page shows after a change: the server looks at most every 2 s.
SHOWN = 15_000


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


@pytest.fixture(scope="module")
def archive() -> Iterator[FaultArchive]:
    with FaultArchive() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    archive: FaultArchive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CartdServer]:
    workdir = tmp_path_factory.mktemp("viewed")
    env = {"ARCHIVE_INTERFACE_URL": archive.url, "VOLUME_PATH": str(workdir / "volume")}
    with CartdServer(workdir, env) as running:
        yield running


@pytest.fixture
def page(browser: Browser, server: CartdServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 640})
    opened = context.new_page()
    yield opened
    context.close()


def order(server: CartdServer, fileids: list[FileEntry]) -> str:
    uid = new_id("cart")
    answer = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids})
    assert answer.status_code == 201, answer.text
    return uid


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
    page: Page, server: CartdServer, archive: FaultArchive, tmp_path: Path
) -> None:
    shelf = TapeShelf(archive)
    files = [shelf.add(f"run/{name}.dat", size=400_000) for name in ("alpha", "beta", "gamma")]
    uid = order(server, files)
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
    page: Page, server: CartdServer, archive: FaultArchive
) -> None:
    shelf = TapeShelf(archive)
    markup = "<img src=x onerror=window.pwned=1>.bin"
    bad = shelf.add(markup, size=10_000, faults=Faults(corrupt_always=True))
    held = shelf.add("never/<b>leaves</b>.bin")
    uid = order(server, [bad, held])
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
