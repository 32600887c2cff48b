"""Every row of API.md section 2, over real HTTP, against the real Pacifica Archive Interface."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cartd import __version__
from tests.conftest import FileEntry, new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart
from tests.support.tars import tar_files

pytestmark = pytest.mark.archive

Store = Callable[..., list[FileEntry]]


def post(client: httpx.Client, uid: str, fileids: list[FileEntry], **extra: Any) -> httpx.Response:
    return client.post(f"/{uid}", json={"fileids": fileids, **extra})


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return {info.name: info for info in tar}


def test_root_says_it_is_up(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"message": "Pacifica Cartd Interface Up and Running"}


def test_cart_end_to_end(client: httpx.Client, store_files: Store) -> None:
    files = {"1/2/3/foo.txt": b"foo contents\n", "2/3/4/baz.ini": b"[baz]\nx = 1\n" * 500}
    mtime = 1_600_000_000
    fileids = store_files(files, hashtype="sha256", mtime=mtime)
    uid = new_id("cart")

    response = post(client, uid, fileids)
    assert response.status_code == 201
    assert response.json() == {"message": "Cart Processing has begun"}

    head = wait_for_cart(client, uid)
    assert head.status_code == 204
    assert head.headers["X-Pacifica-Status"] == "ready"
    assert head.headers["X-Pacifica-Message"] == ""
    assert head.headers["X-Pacifica-Phase"] == "ready"
    assert head.headers["X-Pacifica-Files-Total"] == "2"
    assert head.headers["X-Pacifica-Files-Staged"] == "2"
    total = sum(len(data) for data in files.values())
    assert head.headers["X-Pacifica-Bytes-Total"] == str(total)
    assert head.headers["X-Pacifica-Bytes-Staged"] == str(total)

    download = client.get(f"/{uid}", params={"filename": "mydata.tar"})
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"] == "attachment; filename=mydata.tar"
    assert int(download.headers["Content-Length"]) == len(download.content)
    assert tar_files(download.content) == {f"mydata/{path}": data for path, data in files.items()}
    infos = members(download.content)
    assert next(iter(infos)) == "mydata"
    assert infos["mydata/1/2/3/foo.txt"].mtime == mtime
    assert infos["mydata/2/3/4/baz.ini"].mtime == mtime


def test_download_default_name_and_no_compression(client: httpx.Client, store_files: Store) -> None:
    fileids = store_files({"a.txt": b"a" * 10_000})
    uid = new_id("cart")
    post(client, uid, fileids)
    wait_for_cart(client, uid)
    response = client.get(f"/{uid}", headers={"Accept-Encoding": "gzip, deflate"})
    assert response.status_code == 200
    assert "Content-Encoding" not in response.headers
    match = re.fullmatch(
        r"attachment; filename=(data_\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d)\.tar",
        response.headers["Content-Disposition"],
    )
    assert match, response.headers["Content-Disposition"]
    assert tar_files(response.content) == {f"{match.group(1)}/a.txt": b"a" * 10_000}


def test_download_name_without_tar_ending_is_the_top_folder(
    client: httpx.Client, store_files: Store
) -> None:
    fileids = store_files({"x/y.bin": bytes(range(256)) * 40})
    uid = new_id("cart")
    post(client, uid, fileids)
    wait_for_cart(client, uid)
    response = client.get(f"/{uid}?filename=data")
    assert response.headers["Content-Disposition"] == "attachment; filename=data"
    assert tar_files(response.content) == {"data/x/y.bin": bytes(range(256)) * 40}


def test_non_ascii_download_name_is_quoted(client: httpx.Client, store_files: Store) -> None:
    fileids = store_files({"a.txt": b"a"})
    uid = new_id("cart")
    post(client, uid, fileids)
    wait_for_cart(client, uid)
    response = client.get(f"/{uid}", params={"filename": "données été.tar"})
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert "filename*=UTF-8''donn%C3%A9es%20%C3%A9t%C3%A9.tar" in disposition
    assert list(tar_files(response.content)) == ["données été/a.txt"]


@pytest.mark.parametrize("name", ["a/b.tar", "bad\nname", "x" * 256])
def test_bad_download_name_is_refused(client: httpx.Client, store_files: Store, name: str) -> None:
    fileids = store_files({"a.txt": b"a"})
    uid = new_id("cart")
    post(client, uid, fileids)
    wait_for_cart(client, uid)
    response = client.get(f"/{uid}", params={"filename": name})
    assert response.status_code == 400
    assert "filename" in response.json()["message"]


def test_bundled_cart_has_the_uid_as_top_folder(
    client: httpx.Client, store_files: Store, ai_server: CartdServer
) -> None:
    files = {"deep/er/file.dat": b"\x00\x01" * 3000, "top.txt": b"top"}
    fileids = store_files(files)
    uid = new_id("bundled")
    assert post(client, uid, fileids, bundle=True).status_code == 201
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    bundles = list((ai_server.workdir / "vol").rglob("bundle.tar"))
    assert bundles, "a bundled cart writes its tar onto the volume"
    response = client.get(f"/{uid}", params={"filename": "whatever.tar"})
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == "attachment; filename=whatever.tar"
    assert tar_files(response.content) == {f"{uid}/{path}": data for path, data in files.items()}


def test_a_large_bundled_cart_is_served_byte_for_byte(
    client: httpx.Client, store_files: Store
) -> None:
    """Both the pulled file and the bundle are big enough to be written on a helper thread."""
    rng = random.Random(5)
    files = {"big.bin": rng.randbytes(9 * 1024 * 1024 + 4097), "small.txt": b"small"}
    uid = new_id("large")
    assert post(client, uid, store_files(files), bundle=True).status_code == 201
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    response = client.get(f"/{uid}")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert tar_files(response.content) == {f"{uid}/{path}": data for path, data in files.items()}


def test_integer_ids_are_accepted(
    client: httpx.Client, archive_interface: ArchiveInterface
) -> None:
    file_id = int(time.time() * 1000) % 10**9 * 100 + 7
    archive_interface.put(str(file_id), b"by number")
    uid = new_id("cart")
    sha1 = hashlib.sha1(b"by number").hexdigest()
    fileids = [{"id": file_id, "path": "n.txt", "hashtype": "sha1", "hashsum": sha1}]
    assert post(client, uid, fileids).status_code == 201
    assert wait_for_cart(client, uid).status_code == 204
    assert tar_files(client.get(f"/{uid}?filename=d").content) == {"d/n.txt": b"by number"}


def test_in_progress_cart_says_staging_and_202(
    client: httpx.Client, store_files: Store, archive_interface: ArchiveInterface
) -> None:
    # A file the archive does not have yet keeps the cart busy (the posix backend
    # answers 500, which cartd retries) until the file appears.
    late_id = new_id()
    data = b"late file"
    fileids = [*store_files({"early.txt": b"early"})]
    fileids.append(
        {
            "id": late_id,
            "path": "late.txt",
            "hashtype": "md5",
            "hashsum": hashlib.md5(data).hexdigest(),
        }
    )
    uid = new_id("cart")
    post(client, uid, fileids)
    head = client.head(f"/{uid}")
    assert head.status_code == 204
    assert head.headers["X-Pacifica-Status"] == "staging"
    assert head.headers["X-Pacifica-Phase"] in {"waiting", "staging"}
    response = client.get(f"/{uid}")
    assert response.status_code == 202
    assert response.text == "The cart is not ready for download."
    archive_interface.put(late_id, data)
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready", head.headers


def test_missing_file_ends_cart_in_error_naming_it(client: httpx.Client) -> None:
    missing = new_id("missing")
    uid = new_id("cart")
    fileids = [{"id": missing, "path": "m.txt", "hashtype": "md5", "hashsum": "0" * 32}]
    post(client, uid, fileids)
    head = wait_for_cart(client, uid)
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"
    message = head.headers["X-Pacifica-Message"]
    assert missing in message
    assert "No such file" in message
    assert "Traceback" not in message
    response = client.get(f"/{uid}")
    assert response.status_code == 500
    assert missing in response.json()["message"]
    assert response.json()["traceback"] == ""
    assert "Traceback" not in response.text
    # The archive's error names the file's place on its disks; a client never sees it.
    for text in (message, response.text, client.get(f"/{uid}/files").text):
        assert f"/{missing}" not in text
        assert "/tmp" not in text


def test_checksum_mismatch_ends_cart_in_error(client: httpx.Client, store_files: Store) -> None:
    fileids = store_files({"a.txt": b"real bytes"})
    fileids[0]["hashsum"] = "f" * 32
    uid = new_id("cart")
    post(client, uid, fileids)
    head = wait_for_cart(client, uid)
    assert head.status_code == 500
    assert "checksum mismatch" in head.headers["X-Pacifica-Message"]
    assert fileids[0]["id"] in head.headers["X-Pacifica-Message"]
    # Naming the digest of the bytes found would let anyone read any file the archive
    # can: order it with a wrong digest, then again with the one the error told.
    real = hashlib.md5(b"real bytes").hexdigest()
    for answer in (head.headers["X-Pacifica-Message"], client.get(f"/{uid}").text):
        assert real not in answer
    assert real not in client.get(f"/{uid}/files").text


def test_empty_hashsum_is_accepted_then_fails_verification(
    client: httpx.Client, store_files: Store
) -> None:
    fileids = store_files({"a.txt": b"x"})
    fileids[0]["hashsum"] = ""
    uid = new_id("cart")
    assert post(client, uid, fileids).status_code == 201
    head = wait_for_cart(client, uid)
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"


def test_unknown_cart(client: httpx.Client) -> None:
    uid = new_id("nothing")
    head = client.head(f"/{uid}")
    assert head.status_code == 404
    assert head.headers["X-Pacifica-Status"] == "error"
    assert head.headers["X-Pacifica-Message"] == f"No cart with uid {uid} found"
    get = client.get(f"/{uid}")
    assert get.status_code == 404
    assert get.json() == {
        "status": 404,
        "message": "The cart does not exist or has already been deleted",
        "traceback": "",
        "version": __version__,
    }
    delete = client.delete(f"/{uid}")
    assert delete.status_code == 404
    assert delete.json() == {
        "status": 404,
        "message": "Not Found",
        "traceback": "",
        "version": __version__,
    }


def test_delete_makes_the_cart_gone(
    client: httpx.Client, store_files: Store, ai_server: CartdServer
) -> None:
    fileids = store_files({"a.txt": b"to be deleted"})
    uid = new_id("cart")
    post(client, uid, fileids)
    wait_for_cart(client, uid)
    volume = ai_server.workdir / "vol" / "carts"
    before = {path for path in volume.iterdir()}
    response = client.delete(f"/{uid}")
    assert response.status_code == 200
    assert response.json() == {"message": "Cart Deleted Successfully"}
    assert client.head(f"/{uid}").status_code == 404
    assert client.get(f"/{uid}").status_code == 404
    assert client.delete(f"/{uid}").status_code == 404
    assert len({path for path in volume.iterdir()}) == len(before) - 1


def test_posting_again_to_a_uid_starts_a_new_cart(client: httpx.Client, store_files: Store) -> None:
    uid = new_id("again")
    post(client, uid, store_files({"first.txt": b"first"}))
    wait_for_cart(client, uid)
    post(client, uid, store_files({"second.txt": b"second"}))
    wait_for_cart(client, uid)
    assert tar_files(client.get(f"/{uid}?filename=d").content) == {"d/second.txt": b"second"}
    assert client.delete(f"/{uid}").status_code == 200
    assert client.head(f"/{uid}").status_code == 404


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{nope", "not valid JSON"),
    ("no fileids", b'{"bundle": true}', "lacks 'fileids'"),
    ("fileids not a list", b'{"fileids": 3}', "'fileids' must be"),
    ("entry lacks keys", b'{"fileids": [{"id": "a"}]}', "fileids[0] lacks path"),
    (
        "bad hashtype",
        json.dumps(
            {"fileids": [{"id": "a", "path": "a", "hashtype": "nope", "hashsum": ""}]}
        ).encode(),
        "not a known hash algorithm",
    ),
    (
        "traversal",
        json.dumps(
            {"fileids": [{"id": "a", "path": "../../etc/passwd", "hashtype": "md5", "hashsum": ""}]}
        ).encode(),
        "'..'",
    ),
    (
        "empty path",
        json.dumps(
            {"fileids": [{"id": "a", "path": "/", "hashtype": "md5", "hashsum": ""}]}
        ).encode(),
        "is empty",
    ),
    (
        "duplicate path",
        json.dumps(
            {
                "fileids": [
                    {"id": "a", "path": "x/y", "hashtype": "md5", "hashsum": ""},
                    {"id": "b", "path": "/x//y", "hashtype": "md5", "hashsum": ""},
                ]
            }
        ).encode(),
        "also the path of",
    ),
    (
        "bundle not bool",
        json.dumps(
            {
                "bundle": "yes",
                "fileids": [{"id": "a", "path": "a", "hashtype": "md5", "hashsum": ""}],
            }
        ).encode(),
        "'bundle'",
    ),
    (
        "callback, not enabled",
        json.dumps(
            {
                "callback": "http://127.0.0.1:8081/hooks",
                "fileids": [{"id": "a", "path": "a", "hashtype": "md5", "hashsum": ""}],
            }
        ).encode(),
        "'callback' is not accepted: callbacks are not enabled on this server",
    ),
]


@pytest.mark.parametrize(("case", "body", "says"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_order_is_refused_and_stores_nothing(
    client: httpx.Client, case: str, body: bytes, says: str
) -> None:
    uid = new_id("bad")
    response = client.post(f"/{uid}", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, case
    assert says in response.json()["message"]
    assert "Traceback" not in response.text
    assert client.head(f"/{uid}").status_code == 404


@pytest.mark.parametrize("uid", ["%2E%2E", "a%20b", "x" * 65, "caf%C3%A9"])
def test_bad_uid_is_refused(client: httpx.Client, uid: str) -> None:
    body = {"fileids": [{"id": "a", "path": "a", "hashtype": "md5", "hashsum": ""}]}
    response = client.post(f"/{uid}", json=body)
    assert response.status_code == 400
    assert "uid" in response.json()["message"]
    assert client.get(f"/{uid}").status_code == 400
    assert client.delete(f"/{uid}").status_code == 400
    head = client.head(f"/{uid}")
    assert head.status_code == 400
    assert head.headers["X-Pacifica-Status"] == "error"


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    response = client.get("/a/b/c")
    assert response.status_code == 404
    assert response.json() == {
        "status": 404,
        "message": "Not Found",
        "traceback": "",
        "version": __version__,
    }


def test_volume_keeps_files_by_id_not_by_requested_path(
    client: httpx.Client, store_files: Store, ai_server: CartdServer
) -> None:
    fileids = store_files({"evil name/with spaces.txt": b"z"})
    uid = new_id("cart")
    post(client, uid, fileids)
    wait_for_cart(client, uid)
    volume = Path(ai_server.workdir / "vol")
    assert not list(volume.rglob("with spaces.txt"))


def test_carts_posted_together_all_become_ready(client: httpx.Client, store_files: Store) -> None:
    """Files of one cart verified at the same moment must still make the cart ready once."""
    carts = {}
    for index in range(10):
        files = {f"run{index}/{n}.dat": f"{index}:{n}\n".encode() * 64 for n in range(8)}
        carts[new_id(f"many{index}")] = (files, store_files(files))
    for uid, (_, fileids) in carts.items():
        assert post(client, uid, fileids).status_code == 201
    for uid, (files, _) in carts.items():
        head = wait_for_cart(client, uid)
        assert head.headers["X-Pacifica-Status"] == "ready", head.headers
        assert head.headers["X-Pacifica-Files-Staged"] == "8"
        got = tar_files(client.get(f"/{uid}?filename=t").content)
        assert got == {f"t/{path}": data for path, data in files.items()}


@pytest.mark.parametrize("bundle", [False, True], ids=["streamed", "bundled"])
def test_a_broken_download_resumes_with_ranges_to_the_same_bytes(
    client: httpx.Client, store_files: Store, bundle: bool
) -> None:
    rng = random.Random(7)
    files = {"one.bin": rng.randbytes(300_000), "two/three.bin": rng.randbytes(70_001)}
    uid = new_id("ranged")
    assert post(client, uid, store_files(files), bundle=bundle).status_code == 201
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    whole = client.get(f"/{uid}")  # no filename: the default name must not move
    assert whole.status_code == 200
    assert whole.headers["Accept-Ranges"] == "bytes"
    size, etag = len(whole.content), whole.headers["ETag"]
    assert int(whole.headers["Content-Length"]) == size

    # A client that got 123,457 bytes before the connection broke asks for the rest, a
    # while later: a default name taken from the clock would give another tar by then.
    time.sleep(1.1)
    resumed = bytearray(whole.content[:123_457])
    for start, end in [(123_457, 200_000), (200_000, size - 1)]:
        part = client.get(f"/{uid}", headers={"Range": f"bytes={start}-{end - 1}"})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert part.headers["ETag"] == etag
        assert int(part.headers["Content-Length"]) == len(part.content) == end - start
        resumed += part.content
    tail = client.get(f"/{uid}", headers={"Range": "bytes=-1", "If-Range": etag})
    assert tail.status_code == 206
    resumed += tail.content
    assert bytes(resumed) == whole.content
    top = uid if bundle else whole.headers["Content-Disposition"].split("=", 1)[1][: -len(".tar")]
    assert tar_files(bytes(resumed)) == {f"{top}/{path}": data for path, data in files.items()}


def test_ranges_that_cannot_or_should_not_be_served(
    client: httpx.Client, store_files: Store
) -> None:
    uid = new_id("ranged")
    assert post(client, uid, store_files({"a.txt": b"a" * 5000})).status_code == 201
    assert wait_for_cart(client, uid).headers["X-Pacifica-Status"] == "ready"
    whole = client.get(f"/{uid}", params={"filename": "x.tar"})
    size = len(whole.content)

    past = client.get(f"/{uid}", params={"filename": "x.tar"}, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{size}"
    assert past.json()["status"] == 416

    stale = client.get(
        f"/{uid}",
        params={"filename": "x.tar"},
        headers={"Range": "bytes=10-20", "If-Range": '"an-older-tag"'},
    )
    assert stale.status_code == 200, "a changed tar is sent whole, never spliced"
    assert stale.content == whole.content

    several = client.get(
        f"/{uid}", params={"filename": "x.tar"}, headers={"Range": "bytes=0-1,5-6"}
    )
    assert several.status_code == 200
    assert several.content == whole.content

    other_name = client.get(f"/{uid}", params={"filename": "y.tar"})
    assert other_name.headers["ETag"] != whole.headers["ETag"], "other bytes, other tag"

    unknown = new_id("ranged")
    assert client.get(f"/{unknown}", headers={"Range": "bytes=0-1"}).status_code == 404


def test_the_files_view_shows_which_file_holds_a_cart_up(
    client: httpx.Client, store_files: Store
) -> None:
    good = store_files({"good/a.txt": b"good bytes"})
    bad = store_files({"bad/b.txt": b"other bytes"})
    bad[0]["hashsum"] = "f" * 32
    uid = new_id("viewed")
    assert post(client, uid, good + bad).status_code == 201
    wait_for_cart(client, uid)
    view = client.get(f"/{uid}/files")
    assert view.status_code == 200
    body = view.json()
    assert (body["uid"], body["status"], body["phase"]) == (uid, "error", "error")
    files = {entry["path"]: entry for entry in body["files"]}
    assert set(files) == {"good/a.txt", "bad/b.txt"}
    # The cart stops at its first failed file, so the other may or may not be staged.
    assert files["good/a.txt"]["status"] != "error"
    assert files["good/a.txt"]["error"] is None
    assert files["good/a.txt"]["id"] == good[0]["id"]
    assert files["bad/b.txt"]["size"] == len(b"other bytes")
    assert files["bad/b.txt"]["status"] == "error"
    assert "checksum mismatch" in files["bad/b.txt"]["error"]
    assert "/{uid}/files" in client.get("/openapi.json").json()["paths"]

    ready = new_id("viewed")
    assert post(client, ready, good).status_code == 201
    assert wait_for_cart(client, ready).headers["X-Pacifica-Status"] == "ready"
    body = client.get(f"/{ready}/files").json()
    assert (body["status"], body["phase"], body["error"]) == ("ready", "ready", None)
    assert [(f["path"], f["status"], f["size"]) for f in body["files"]] == [
        ("good/a.txt", "staged", len(b"good bytes"))
    ]


def test_the_files_view_of_an_unknown_or_badly_named_cart(client: httpx.Client) -> None:
    unknown = client.get(f"/{new_id('nothing')}/files")
    assert unknown.status_code == 404
    assert unknown.json()["status"] == 404
    assert client.get("/bad%20uid/files").status_code == 400


def test_the_openapi_description_says_what_cartd_answers(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    codes = {
        (path, method): sorted(operation["responses"])
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    assert codes[("/{uid}", "post")] == ["201", "400", "413"]
    assert codes[("/{uid}", "head")] == ["204", "400", "404", "500"]
    assert codes[("/{uid}", "get")] == ["200", "202", "206", "400", "404", "416", "500"]
    assert codes[("/{uid}", "delete")] == ["200", "400", "404"]
    assert codes[("/{uid}/files", "get")] == ["200", "400", "404"]
    assert all("422" not in answers for answers in codes.values()), "cartd answers 400"
    head = spec["paths"]["/{uid}"]["head"]["responses"]["204"]
    assert "X-Pacifica-Status" in head["headers"]
    order = spec["paths"]["/{uid}"]["post"]["requestBody"]["content"]["application/json"]
    assert order["schema"] == {"$ref": "#/components/schemas/Order"}

    # Every reference resolves, so a client generator can read the whole document.
    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    schemas = spec["components"]["schemas"]
    # Callbacks are not enabled here (no cartd.callback_hosts): no URL is accepted.
    assert schemas["Order"]["properties"]["callback"]["type"] == "null"
    found = set(refs(spec))
    assert "#/components/schemas/FileOrder" in found
    for ref in found:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
