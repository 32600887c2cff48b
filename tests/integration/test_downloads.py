"""Downloads under abuse, over real HTTP against the real Archive Interface: clients that
drop or stall mid-stream never wedge the server."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import FileEntry, ServerFactory, entry, new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart
from tests.support.fault_archive import FaultArchive, Faults

pytestmark = pytest.mark.archive

Store = Callable[..., list[FileEntry]]
MB = 1_000_000
#: Seconds any request may take once the abuse is over; a healthy server answers in ms.
ANSWER_WITHIN = 10.0


def order(server: CartdServer, fileids: list[FileEntry], **extra: object) -> str:
    uid = new_id("dl")
    response = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids, **extra})
    assert response.status_code == 201, response.text
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert wait_for_cart(client, uid, timeout=60).headers["X-Pacifica-Status"] == "ready"
    return uid


def open_download(server: CartdServer, uid: str) -> socket.socket:
    """A raw GET of the cart: the test decides how much of the answer it ever reads."""
    address = urlsplit(server.url)
    sock = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80))
    sock.sendall(f"GET /{uid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def drop(sock: socket.socket, read: int) -> None:
    """Read about `read` bytes of the answer, then abort the connection (RST)."""
    sock.settimeout(30)
    got = 0
    while got < read:
        chunk = sock.recv(min(1 << 16, read - got))
        if not chunk:
            break
        got += len(chunk)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    sock.close()


@contextlib.contextmanager
def stalled(server: CartdServer, uid: str, count: int) -> Iterator[list[socket.socket]]:
    """Downloads asked for and never read, left open."""
    sockets = [open_download(server, uid) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def answers(call: Callable[[httpx.Client], httpx.Response], server: CartdServer) -> int:
    """The status code of one request, which must come within `ANSWER_WITHIN` seconds."""
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as client:
        try:
            return call(client).status_code
        except httpx.TimeoutException:
            pytest.fail(f"no answer within {ANSWER_WITHIN}s: the server is wedged")


def test_dropped_and_stalled_downloads_never_wedge_the_server(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    # Bigger than the loopback socket buffers, so a stalled client holds a stream open.
    server = cartd_factory(archive_interface.url, TRANSFER_SIZE="64 KiB")
    big = order(server, store_files({"d/0.bin": os.urandom(40 * MB)}))
    small = order(server, store_files({"s.txt": b"small\n" * 100}))

    stop = threading.Event()
    failures: list[BaseException] = []

    # Orders of many files (they fail at once: no checksum to verify against) hold the
    # write lock over many allocations, so the garbage collector often runs inside it.
    many = {
        "fileids": [
            {"id": "x", "path": f"{n}", "hashtype": "md5", "hashsum": ""} for n in range(300)
        ]
    }

    def busy(request: Callable[[httpx.Client], object]) -> None:
        """Requests that take the write lock, over and over while downloads drop."""
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                while not stop.is_set():
                    request(client)
        except BaseException as exc:
            failures.append(exc)

    requests: list[Callable[[httpx.Client], object]] = [
        lambda c: c.get(f"/{small}"),
        lambda c: c.post(f"/{new_id('m')}", json=many),
    ]
    helpers = [threading.Thread(target=busy, args=(r,), daemon=True) for r in requests]
    with stalled(server, big, count=3):
        for helper in helpers:
            helper.start()
        try:
            for _round in range(12):
                droppers = [
                    threading.Thread(
                        target=drop, args=(open_download(server, big), (index + 1) * MB)
                    )
                    for index in range(4)
                ]
                for dropper in droppers:
                    dropper.start()
                for dropper in droppers:
                    dropper.join(60)
        finally:
            stop.set()
            for helper in helpers:
                helper.join(ANSWER_WITHIN * 2)

        assert not failures, failures
        fileids = store_files({"n.txt": b"new\n"})
        new = {"fileids": fileids}
        assert answers(lambda c: c.post(f"/{new_id('dl')}", json=new), server) == 201
        assert answers(lambda c: c.get(f"/{small}"), server) == 200
        assert answers(lambda c: c.head(f"/{small}"), server) == 204
        assert answers(lambda c: c.delete(f"/{small}"), server) == 200

        # Stopped while the stalled downloads still hold their connections open.
        assert server.process is not None
        began = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(20)
        except Exception:
            pytest.fail("SIGTERM did not stop the server within 20s")
        assert time.monotonic() - began < 20


def test_a_later_write_to_a_ready_cart_changes_neither_its_etag_nor_its_bytes(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url)
    uid = order(server, store_files({"a/b.txt": b"contents\n" * 1000}))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.get(f"/{uid}")
        assert first.status_code == 200
        # A later write to the cart's row: a download's lease, an admin tool, anything.
        database = server.workdir / "volume" / "cartd.sqlite3"
        with sqlite3.connect(database) as connection:
            changed = connection.execute(
                "UPDATE carts SET updated_at = '2031-01-02 03:04:05.000000' WHERE uid = ?",
                (uid,),
            ).rowcount
        assert changed == 1
        again = client.get(f"/{uid}")
        assert again.status_code == 200
        for header in ("ETag", "Last-Modified", "Content-Disposition", "Content-Length"):
            assert again.headers[header] == first.headers[header], header
        assert again.content == first.content
        # A resumed download gets the rest of those very bytes.
        rest = client.get(
            f"/{uid}", headers={"Range": "bytes=1000-", "If-Range": first.headers["ETag"]}
        )
        assert rest.status_code == 206
        assert rest.content == first.content[1000:]


@pytest.mark.parametrize("name", ["...tar", "..tar", "..\\x.tar", "a\\b", "C:x.tar"])
def test_a_download_name_whose_top_folder_would_escape_is_refused(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store, name: str
) -> None:
    server = cartd_factory(archive_interface.url)
    uid = order(server, store_files({"d/0.bin": b"zero"}))
    response = httpx.get(f"{server.url}/{uid}", params={"filename": name})
    assert response.status_code == 400, response.headers
    assert response.headers["Content-Type"] == "application/json"
    assert "filename" in response.json()["message"]


def inside(top: str, name: str) -> bool:
    """Whether a member name stays in the top folder for POSIX and Windows extractors."""
    for path in (PurePosixPath(name), PureWindowsPath(name)):
        if path.is_absolute() or path.drive or path.anchor:
            return False
        if path.parts[0] != top or any(part in {"", ".", ".."} for part in path.parts):
            return False
        if any(len(part.encode()) > 255 for part in path.parts):
            return False
    return True


@pytest.mark.parametrize("bundle", [False, True])
def test_every_member_stays_inside_its_top_folder_for_every_extractor(
    archive_interface: ArchiveInterface,
    cartd_factory: ServerFactory,
    store_files: Store,
    tmp_path: Path,
    bundle: bool,
) -> None:
    server = cartd_factory(archive_interface.url)
    long = "\u00e9" * 127  # 254 bytes: as long as a file name may be, with a suffix
    files = {
        "d/0.bin": b"zero",
        "-rf/.../..a": b"names that look like options or dots",
        f"{long}/{long}t": b"long",
        f"{long}/{long}b": b"long too",
        "\u65e5\u672c/caf\u00e9.txt": b"utf-8",
        "sp ace/'q\"uote'.txt": b"quotes",
    }
    for refused in ("..\\..\\evil.txt", "x\\..\\..\\y.txt", f"{long}{long}.txt"):
        [bad] = store_files({refused: b"never ordered"})
        answer = httpx.post(f"{server.url}/refused", json={"fileids": [bad]})
        assert answer.status_code == 400, refused
    uid = order(server, store_files(files), bundle=bundle)
    response = httpx.get(f"{server.url}/{uid}", params={"filename": "my data.tar"}, timeout=30)
    assert response.status_code == 200
    top = uid if bundle else "my data"
    work = tmp_path / "extract"  # nothing but what the test puts there
    work.mkdir()
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:") as tar:
        names = tar.getnames()
        assert names[0] == top
        outside = [name for name in names if not inside(top, name)]
        assert not outside
        assert len(set(names)) == len(names)
        contents = sorted(
            handle.read()
            for info in tar.getmembers()
            if info.isfile() and (handle := tar.extractfile(info)) is not None
        )
        assert contents == sorted(files.values())

        python = work / "python"
        tar.extractall(python, filter="data")
    gnu = work / "gnu"
    gnu.mkdir()
    archive = work / "cart.tar"
    archive.write_bytes(response.content)
    listed = subprocess.run(
        ["tar", "-tf", str(archive)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert [name.rstrip("/") for name in listed] == names
    subprocess.run(["tar", "-xf", str(archive), "-C", str(gnu)], check=True, timeout=60)
    for root in (python, gnu):
        extracted = sorted(path.read_bytes() for path in root.rglob("*") if path.is_file())
        assert extracted == sorted(files.values())
        assert [path.name for path in root.iterdir()] == [top]
    assert sorted(path.name for path in work.iterdir()) == ["cart.tar", "gnu", "python"]


def cart_files(server: CartdServer) -> dict[bytes, Path]:
    """The staged files of the server's only cart, by their contents."""
    [cart] = (server.workdir / "volume" / "carts").iterdir()
    return {path.read_bytes(): path for path in (cart / "files").iterdir()}


