"""Claims: which step is working on a file (its pull) or a cart (its sizing pass or its
bundle) right now, and until when. Several processes share the database, and a task
may be delivered twice; a step first claims its rows with a conditional update, and a
step that finds them claimed by another leaves them alone. A claim not renewed (its
process died) expires.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("carts", "cart_files"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
            batch.add_column(sa.Column("claimed_until", sa.Double(), nullable=True))
            batch.create_index(f"ix_{table}_claimed_by", ["claimed_by"])


def downgrade() -> None:
    for table in ("carts", "cart_files"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_claimed_by")
            batch.drop_column("claimed_until")
            batch.drop_column("claimed_by")
