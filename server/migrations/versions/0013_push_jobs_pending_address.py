"""push_jobs: the pending jobs by address, for pruning a dead one

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

A push service that answers 404/410 for an address makes `prune_address` kill every job still
queued to it. Without an index on the address that was a scan of the pending jobs for each dead
address, during a warning's fan-out of 100,000. The index is partial (pending jobs only: the
delivered and dead ones are never looked up by address) and, on PostgreSQL, a hash index: a
B-tree entry is limited to 2,704 bytes and a device token may have up to 4,096.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_push_jobs_pending_address",
        "push_jobs",
        ["address"],
        postgresql_using="hash",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_push_jobs_pending_address", table_name="push_jobs")
