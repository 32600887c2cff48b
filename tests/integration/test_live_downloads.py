"""Downloads of a cart still being made (`Prefer: wait`), over real HTTP against a real
cartd process and the fault-injecting archive holding files on tape (and the real Archive
Interface): the answer comes at once with the final length and tag, each file's bytes
come as it is pulled (its last ones once it is verified), the whole is the download after
ready byte for byte, and a failure cuts it short, never completing a wrong file."""

from __future__ import annotations

import io
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FileEntry, ServerFactory, entry, new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart
from tests.support.cluster import cluster
from tests.support.fault_archive import FaultArchive, Faults

pytestmark = pytest.mark.archive

WAIT = {"Prefer": "wait"}
MTIME = 1_700_000_000.0


def on_tape(
    archive: FaultArchive, seconds: list[float], size: int = 200_000, *, corrupt: bool = False
) -> tuple[list[FileEntry], dict[str, bytes]]:
    """Files that leave the archive's tape `seconds` after they are asked for, one each;
    with `corrupt`, the last one's bytes are never those ordered."""
    fileids, contents = [], {}
    for index, delay in enumerate(seconds):
        file_id, data = new_id("live"), os.urandom(size)
        bad = corrupt and index == len(seconds) - 1
        archive.add(
            file_id, data, mtime=MTIME, faults=Faults(tape_seconds=delay, corrupt_always=bad)
        )
        path = f"d{index}/f{index}.bin"
        fileids.append(entry(file_id, data, path))
        contents[path] = data
    return fileids, contents


def post(server: CartdServer, fileids: list[FileEntry], **extra: object) -> str:
    uid = new_id("cart")
    answer = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids, **extra})
    assert answer.status_code == 201, answer.text
    return uid


def drain(chunks: Iterator[bytes], into: bytearray) -> None:
    """Keep every byte that comes, up to where the stream breaks off."""
    for chunk in chunks:
        into += chunk


def tar_files(data: bytes) -> dict[str, bytes]:
    """The files of a (possibly cut) tar below its top folder, as far as it reads whole."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        try:
            for info in tar:
                handle = tar.extractfile(info) if info.isfile() else None
                if handle is not None:
                    found[info.name.split("/", 1)[1]] = handle.read()
        except tarfile.ReadError:
            pass
    return found


def file_end(data: bytes, path: str) -> int:
    """Where the content of the member at `path` ends in a whole tar."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar.getmembers():
            if info.name.split("/", 1)[-1] == path:
                return info.offset_data + info.size
    raise AssertionError(path)


@pytest.mark.parametrize("bundle", [False, True])
def test_a_download_while_staging_is_the_download_after_ready_sent_as_files_leave_tape(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, bundle: bool
) -> None:
    server = cartd_factory(fault_archive.url)
    fileids, contents = on_tape(fault_archive, [0.2, 0.8, 1.6])
    uid = post(server, fileids, bundle=bundle)
    arrivals: list[tuple[float, int]] = []
    received = bytearray()
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("GET", f"/{uid}", params={"filename": "x.tar"}, headers=WAIT) as live,
    ):
        assert live.status_code == 200, live.read()
        assert live.headers["Preference-Applied"] == "wait"
        assert "Last-Modified" not in live.headers, "not ready: no ready time yet"
        assert client.head(f"/{uid}").headers["X-Pacifica-Status"] == "staging"
        for chunk in live.iter_raw():
            received += chunk
            arrivals.append((time.monotonic(), len(received)))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}", params={"filename": "x.tar"})
    assert after.status_code == 200
    assert "Preference-Applied" not in after.headers
    assert len(received) == int(live.headers["Content-Length"]) == len(after.content)
    assert bytes(received) == after.content, "the same bytes as after ready"
    assert live.headers["ETag"] == after.headers["ETag"]
    assert tar_files(after.content) == contents
    assert after.content[:512].startswith(uid.encode() if bundle else b"x")

    # The first file's bytes came before the archive let the last one go.
    last_id = fileids[-1]["id"]
    pulls = fault_archive.requests
    last_pulled = max(when for when, method, i in pulls if method == "GET" and i == last_id)
    first_done = file_end(after.content, "d0/f0.bin")
    first_came = min(when for when, length in arrivals if length >= first_done)
    assert first_came < last_pulled


def test_a_download_while_staging_from_the_real_archive_interface_is_the_one_after_ready(
    archive_interface: ArchiveInterface, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(archive_interface.url)
    # Large enough to be still pulled when the sizes, which the answer waits for, are known.
    contents = {"big.bin": os.urandom(30_000_000), "d/small.bin": os.urandom(70_000), "one": b"1"}
    fileids = []
    for path, data in contents.items():
        file_id = new_id("real")
        archive_interface.put(file_id, data, mtime=MTIME)
        fileids.append(entry(file_id, data, path))
    uid = post(server, fileids)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        live = client.get(f"/{uid}", params={"filename": "x.tar"}, headers=WAIT)
        assert live.status_code == 200, live.text
        assert live.headers["Preference-Applied"] == "wait"
        assert "Last-Modified" not in live.headers, "answered while the cart was being made"
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}", params={"filename": "x.tar"})
    assert after.status_code == 200
    assert live.content == after.content, "the same bytes as after ready"
    assert live.headers["ETag"] == after.headers["ETag"]
    assert tar_files(after.content) == contents


