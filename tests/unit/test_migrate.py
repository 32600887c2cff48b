"""The shipped migrations build what the models describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from cartd.db.engine import make_engine
from cartd.db.migrate import (
    check,
    create_fresh,
    current_revision,
    head_revision,
    is_empty,
    upgrade,
)


def test_fresh_database_upgrades_to_head_and_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'volume' / 'cartd.sqlite3'}")
    try:
        assert current_revision(engine) is None
        assert head_revision() is not None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        check(engine)
        assert inspect(engine).get_table_names()
        upgrade(engine)  # a second dbsync is a no-op
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_head_constant_matches_the_newest_migration() -> None:
    from cartd.db import migrate

    assert migrate.head_revision() == migrate.HEAD


def dump_schema(engine: Engine) -> dict[str, object]:
    """Tables, columns (name, type, nullability), keys, indexes, and the volume lock's rows."""
    inspector = inspect(engine)
    schema: dict[str, object] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (column["name"], str(column["type"]), column["nullable"])
            for column in inspector.get_columns(table)
        ]
        indexes = sorted(
            (index["name"], tuple(index["column_names"])) for index in inspector.get_indexes(table)
        )
        foreign = sorted(
            (tuple(key["constrained_columns"]), key["referred_table"], str(key["options"]))
            for key in inspector.get_foreign_keys(table)
        )
        primary = inspector.get_pk_constraint(table)["constrained_columns"]
        schema[table] = (columns, indexes, primary, foreign)
    with engine.connect() as connection:
        schema["volume_lock rows"] = connection.execute(text("SELECT id FROM volume_lock")).all()
    return schema


def test_a_fresh_database_built_without_alembic_equals_a_migrated_one(tmp_path: Path) -> None:
    migrated = make_engine(f"sqlite:///{tmp_path / 'a' / 'cartd.sqlite3'}")
    fresh = make_engine(f"sqlite:///{tmp_path / 'b' / 'cartd.sqlite3'}")
    try:
        upgrade(migrated)
        assert is_empty(fresh)
        create_fresh(fresh)
        assert not is_empty(fresh)
        assert current_revision(fresh) == head_revision()
        assert dump_schema(fresh) == dump_schema(migrated)
        check(fresh)
        upgrade(fresh)  # a later dbsync finds nothing to do
        assert dump_schema(fresh) == dump_schema(migrated)
    finally:
        migrated.dispose()
        fresh.dispose()


def test_a_server_on_a_new_sqlite_volume_never_loads_alembic(tmp_path: Path) -> None:
    """Alembic costs the server about 12 MiB it would keep for its whole life."""
    script = (
        "import sys\n"
        "from cartd.config import load_settings\n"
        "from cartd.runtime import build_runtime\n"
        f"settings = load_settings(environ={{'VOLUME_PATH': {str(tmp_path / 'volume')!r}}})\n"
        "runtime = build_runtime(settings)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'alembic'))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert run.stdout.strip() == "[]"
    engine = make_engine(f"sqlite:///{tmp_path / 'volume' / 'cartd.sqlite3'}")
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_0003_gives_carts_already_ready_their_ready_time(tmp_path: Path) -> None:
    """A cart ready before the upgrade keeps the download name and tag it had: both came
    from `updated_at`, written when it became ready."""
    engine = make_engine(f"sqlite:///{tmp_path / 'volume' / 'cartd.sqlite3'}")
    try:
        upgrade(engine, "0002")
        with engine.begin() as connection:
            for uid, status in (("r", "ready"), ("s", "staging")):
                connection.execute(
                    text(
                        "INSERT INTO carts (uid, status, bundle, created_at, updated_at,"
                        " last_used_at) VALUES (:uid, :status, 0, :t, :t, :t)"
                    ),
                    {"uid": uid, "status": status, "t": "2026-01-02 03:04:05.000000"},
                )
        upgrade(engine)
        with engine.connect() as connection:
            rows = dict(connection.execute(text("SELECT uid, ready_at FROM carts")).all())
        assert rows == {"r": "2026-01-02 03:04:05.000000", "s": None}
    finally:
        engine.dispose()
