"""Each verified file's CRC-32, which a zip download's headers hold: recorded when the file
is pulled (or linked from a copy that has one), so that a `Range` request starting past a
file never reads it to learn its CRC. Rows verified before this revision keep NULL and get
it on the first zip download that needs it (`cartd.service.crcs`).

BIGINT: a CRC-32 is unsigned, past the range of a signed 32-bit INTEGER.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cart_files") as batch:
        batch.add_column(sa.Column("crc32", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cart_files") as batch:
        batch.drop_column("crc32")
