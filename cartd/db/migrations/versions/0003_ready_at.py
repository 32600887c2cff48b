"""The moment a cart became ready: the identity of its download (ETag, Last-Modified,
default name), which later writes to the cart's row must not change.

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


def downgrade() -> None:
    with op.batch_alter_table("carts") as batch:
        batch.drop_column("ready_at")
