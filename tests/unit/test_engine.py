"""The database URL: the original's peewee forms mapped to SQLAlchemy ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from cartd.config import load_settings
from cartd.db.engine import database_url
from cartd.errors import ConfigError
from cartd.runtime import open_engine


@pytest.mark.parametrize("configured", [None, ""])
def test_unset_url_is_a_sqlite_file_in_the_volume(tmp_path: Path, configured: str | None) -> None:
    url = make_url(database_url(configured, tmp_path))
    assert url.get_backend_name() == "sqlite"
    assert url.database is not None
    assert Path(url.database).parent == tmp_path


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("sqliteext:///db.sqlite3", "sqlite:///db.sqlite3"),
        ("sqlite:///db.sqlite3", "sqlite:///db.sqlite3"),
        ("sqliteext:////abs/db.sqlite3", "sqlite:////abs/db.sqlite3"),
        ("mysql://u:p@h/db", "mysql+pymysql://u:p@h/db"),
        ("mysql://u:p@h:3306/db", "mysql+pymysql://u:p@h:3306/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ],
)
def test_peewee_forms_are_mapped(tmp_path: Path, configured: str, expected: str) -> None:
    assert database_url(configured, tmp_path) == expected


@pytest.mark.parametrize("configured", ["db.sqlite3", "not a url", "/var/lib/cartd.db"])
def test_non_url_is_a_config_error_naming_the_key(tmp_path: Path, configured: str) -> None:
    with pytest.raises(ConfigError, match=r"database\.peewee_url"):
        database_url(configured, tmp_path)


@pytest.mark.parametrize("folder", ["p%20q", "what?x=1"])
def test_default_sqlite_file_stays_in_a_volume_with_url_characters(
    tmp_path: Path, folder: str
) -> None:
    volume = tmp_path / folder
    url = make_url(database_url(None, volume))
    assert url.database is not None
    assert Path(url.database).parent == volume


@pytest.mark.parametrize(
    ("environ", "size", "overflow"),
    [
        ({}, 8, 8),  # the default stage_workers (4) + 4, and as many again at a busy moment
        ({"CARTD_STAGE_WORKERS": "10"}, 14, 14),
        ({"DATABASE_POOL_SIZE": "3"}, 3, 3),
        ({"DATABASE_POOL_SIZE": "3", "DATABASE_MAX_OVERFLOW": "0"}, 3, 0),
    ],
)
def test_the_connection_pool_is_sized_by_the_settings(
    tmp_path: Path, environ: dict[str, str], size: int, overflow: int
) -> None:
    settings = load_settings(environ={"VOLUME_PATH": str(tmp_path), **environ})
    engine = open_engine(settings)
    try:
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.size() == size
        assert engine.pool._max_overflow == overflow
    finally:
        engine.dispose()


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_pool_size_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"database\.pool_size \(DATABASE_POOL_SIZE\)"):
        load_settings(environ={"DATABASE_POOL_SIZE": value})
