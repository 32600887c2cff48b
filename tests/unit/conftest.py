"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cartd.db import migrate
from cartd.db.engine import make_engine
from cartd.db.store import CartStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CartStore]:
    """A store on a new SQLite database of the newest schema."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cartd.sqlite3'}")
    migrate.create_fresh(engine)
    try:
        yield CartStore(engine)
    finally:
        engine.dispose()
