"""audit_log.area_id: the area an audited action happened in

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28

Dispatchers read their own area's audit (`GET /api/v1/audit`): each entry records the area of
the record acted on (else the actor's). Entries written before this migration have none and
only administrators read them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("area_id", sa.Uuid(), nullable=True))
    op.create_index("ix_audit_log_area_id", "audit_log", ["area_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_area_id", table_name="audit_log")
    # Not batch mode: on SQLite that copies the table and drops its append-only triggers;
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+) keeps them.
    op.drop_column("audit_log", "area_id")
