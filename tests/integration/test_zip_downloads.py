"""Downloads a person checks offline (`?format=zip`, `?manifest=1`), over real HTTP against
the real Archive Interface: the zip and the manifests read back with Python's zipfile,
Info-ZIP's `unzip -t` and coreutils' `sha256sum -c`/`md5sum -c`, a ranged zip download
resumed to the same bytes, bundled and streamed carts alike, and the tar unchanged."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import FileEntry, entry, new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart

# The module's cartd is conftest's `ai_server`, embedded on SQLite only: the formats
# depend on no runner or database server.
pytestmark = [
    pytest.mark.archive,
    pytest.mark.parametrize("ai_server", ["sqlite"], indirect=True),
]

Store = Callable[..., list[FileEntry]]
MD5 = {"a/b/one.txt": b"one\n" * 1000, "caf\u00e9/\u65e5\u672c.bin": os.urandom(70_000)}
SHA256 = {"two.bin": os.urandom(300_000), "a/empty": b""}
CONTENTS = {**MD5, **SHA256}


@dataclass(frozen=True)
class Carts:
    streamed: str
    bundled: str


@pytest.fixture(scope="module")
def carts(ai_server: CartdServer, archive_interface: ArchiveInterface) -> Carts:
    """A streamed and a bundled cart of the same files, ordered together once for the
    module."""
    made = Carts("zip-streamed", "zip-bundled")
    store = _store(archive_interface)
    with httpx.Client(base_url=ai_server.url, timeout=30.0) as http:
        for uid in (made.streamed, made.bundled):
            fileids = store(MD5, "md5") + store(SHA256, "sha256")
            body = {"fileids": fileids, "bundle": uid == made.bundled}
            assert http.post(f"/{uid}", json=body).status_code == 201
        for uid in (made.streamed, made.bundled):
            assert wait_for_cart(http, uid).headers["X-Pacifica-Status"] == "ready"
    return made


def _store(archive: ArchiveInterface) -> Store:
    """`store_files` for a module's fixture: files of one hash type, of a fixed time."""

    def store(contents: dict[str, bytes], hashtype: str) -> list[FileEntry]:
        entries = []
        for path, data in contents.items():
            file_id = new_id("zip")
            archive.put(file_id, data, mtime=1_600_000_000)
            entries.append(entry(file_id, data, path, hashtype))
        return entries

    return store


