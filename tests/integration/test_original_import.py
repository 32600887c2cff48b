"""Issue 12.1: `cartd dbsync` on a database and volume made by the real Pacifica Cartd 0.7.0
brings its carts over in place, on SQLite, PostgreSQL and MariaDB.

The original itself (its own venv) makes the schema and a cart in each state, pulling
from the real archive interface; then `cartd dbsync` runs twice, and a real cartd
serves the carts. The original's tables and files are compared before and after.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from cartd.db.engine import database_url
from tests.conftest import entry, new_id, run_cartd, scratch_database
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer, wait_for_cart
from tests.support.original import make_carts
from tests.support.tars import tar_files

pytestmark = pytest.mark.archive

#: The archive's modification time of every file; the original keeps whole seconds.
MTIME = 1_700_000_000.5
THEIR_TABLES = ("cartsystem", "cart", "file", "carttasks")
OUR_TABLES = ("carts", "cart_files", "original_imports")

CONTENTS: dict[str, dict[str, bytes]] = {
    "streamed": {"/top/a.txt": b"alpha\n" * 100, "top/deeper/b.bin": bytes(range(256)) * 9},
    "bundled": {"c.txt": b"gamma", "d/e.txt": b"delta" * 999},
    "doomed": {"f.txt": b"to be deleted in cartd"},
    "partial": {"one.txt": b"staged by the original", "two/two.txt": b"left for cartd"},
    "failed": {"g.txt": b"ordered with a wrong checksum"},
    "gone": {"h.txt": b"deleted in the original"},
}


@dataclass
class Upgraded:
    """A volume and database the original made, after two `cartd dbsync`, served by cartd."""

    server: CartdServer
    volume: Path
    theirs: dict[str, dict[str, Any]]  # by uid: id, status, error in the original's tables
    uids: dict[str, str]  # kind of cart -> its uid
    chk_before: Any
    chk_after: Any
    sync1: Any
    sync2: Any
    counts1: dict[str, int]
    counts2: dict[str, int]
    tables_before: dict[str, list[tuple[Any, ...]]]
    tables_after: dict[str, list[tuple[Any, ...]]]
    files_before: dict[str, tuple[str, float]]
    files_after: dict[str, tuple[str, float]]


def dump_tables(url: str, tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: [
                    tuple(row)
                    for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
                ]
                for table in tables
            }
    finally:
        engine.dispose()


def original_files(volume: Path) -> dict[str, tuple[str, float]]:
    """Everything the original left on the volume (cartd keeps its own under carts/)."""
    found = {}
    for path in sorted(volume.rglob("*")):
        name = path.relative_to(volume)
        if path.is_file() and name.parts[0] not in ("carts", "runner.lock"):
            found[str(name)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
    return found


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def upgraded(
    request: pytest.FixtureRequest,
    archive_interface: ArchiveInterface,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Upgraded]:
    workdir = tmp_path_factory.mktemp("original")
    volume = workdir / "vol"
    volume.mkdir()
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            peewee_url = f"sqliteext:///{workdir / 'db.sqlite3'}"
        else:
            peewee_url = stack.enter_context(scratch_database(request.param))
        uids = {kind: new_id(kind[:4]) for kind in (*CONTENTS, "unordered")}
        specs = []
        for kind, contents in CONTENTS.items():
            fileids = []
            for path, data in contents.items():
                file_id = new_id()
                archive_interface.put(file_id, data, mtime=MTIME)
                fileids.append(entry(file_id, data, path))
            if kind == "failed":
                fileids[0]["hashsum"] = "0" * 32
            made = {"partial": "partial", "failed": "error", "gone": "deleted"}.get(kind, "ready")
            specs.append(
                {"uid": uids[kind], "kind": made, "fileids": fileids, "bundle": kind == "bundled"}
            )
        specs.append({"uid": uids["unordered"], "kind": "unordered"})
        theirs = make_carts(
            specs,
            volume=volume,
            peewee_url=peewee_url,
            archive_url=archive_interface.url,
            home=workdir,
        )
        url = database_url(peewee_url, volume)
        tables_before = dump_tables(url, THEIR_TABLES)
        files_before = original_files(volume)
        env = {
            "HOME": str(workdir),
            "PEEWEE_URL": peewee_url,
            "VOLUME_PATH": str(volume),
            "ARCHIVE_INTERFACE_URL": archive_interface.url,
        }
        chk_before = run_cartd("dbchk", "--equal", env=env)
        sync1 = run_cartd("dbsync", env=env)
        assert sync1.returncode == 0, sync1.stderr
        counts1 = {table: len(rows) for table, rows in dump_tables(url, OUR_TABLES).items()}
        sync2 = run_cartd("dbsync", env=env)
        counts2 = {table: len(rows) for table, rows in dump_tables(url, OUR_TABLES).items()}
        chk_after = run_cartd("dbchk", "--equal", env=env)
        tables_after = dump_tables(url, THEIR_TABLES)
        files_after = original_files(volume)
        server = stack.enter_context(CartdServer(workdir / "cartd", env))
        yield Upgraded(
            server,
            volume,
            theirs,
            uids,
            chk_before,
            chk_after,
            sync1,
            sync2,
            counts1,
            counts2,
            tables_before,
            tables_after,
            files_before,
            files_after,
        )


@pytest.fixture
def client(upgraded: Upgraded) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upgraded.server.url, timeout=30.0) as http:
        yield http


def expected_tar(kind: str, top: str) -> dict[str, bytes]:
    return {f"{top}/{path.lstrip('/')}": data for path, data in CONTENTS[kind].items()}


def test_the_original_made_a_cart_in_each_state(upgraded: Upgraded) -> None:
    status = {kind: upgraded.theirs[uid]["status"] for kind, uid in upgraded.uids.items()}
    assert status == {
        "streamed": "ready",
        "bundled": "ready",
        "doomed": "ready",
        "partial": "staging",
        "failed": "error",
        "gone": "deleted",
        "unordered": "staging",
    }
    assert len(upgraded.tables_before["cart"]) == 7
    assert len(upgraded.tables_before["file"]) == 9


def test_dbchk_says_an_import_is_pending_until_dbsync(upgraded: Upgraded) -> None:
    assert upgraded.chk_before.returncode == 1
    assert "7 carts of Pacifica Cartd's tables are not brought over yet" in (
        upgraded.chk_before.stdout
    )
    assert upgraded.chk_after.returncode == 0, upgraded.chk_after.stdout
    assert "not brought over" not in upgraded.chk_after.stdout


def test_dbsync_says_what_it_brought_and_a_second_one_does_nothing(upgraded: Upgraded) -> None:
    assert (
        "brought over 7 carts of Pacifica Cartd's tables: 1 deleted, 2 error, 3 ready, 1 resumed"
        in upgraded.sync1.stdout
    )
    assert upgraded.sync2.returncode == 0, upgraded.sync2.stderr
    assert "brought over" not in upgraded.sync2.stdout
    # Every cart of the original's is in the ledger; the deleted one made no cart.
    assert upgraded.counts1 == {"carts": 6, "cart_files": 8, "original_imports": 7}
    assert upgraded.counts2 == upgraded.counts1


def test_the_originals_tables_and_files_are_left_as_they_were(upgraded: Upgraded) -> None:
    assert upgraded.tables_after == upgraded.tables_before
    assert upgraded.files_after == upgraded.files_before
    assert upgraded.files_before  # the comparison compared something


def test_a_ready_streamed_cart_sends_the_same_files(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    uid = upgraded.uids["streamed"]
    head = client.head(f"/{uid}")
    assert head.status_code == 204
    assert head.headers["X-Pacifica-Status"] == "ready"
    response = client.get(f"/{uid}", params={"filename": "data"})
    assert response.status_code == 200
    assert tar_files(response.content) == expected_tar("streamed", "data")


def test_a_ready_bundled_cart_sends_the_originals_tar_byte_for_byte(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    uid = upgraded.uids["bundled"]
    theirs = upgraded.volume / str(upgraded.theirs[uid]["id"]) / f"{uid}.tar"
    response = client.get(f"/{uid}")
    assert response.status_code == 200
    assert response.content == theirs.read_bytes()
    assert tar_files(response.content) == expected_tar("bundled", uid)


def test_a_cart_in_progress_is_made_ready_by_cartd(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    uid = upgraded.uids["partial"]
    head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
    response = client.get(f"/{uid}", params={"filename": "out.tar"})
    assert tar_files(response.content) == expected_tar("partial", "out")


def test_a_cart_in_error_keeps_the_originals_message(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    uid = upgraded.uids["failed"]
    head = client.head(f"/{uid}")
    assert head.status_code == 500
    assert head.headers["X-Pacifica-Status"] == "error"
    assert head.headers["X-Pacifica-Message"] == upgraded.theirs[uid]["error"]
    assert "File hash does not match" in head.headers["X-Pacifica-Message"]


def test_an_order_the_originals_worker_never_took_is_an_error_saying_so(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    head = client.head(f"/{upgraded.uids['unordered']}")
    assert head.status_code == 500
    assert "order the cart again" in head.headers["X-Pacifica-Message"]


def test_a_cart_deleted_in_the_original_stays_deleted(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    uid = upgraded.uids["gone"]
    assert client.head(f"/{uid}").status_code == 404
    assert client.get(f"/{uid}").status_code == 404
    assert client.delete(f"/{uid}").status_code == 404


def test_deleting_a_brought_over_cart_leaves_the_originals_copy(
    upgraded: Upgraded, client: httpx.Client
) -> None:
    uid = upgraded.uids["doomed"]
    assert client.get(f"/{uid}").status_code == 200
    assert client.delete(f"/{uid}").status_code == 200
    assert client.head(f"/{uid}").status_code == 404
    theirs = upgraded.volume / str(upgraded.theirs[uid]["id"]) / uid / "f.txt"
    assert theirs.read_bytes() == CONTENTS["doomed"]["f.txt"]
    assert int(theirs.stat().st_mtime) == int(MTIME)
