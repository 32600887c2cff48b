"""An index on the files' checksums, so that a file step finds at once the other rows that
name the same archive file with the same checksum (`cartd.db.copies`): one recall of an
archive file serves every cart that orders it.

The index is on `hashsum` alone, the selective part of the (archive id, hash type,
checksum) key: an archive id may be 1024 characters, more than a MySQL or PostgreSQL
index entry holds, while a hex digest is at most 128.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cart_files_hashsum", "cart_files", ["hashsum"])


def downgrade() -> None:
    op.drop_index("ix_cart_files_hashsum", table_name="cart_files")
