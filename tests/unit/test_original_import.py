"""Bringing the original Pacifica Cartd's carts over: the cases the end-to-end test with the
real original (tests/integration/test_original_import.py) does not make, on SQLite
tables made with the original's own DDL (as its peewee models create them)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cartd.config import load_settings
from cartd.db.engine import make_engine
from cartd.db.migrate import check, create_fresh
from cartd.db.original import OriginalTables, Outcome
from cartd.db.store import CartStore
from cartd.runtime import build_runtime
from cartd.service.original import NEVER_TAKEN, OriginalImport
from cartd.status import CartStatus, FileStatus
from cartd.storage import Volume

#: The original's tables as its 0.7.0 `dbsync` creates them on SQLite (schema 2.0); the
#: `bundle` column came with its schema 1.0.
DDL = [
    'CREATE TABLE "cart" ("id" INTEGER NOT NULL PRIMARY KEY, "cart_uid" VARCHAR(255) NOT NULL,'
    ' "bundle_path" VARCHAR(255) NOT NULL, {bundle} "creation_date" DATETIME NOT NULL,'
    ' "updated_date" DATETIME NOT NULL, "deleted_date" DATETIME, "status" TEXT NOT NULL,'
    ' "error" TEXT NOT NULL)',
    'CREATE TABLE "file" ("id" INTEGER NOT NULL PRIMARY KEY, "cart_id" INTEGER NOT NULL,'
    ' "file_name" VARCHAR(255) NOT NULL, "bundle_path" VARCHAR(255) NOT NULL,'
    ' "hash_type" VARCHAR(255), "hash_value" VARCHAR(255), "status" TEXT NOT NULL,'
    ' "error" TEXT NOT NULL, FOREIGN KEY ("cart_id") REFERENCES "cart" ("id"))',
]
WHEN = "2026-01-02 03:04:05.000006"
MD5 = "0" * 32


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    volume = Volume(tmp_path / "vol")
    volume.prepare()
    return volume


@pytest.fixture
def engine(volume: Volume) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{volume.root / 'cartd.sqlite3'}")
    create_fresh(engine)
    yield engine
    engine.dispose()


def their_tables(engine: Engine, *, bundle_column: bool = True) -> None:
    with engine.begin() as connection:
        for statement in DDL:
            bundle = '"bundle" INTEGER,' if bundle_column else ""
            connection.execute(text(statement.format(bundle=bundle)))


def their_cart(
    engine: Engine, cart_id: int, uid: str, status: str, files: list[tuple[str, str, str]]
) -> None:
    """A cart of the original's with (archive id, path, status) files."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO cart (id, cart_uid, bundle_path, creation_date, updated_date,"
                " status, error) VALUES (:id, :uid, '', :when, :when, :status, '')"
            ),
            {"id": cart_id, "uid": uid, "when": WHEN, "status": status},
        )
        for archive_id, path, file_status in files:
            connection.execute(
                text(
                    "INSERT INTO file (cart_id, file_name, bundle_path, hash_type, hash_value,"
                    " status, error) VALUES (:cart, :name, :path, 'md5', :sum, :status, '')"
                ),
                {
                    "cart": cart_id,
                    "name": archive_id,
                    "path": path,
                    "sum": MD5,
                    "status": file_status,
                },
            )


def importer(engine: Engine, volume: Volume) -> OriginalImport:
    return OriginalImport(OriginalTables(engine), volume)


def test_a_database_without_the_originals_tables_has_nothing_to_bring(
    engine: Engine, volume: Volume
) -> None:
    assert not OriginalTables(engine).present()
    assert importer(engine, volume).pending() == 0
    assert importer(engine, volume).run() == []


def test_a_ready_cart_whose_copy_is_gone_is_made_again_keeping_what_is_left(
    engine: Engine, volume: Volume
) -> None:
    their_tables(engine)
    their_cart(engine, 5, "r", "ready", [("a", "x/a.txt", "staged"), ("b", "b.txt", "staged")])
    left = volume.root / "5" / "r" / "x" / "a.txt"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"left")
    assert importer(engine, volume).pending() == 1

    [item] = importer(engine, volume).run()

    assert item.outcome is Outcome.RESUMED
    assert "gone" in item.note
    assert item.cart_id is not None
    store = CartStore(engine)
    cart = store.get_cart(item.cart_id)
    assert cart is not None
    assert cart.status is CartStatus.WAITING
    first, second = store.files_of(cart.id)
    assert [first.status, second.status] == [FileStatus.WAITING, FileStatus.WAITING]
    # The file left is linked where the pipeline checks it before pulling: one inode.
    assert volume.file_path(cart.id, first.id).stat().st_ino == left.stat().st_ino
    assert not volume.file_path(cart.id, second.id).exists()
    assert importer(engine, volume).pending() == 0
    assert importer(engine, volume).run() == []


def test_an_uid_cartd_cannot_serve_is_skipped_and_a_path_it_refuses_is_an_error(
    engine: Engine, volume: Volume
) -> None:
    their_tables(engine, bundle_column=False)  # an original of schema 0.1 reads the same
    their_cart(engine, 1, "has a space", "ready", [("a", "a.txt", "staged")])
    their_cart(engine, 2, "escapes", "staging", [("b", "../b.txt", "waiting")])

    skipped, failed = importer(engine, volume).run()

    assert (skipped.outcome, skipped.cart_id) == (Outcome.SKIPPED, None)
    assert "invalid cart uid" in skipped.note
    assert failed.outcome is Outcome.ERROR
    assert failed.cart_id is not None
    cart = CartStore(engine).get_cart(failed.cart_id)
    assert cart is not None
    assert cart.status is CartStatus.ERROR
    assert cart.error is not None
    assert "'..'" in cart.error
    assert importer(engine, volume).pending() == 0


def test_a_file_on_another_filesystem_is_copied_with_its_time(
    volume: Volume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "theirs.txt"
    source.write_bytes(b"bytes")
    os.utime(source, (1_700_000_000, 1_700_000_000))

    def cross_device(*_args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    final = volume.file_path(1, 1)
    volume.adopt(source, final)

    assert final.read_bytes() == b"bytes"
    assert final.stat().st_mtime == 1_700_000_000
    assert final.stat().st_ino != source.stat().st_ino
    assert source.read_bytes() == b"bytes"
    assert [path.name for path in final.parent.iterdir()] == [final.name]


def test_serve_on_the_originals_sqlite_brings_its_carts_over_at_start(tmp_path: Path) -> None:
    """cartd upgrades a SQLite database itself, so it brings the carts over then too."""
    database = tmp_path / "db.sqlite3"
    theirs = make_engine(f"sqlite:///{database}")
    their_tables(theirs)
    their_cart(theirs, 3, "never-taken", "staging", [])
    theirs.dispose()
    settings = load_settings(
        environ={"VOLUME_PATH": str(tmp_path / "vol"), "PEEWEE_URL": f"sqliteext:///{database}"}
    )
    runtime = build_runtime(settings)
    try:
        cart = runtime.store.latest_cart("never-taken")
        assert cart is not None
        assert (cart.status, cart.error) == (CartStatus.ERROR, NEVER_TAKEN)
        assert OriginalTables(runtime.engine).pending() == 0
    finally:
        runtime.close()


def test_the_originals_tables_beside_cartds_are_no_drift_for_alembic(engine: Engine) -> None:
    """`alembic check` compares cartd's tables only: the original's stay, untouched."""
    their_tables(engine)
    check(engine)