def unzip(tmp_path: Path, data: bytes, *args: str) -> str:
    archive = tmp_path / "cart.zip"
    archive.write_bytes(data)
    done = subprocess.run(
        ["unzip", *args, str(archive)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getnames()


@pytest.mark.parametrize("bundled", [False, True], ids=["streamed", "bundled"])
def test_zip_and_manifests_read_back_and_check_with_standard_tools(
    client: httpx.Client, carts: Carts, ai_server: CartdServer, tmp_path: Path, bundled: bool
) -> None:
    uid = carts.bundled if bundled else carts.streamed
    top = uid if bundled else "data"
    tar = client.get(f"/{uid}", params={"filename": "data.tar"})
    plain = client.get(f"/{uid}", params={"filename": "data.tar", "format": "zip"})
    listed = client.get(
        f"/{uid}", params={"filename": "data.tar", "format": "zip", "manifest": "1"}
    )
    for answer in (plain, listed):
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "application/zip"
        assert answer.headers["Content-Disposition"] == "attachment; filename=data.zip"
        assert answer.headers["Content-Length"] == str(len(answer.content))
        assert answer.headers["Accept-Ranges"] == "bytes"
        assert "Content-Encoding" not in answer.headers
    tags = {tar.headers["ETag"], plain.headers["ETag"], listed.headers["ETag"]}
    assert len(tags) == 3, "each format and manifest has a tag of its own"

    with zipfile.ZipFile(io.BytesIO(plain.content)) as archive:
        assert archive.testzip() is None
        assert [name.rstrip("/") for name in archive.namelist()] == tar_names(tar.content)
        for path, data in CONTENTS.items():
            info = archive.getinfo(f"{top}/{path}")
            assert info.compress_type == zipfile.ZIP_STORED
            assert archive.read(info) == data
    with zipfile.ZipFile(io.BytesIO(listed.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names[:3] == [f"{top}/", f"{top}/manifest-md5.txt", f"{top}/manifest-sha256.txt"]
        sha256 = archive.read(f"{top}/manifest-sha256.txt").decode()
    assert sha256 == "".join(
        f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in SHA256.items()
    )
    assert "No errors detected" in unzip(tmp_path, listed.content, "-t")
    out = tmp_path / "out"
    unzip(tmp_path, listed.content, "-q", "-d", str(out))
    for tool, manifest in (("sha256sum", "manifest-sha256.txt"), ("md5sum", "manifest-md5.txt")):
        checked = subprocess.run(
            [tool, "-c", manifest], cwd=out / top, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.count(": OK") == len(MD5 if tool == "md5sum" else SHA256)

    # Each file's CRC-32 was recorded as it was pulled, not worked out at download.
    with sqlite3.connect(ai_server.workdir / "vol" / "cartd.sqlite3") as database:
        recorded = dict(
            database.execute(
                "SELECT f.path, f.crc32 FROM cart_files f JOIN carts c ON c.id = f.cart_id"
                " WHERE c.uid = ?",
                (uid,),
            ).fetchall()
        )
    assert recorded == {path: zlib.crc32(data) for path, data in CONTENTS.items()}


def test_a_ranged_zip_download_resumes_to_identical_bytes(
    client: httpx.Client, carts: Carts
) -> None:
    params = {"format": "zip", "manifest": "1"}
    whole = client.get(f"/{carts.streamed}", params=params)
    tag = whole.headers["ETag"]
    assert client.get(f"/{carts.streamed}", params=params).headers["ETag"] == tag, "stable"
    size = len(whole.content)
    with client.stream("GET", f"/{carts.streamed}", params=params) as broken:
        first = next(broken.iter_raw(100_000))  # the connection drops after this
    # Resumed from there, then from inside the central directory, as a client would.
    directory = whole.content.rindex(b"PK\x01\x02")
    got = bytearray(first)
    for end in (directory - 7, size):
        rest = client.get(
            f"/{carts.streamed}",
            params=params,
            headers={"Range": f"bytes={len(got)}-{end - 1}", "If-Range": tag},
        )
        assert rest.status_code == 206, rest.text
        assert rest.headers["Content-Range"] == f"bytes {len(got)}-{end - 1}/{size}"
        assert rest.headers["ETag"] == tag
        got += rest.content
    assert bytes(got) == whole.content
    # The tar's tag does not satisfy the zip's If-Range: the whole zip comes instead.
    tar_tag = client.get(f"/{carts.streamed}").headers["ETag"]
    fresh = client.get(
        f"/{carts.streamed}", params=params, headers={"Range": "bytes=10-", "If-Range": tar_tag}
    )
    assert fresh.status_code == 200
    assert fresh.content == whole.content


def test_the_tar_is_unchanged_unless_a_manifest_is_asked_for(
    client: httpx.Client, carts: Carts
) -> None:
    for uid in (carts.streamed, carts.bundled):
        tar = client.get(f"/{uid}")
        same = client.get(f"/{uid}", params={"format": "tar", "manifest": "0"})
        assert same.content == tar.content
        assert same.headers["ETag"] == tar.headers["ETag"]
        assert tar.headers["Content-Type"] == "application/octet-stream"
        assert tar.headers["Content-Disposition"].endswith(".tar")

        listed = client.get(f"/{uid}", params={"manifest": "1"})
        assert listed.headers["ETag"] != tar.headers["ETag"]
        with tarfile.open(fileobj=io.BytesIO(listed.content), mode="r|") as stream:
            members = iter(stream)
            assert next(members).isdir()
            manifest = next(members)
            assert manifest.name.endswith("/manifest-md5.txt")
            handle = stream.extractfile(manifest)
            assert handle is not None
            lines = handle.read().decode().splitlines()
        assert lines == [f"{hashlib.md5(data).hexdigest()}  {path}" for path, data in MD5.items()]
        assert tar_names(listed.content)[3:] == tar_names(tar.content)[1:]


@pytest.mark.parametrize(
    "params",
    [
        {"format": "rar"},
        {"format": "ZIP"},
        {"format": ""},
        {"manifest": "2"},
        {"manifest": "true"},
        {"format": "zip", "manifest": ""},
    ],
)
def test_an_unknown_format_or_manifest_value_is_refused(
    client: httpx.Client, carts: Carts, params: dict[str, str]
) -> None:
    answer = client.get(f"/{carts.streamed}", params=params)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    wrong = "format" if params.get("format", "zip") != "zip" else "manifest"
    assert answer.json()["message"].startswith(f"invalid {wrong} ")


def test_a_row_without_a_crc_gets_one_from_its_file_once(
    client: httpx.Client, store_files: Store, ai_server: CartdServer, tmp_path: Path
) -> None:
    uid = "zip-older-rows"
    answer = client.post(f"/{uid}", json={"fileids": store_files({"x/y.bin": b"y" * 5000})})
    assert answer.status_code == 201
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    params = {"format": "zip"}
    whole = client.get(f"/{uid}", params=params).content
    database = ai_server.workdir / "vol" / "cartd.sqlite3"
    query = "SELECT f.crc32 FROM cart_files f JOIN carts c ON c.id = f.cart_id WHERE c.uid = ?"
    with sqlite3.connect(database) as connection:  # as a row of an earlier version has it
        connection.execute(
            "UPDATE cart_files SET crc32 = NULL WHERE cart_id IN"
            " (SELECT id FROM carts WHERE uid = ?)",
            (uid,),
        )
    tail = len(whole) - 60  # inside the central directory
    rest = client.get(f"/{uid}", params=params, headers={"Range": f"bytes={tail}-"})
    assert rest.status_code == 206
    assert rest.content == whole[tail:]
    with sqlite3.connect(database) as connection:
        assert connection.execute(query, (uid,)).fetchall() == [(zlib.crc32(b"y" * 5000),)]
    assert "No errors detected" in unzip(tmp_path, whole, "-t")


def test_a_damaged_file_of_a_bundled_cart_is_staged_again_before_its_zip(
    client: httpx.Client, store_files: Store, ai_server: CartdServer
) -> None:
    uid = "zip-bundled-damaged"
    fileids = store_files({"d/one.bin": os.urandom(20_000), "two.bin": os.urandom(20_000)})
    answer = client.post(f"/{uid}", json={"fileids": fileids, "bundle": True})
    assert answer.status_code == 201
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    before = client.get(f"/{uid}", params={"format": "zip"})
    with sqlite3.connect(ai_server.workdir / "vol" / "cartd.sqlite3") as connection:
        [(cart_id,)] = connection.execute("SELECT id FROM carts WHERE uid = ?", (uid,)).fetchall()
    [damaged, *_] = sorted((ai_server.workdir / "vol" / "carts" / str(cart_id) / "files").iterdir())
    damaged.write_bytes(bytes(damaged.stat().st_size))  # in place: the bundle is still sound
    assert client.get(f"/{uid}").status_code == 200, "the tar is the bundle: served as it is"
    assert client.get(f"/{uid}", params={"format": "zip"}).status_code == 202
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    again = client.get(f"/{uid}", params={"format": "zip"})
    assert again.status_code == 200
    assert again.content == before.content
    assert again.headers["ETag"] == before.headers["ETag"]