def test_a_zip_with_manifests_while_staging_is_the_zip_after_ready(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    """A bundled cart's zip is made from its files, each sent once verified, its CRC-32
    learned then; the central directory, which holds them all, comes last."""
    server = cartd_factory(fault_archive.url)
    fileids, contents = on_tape(fault_archive, [0.2, 0.9])
    uid = post(server, fileids, bundle=True)
    params = {"format": "zip", "manifest": "1", "filename": "x.tar"}
    arrivals: list[tuple[float, int]] = []
    received = bytearray()
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("GET", f"/{uid}", params=params, headers=WAIT) as live,
    ):
        assert live.status_code == 200, live.read()
        assert live.headers["Preference-Applied"] == "wait"
        assert live.headers["Content-Disposition"] == "attachment; filename=x.zip"
        for chunk in live.iter_raw():
            received += chunk
            arrivals.append((time.monotonic(), len(received)))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}", params=params)
    assert bytes(received) == after.content, "the same bytes as after ready"
    assert live.headers["ETag"] == after.headers["ETag"]
    with zipfile.ZipFile(io.BytesIO(after.content)) as archive:
        assert archive.testzip() is None
        assert archive.namelist()[1] == f"{uid}/manifest-md5.txt"
        assert {path: archive.read(f"{uid}/{path}") for path in contents} == contents
    first_done = after.content.index(contents["d0/f0.bin"]) + len(contents["d0/f0.bin"])
    last_id = fileids[-1]["id"]
    pulls = fault_archive.requests
    last_pulled = max(when for when, method, i in pulls if method == "GET" and i == last_id)
    assert min(when for when, length in arrivals if length >= first_done) < last_pulled


@pytest.mark.redis
def test_files_verified_by_a_worker_process_are_streamed_by_the_api(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    """Distributed mode: the stream learns from the database what another process did."""
    fileids, contents = on_tape(fault_archive, [0.2, 1.0])
    with (
        cluster(tmp_path, fault_archive.url, "redis", "sqlite") as running,
        httpx.Client(base_url=running.server.url, timeout=30) as client,
    ):
        uid = post(running.server, fileids)
        live = client.get(f"/{uid}", headers=WAIT)
        assert live.status_code == 200
        assert live.headers["Preference-Applied"] == "wait"
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}")
    assert live.content == after.content
    assert live.headers["ETag"] == after.headers["ETag"]
    assert tar_files(after.content) == contents


def test_a_file_that_fails_cuts_the_stream_and_the_cart_says_why(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    fileids, contents = on_tape(fault_archive, [0.1, 1.0], corrupt=True)
    uid = post(server, fileids)
    received = bytearray()
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("GET", f"/{uid}", headers=WAIT) as live,
    ):
        assert live.status_code == 200
        chunks = live.iter_raw()
        with pytest.raises(httpx.RemoteProtocolError):
            drain(chunks, received)
        assert len(received) < int(live.headers["Content-Length"])
        head = client.head(f"/{uid}")
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"
    assert fileids[1]["id"] in head.headers["X-Pacifica-Message"]
    assert "checksum" in head.headers["X-Pacifica-Message"]
    # What came is the first file whole, and the second's member never whole.
    assert tar_files(bytes(received)) == {"d0/f0.bin": contents["d0/f0.bin"]}
    assert len(received) < file_end(tar_of(fileids, contents), "d1/f1.bin")
    # The cut is cartd's own decision: one warning that says why, no server error.
    logged = server.log().splitlines()
    assert [line for line in logged if f"download of /{uid} cut" in line and "WARNING" in line]
    assert not [line for line in logged if "ERROR uvicorn" in line], logged


