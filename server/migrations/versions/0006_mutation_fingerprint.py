"""sync_mutations.fingerprint: what each (device, seq) said

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

A nullable 16-byte column beside each stored mutation outcome: the fingerprint of the mutation
(`sync.server.fingerprint`). The same (device, seq) arriving with another fingerprint is a
device that restarted its numbering (reinstalled with a wiped store) and is refused instead of
answered `dup`. Outcomes stored before this revision keep NULL and are not checked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sync_mutations", sa.Column("fingerprint", sa.LargeBinary(length=16), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("sync_mutations") as batch:
        batch.drop_column("fingerprint")
