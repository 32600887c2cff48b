"""Alembic environment: always handed a live connection by `cartd.db.migrate`."""

from __future__ import annotations

from alembic import context

from cartd.db.models import Base


def _ours(name: str | None, kind: str, _parents: object) -> bool:
    """Only cartd's tables are compared: a database upgraded from the original Pacifica
    Cartd keeps the original's tables beside them, untouched (see `cartd.db.original`)."""
    return kind != "table" or name in Base.metadata.tables


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_name=_ours,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
