"""Indexes for the questions asked of a cart after every batch of steps (has it a file
left to verify? to size?), so they cost one index lookup instead of reading every file
row of the cart: a cart of 100,000 files otherwise reads its rows at every batch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cart_files_cart_status", "cart_files", ["cart_id", "status"])
    op.create_index("ix_cart_files_cart_size", "cart_files", ["cart_id", "size"])


def downgrade() -> None:
    op.drop_index("ix_cart_files_cart_size", table_name="cart_files")
    op.drop_index("ix_cart_files_cart_status", table_name="cart_files")