def tar_of(fileids: list[FileEntry], contents: dict[str, bytes]) -> bytes:
    """A tar laid out as cartd's (top folder, files in order), for offsets only."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for wanted in fileids:
            info = tarfile.TarInfo(f"top/{wanted['path']}")
            info.size = len(contents[wanted["path"]])
            tar.addfile(info, io.BytesIO(contents[wanted["path"]]))
    return out.getvalue()


@pytest.mark.parametrize("early", [True, False])
def test_a_file_is_sent_while_it_is_pulled_unless_told_to_wait_for_its_checksum(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, early: bool
) -> None:
    """The archive sends half the file, then stalls: with `cartd.stream_while_pulling`
    (the default) that half is already at the client while the file is not verified;
    without it, no byte of the file comes before the archive has sent all of it."""
    server = cartd_factory(
        fault_archive.url, CARTD_STREAM_WHILE_PULLING="true" if early else "false"
    )
    stall = 2.0
    # Half of it is more than a transfer chunk (1 MiB): pieces sent while pulling are whole.
    file_id, data = new_id("slow"), os.urandom(4_000_000)
    fault_archive.add(file_id, data, mtime=MTIME, faults=Faults(mid_body_seconds=stall))
    uid = post(server, [entry(file_id, data, "slow.bin")])
    received = bytearray()
    quarter_at, staged_at_a_quarter = None, None
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("GET", f"/{uid}", headers=WAIT) as live,
    ):
        assert live.status_code == 200
        for chunk in live.iter_raw():
            received += chunk
            if quarter_at is None and len(received) > len(data) // 4:
                quarter_at = time.monotonic()
                staged = client.head(f"/{uid}").headers["X-Pacifica-Files-Staged"]
                staged_at_a_quarter = int(staged)
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}")
    assert bytes(received) == after.content
    assert quarter_at is not None
    [(pulled_from, _, _)] = [r for r in fault_archive.requests if r[1:] == ("GET", file_id)]
    if early:
        # A quarter of the file came while the archive stalled halfway through it.
        assert quarter_at - pulled_from < stall
        assert staged_at_a_quarter == 0
    else:
        # (Its row may say staged a moment after its bytes went: a download learns that a
        # file is verified from the volume, before the file's group is recorded.)
        assert quarter_at - pulled_from >= stall


def test_a_pull_cut_and_made_again_while_it_is_sent_ends_in_the_same_bytes(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    """The archive cuts the first pull halfway (after what the stream has sent); the
    second pull's bytes are those already sent, so the stream goes on unbroken."""
    server = cartd_factory(fault_archive.url)
    file_id, data = new_id("cut"), os.urandom(2_000_000)
    fault_archive.add(file_id, data, mtime=MTIME, faults=Faults(reset_first=1))
    uid = post(server, [entry(file_id, data, "cut.bin")])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        live = client.get(f"/{uid}", headers=WAIT)
        assert live.status_code == 200
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}")
    assert [method for _, method, i in fault_archive.requests if i == file_id].count("GET") == 2
    assert live.content == after.content
    assert tar_files(after.content) == {"cut.bin": data}


def test_a_cut_download_resumes_with_a_range_while_the_cart_is_still_made(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    fileids, _contents = on_tape(fault_archive, [0.1, 1.2])
    uid = post(server, fileids)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        head = bytearray()
        with client.stream("GET", f"/{uid}", headers=WAIT) as live:
            assert live.status_code == 200
            for chunk in live.iter_raw():
                head += chunk
                if len(head) > 100_000:
                    break  # the client goes: the connection is dropped mid-body
            tag, length = live.headers["ETag"], int(live.headers["Content-Length"])
        assert client.head(f"/{uid}").headers["X-Pacifica-Status"] == "staging"
        rest = client.get(
            f"/{uid}",
            headers={**WAIT, "Range": f"bytes={len(head)}-", "If-Range": tag},
        )
        assert rest.status_code == 206
        assert rest.headers["Preference-Applied"] == "wait"
        assert rest.headers["Content-Range"] == f"bytes {len(head)}-{length - 1}/{length}"
        assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
        after = client.get(f"/{uid}")
    assert after.headers["ETag"] == tag
    assert bytes(head) + rest.content == after.content


def test_without_the_preference_a_cart_being_made_is_still_202(
    fault_archive: FaultArchive, cartd_factory: ServerFactory
) -> None:
    server = cartd_factory(fault_archive.url)
    fileids, _ = on_tape(fault_archive, [30.0], size=1000)
    uid = post(server, fileids)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for headers in ({}, {"Prefer": "respond-async"}):
            answer = client.get(f"/{uid}", headers=headers)
            assert answer.status_code == 202
            assert answer.text == "The cart is not ready for download."
            assert "Preference-Applied" not in answer.headers
        client.delete(f"/{uid}")


@pytest.mark.parametrize(
    ("settings", "prefer", "head_seconds", "at_most"),
    [
        pytest.param({}, "wait=1", 2.0, 4, id="the wait asked for"),
        # `cartd.max_wait` bounds every answer held before it begins, a GET's as a HEAD's.
        pytest.param({"CARTD_MAX_WAIT": "1"}, "wait=20", 4.0, 3.5, id="cartd.max_wait"),
    ],
)
def test_a_cart_whose_sizes_are_not_known_in_time_is_202_after_the_wait_allowed(
    fault_archive: FaultArchive,
    cartd_factory: ServerFactory,
    settings: dict[str, str],
    prefer: str,
    head_seconds: float,
    at_most: float,
) -> None:
    server = cartd_factory(fault_archive.url, **settings)
    file_id, data = new_id("slow"), b"slow to say its size\n"
    fault_archive.add(file_id, data, faults=Faults(head_seconds=head_seconds))
    uid = post(server, [entry(file_id, data, "s.txt")])
    began = time.monotonic()
    answer = httpx.get(f"{server.url}/{uid}", headers={"Prefer": prefer}, timeout=30)
    assert answer.status_code == 202
    assert 0.9 < time.monotonic() - began < at_most
