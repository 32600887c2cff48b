"""Apply and check the Alembic migrations shipped inside the package.

Alembic is imported only when a migration is looked at or run: a server whose
schema is already current never loads it, which keeps about 12 MiB out of its
memory. A brand-new SQLite database is not migrated either: `create_fresh`
builds what the models describe and records it as the newest revision, which is
what running every migration gives (a test holds the two equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, insert, inspect, text

from cartd.db.models import Base, VolumeLockRow

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

#: The newest revision in `migrations/versions`; a test keeps the two in step.
HEAD = "0010"


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema (what `cartd dbsync` does)."""
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def check(engine: Engine) -> None:
    """Raise if the models differ from what the migrations build."""
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.check(config)


def create_fresh(engine: Engine) -> None:
    """Build the newest schema in an empty database, stamped as `HEAD`, without Alembic."""
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        connection.execute(insert(VolumeLockRow).values(id=1))  # the row 0002 seeds
        connection.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL,"
                " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        connection.execute(text("INSERT INTO alembic_version VALUES (:head)"), {"head": HEAD})


def is_empty(engine: Engine) -> bool:
    with engine.connect() as connection:
        return not inspect(connection).get_table_names()


def current_revision(engine: Engine) -> str | None:
    """The schema's revision, read straight from Alembic's version table."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def known_revisions() -> set[str]:
    """Every revision this version of cartd ships."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}
