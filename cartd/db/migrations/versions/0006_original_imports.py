"""The ledger of the original Pacifica Cartd's carts that `dbsync` brought over: one row
per cart of its `cart` table, written in the same transaction as the cart it became,
so that a second `dbsync` brings nothing over twice. The original's own tables are
never changed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "original_imports",
        sa.Column("original_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cart_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("original_id"),
    )


def downgrade() -> None:
    op.drop_table("original_imports")
