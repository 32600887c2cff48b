"""The moment a cart became ready: the identity of its download (ETag, Last-Modified,
default name), which later writes to the cart's row must not change. Unix times become
DOUBLE: MySQL's FLOAT is single precision (128 s apart at today's times), too coarse to
check a staged file's modification time against.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("carts") as batch:
        batch.add_column(sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True))
    # Carts already ready were last written when they became ready: their downloads keep
    # the names and tags they had.
    op.execute("UPDATE carts SET ready_at = updated_at WHERE status = 'ready'")
    _unix_times(sa.Float(), sa.Double())


def downgrade() -> None:
    _unix_times(sa.Double(), sa.Float())
    with op.batch_alter_table("carts") as batch:
        batch.drop_column("ready_at")


def _unix_times(old: sa.types.TypeEngine[float], new: sa.types.TypeEngine[float]) -> None:
    for table, column in (
        ("carts", "download_lease_until"),
        ("cart_files", "mtime"),
        ("cart_files", "next_attempt_at"),
    ):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=new, existing_type=old, existing_nullable=True)