def tar_contents(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {
            info.name.split("/", 1)[1]: handle.read()
            for info in tar.getmembers()
            if info.isfile() and (handle := tar.extractfile(info)) is not None
        }


def test_a_damaged_volume_copy_is_staged_again_never_served(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url)
    files = {name: os.urandom(50_000) for name in ("a.bin", "b.bin", "c.bin", "d.bin")}
    uid = order(server, store_files(files))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.get(f"/{uid}")
        assert tar_contents(first.content) == files
        staged = cart_files(server)
        staged[files["a.bin"]].write_bytes(bytes(50_000))  # in place: same size, other bytes
        with staged[files["b.bin"]].open("r+b") as handle:
            handle.truncate(20_000)
        staged[files["c.bin"]].unlink()

        refused = client.get(f"/{uid}")
        assert refused.status_code == 202
        assert refused.text == "The cart is not ready for download."
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        again = client.get(f"/{uid}")
        assert again.status_code == 200
        assert tar_contents(again.content) == files
        # Made ready anew from the same files: the same bytes, so the same tag (a download
        # cut by the repair resumes), and a new ready time.
        assert again.headers["ETag"] == first.headers["ETag"]
        assert again.content == first.content
        made = [parsedate_to_datetime(r.headers["Last-Modified"]) for r in (first, again)]
        assert made[1] >= made[0]


def test_a_bundled_cart_whose_bundle_is_cut_short_is_bundled_again(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    server = cartd_factory(archive_interface.url)
    files = {"x/a.bin": os.urandom(30_000), "b.bin": os.urandom(30_000)}
    uid = order(server, store_files(files), bundle=True)
    [cart] = (server.workdir / "volume" / "carts").iterdir()
    bundle = cart / "bundle.tar"
    with bundle.open("r+b") as handle:
        handle.truncate(bundle.stat().st_size // 2)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get(f"/{uid}").status_code == 202
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        again = client.get(f"/{uid}")
        assert again.status_code == 200
        assert tar_contents(again.content) == files


def test_head_says_staging_while_a_damaged_file_is_pulled_again(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    file_id, data = new_id(), os.urandom(10_000)
    # The second pull (the repair) stalls a while, so the cart is seen staging meanwhile.
    fault_archive.add(
        file_id, data, mtime=time.time() - 86400, faults=Faults(delay_first=2, delay_seconds=2)
    )
    uid = order(server, [entry(file_id, data, "f.bin")])
    cart_files(server)[data].write_bytes(bytes(len(data)))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get(f"/{uid}").status_code == 202
        head = client.head(f"/{uid}")
        assert head.status_code == 204
        assert head.headers["X-Pacifica-Status"] == "staging"
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        assert tar_contents(client.get(f"/{uid}").content) == {"f.bin": data}


def drain(chunks: Iterator[bytes], into: bytearray) -> None:
    """Keep every byte that comes, up to where the stream breaks off."""
    for chunk in chunks:
        into += chunk


def test_a_file_changed_after_the_headers_were_sent_cuts_the_stream(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory, store_files: Store
) -> None:
    # The first file is bigger than the socket buffers: the server is still sending it
    # when the second is changed.
    server = cartd_factory(archive_interface.url, TRANSFER_SIZE="64 KiB")
    files = {"1.bin": os.urandom(40 * MB), "2.bin": os.urandom(100_000)}
    uid = order(server, store_files(files))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        whole = client.get(f"/{uid}").content
        received = bytearray()
        with client.stream("GET", f"/{uid}") as response:
            assert response.status_code == 200
            chunks = response.iter_raw(64 * 1024)
            received += next(chunks)
            second = cart_files(server)[files["2.bin"]]
            with second.open("r+b") as handle:  # in place, size kept
                handle.write(b"X" * 1000)
            with pytest.raises(httpx.RemoteProtocolError):
                drain(chunks, received)
        assert len(received) < len(whole)
        assert whole.startswith(bytes(received)), "never a wrong byte"
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        assert tar_contents(client.get(f"/{uid}").content) == files
