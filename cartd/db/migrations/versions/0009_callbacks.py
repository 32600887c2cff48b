"""Callbacks: the URL an order names to be told when its cart becomes ready or fails, and
the outbox of events to send there, written in the same transaction as the status
change so that none is lost to a crash before it is sent.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("carts") as batch:
        batch.add_column(sa.Column("callback", sa.Text(), nullable=True))
    op.create_table(
        "callback_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("cart_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("ordered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_callback_events_next_attempt_at", "callback_events", ["next_attempt_at"])
    op.create_index("ix_callback_events_claimed_by", "callback_events", ["claimed_by"])


def downgrade() -> None:
    op.drop_index("ix_callback_events_claimed_by", table_name="callback_events")
    op.drop_index("ix_callback_events_next_attempt_at", table_name="callback_events")
    op.drop_table("callback_events")
    with op.batch_alter_table("carts") as batch:
        batch.drop_column("callback")
