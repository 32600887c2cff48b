"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from cartd.db import migrate
from cartd.db.engine import make_engine
from cartd.db.store import CartStore, files


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CartStore]:
    """A store on a new SQLite database of the newest schema."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cartd.sqlite3'}")
    migrate.create_fresh(engine)
    try:
        yield CartStore(engine)
    finally:
        engine.dispose()


def size_files(store: CartStore, sized: Iterable[tuple[int, int, float, bool]]) -> None:
    """Give file rows what the archive said of them (size, mtime, on disk), as a sizing
    pass would, without any reservation (the tests of the ledger grow it themselves)."""
    with store.engine.begin() as connection:
        for file_id, size, mtime, on_disk in sized:
            connection.execute(
                files.update()
                .where(files.c.id == file_id)
                .values(size=size, mtime=mtime, on_disk=on_disk)
            )
