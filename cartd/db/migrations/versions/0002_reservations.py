"""Space reservations, download leases, the last known media of a file, the volume lock.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("carts") as batch:
        batch.add_column(sa.Column("reserved_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("download_lease_until", sa.Float(), nullable=True))
    with op.batch_alter_table("cart_files") as batch:
        batch.add_column(sa.Column("on_disk", sa.Boolean(), nullable=True))
    volume_lock = op.create_table(
        "volume_lock",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    )
    op.bulk_insert(volume_lock, [{"id": 1}])


def downgrade() -> None:
    op.drop_table("volume_lock")
    with op.batch_alter_table("cart_files") as batch:
        batch.drop_column("on_disk")
    with op.batch_alter_table("carts") as batch:
        batch.drop_column("download_lease_until")
        batch.drop_column("reserved_bytes")
