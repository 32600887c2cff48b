"""The shipped migrations build what the models describe."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from cartd.db.engine import make_engine
from cartd.db.migrate import check, current_revision, head_revision, upgrade


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
