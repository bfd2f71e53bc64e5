"""Sync data repairs: hazards reach whoever must rectify them; the old alerts' records go

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

No schema change. A hazard's sync scopes now include the enterprise and the organisation
assigned to rectify it (`enterprise:`, `org:`), as REST already showed it to them. The engine
re-computes scopes only when a field changes, so hazards assigned before this migration get a
new version in their new scopes here, and their photos' `shared_with` follows.

Migration 0008 replaced the flat `alerts` table but left its sync records (entity `alert`,
live), and the entity name now belongs to the warnings (`alert_chains`): every `alert` sync
record that is not a warning is deleted here as a server delete would (a tombstone with a new
version), so phones drop it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_hazards = sa.table(
    "hazards",
    sa.column("id", sa.Uuid()),
    sa.column("rectify_enterprise_id", sa.Uuid()),
    sa.column("rectify_org_id", sa.Uuid()),
)
_chains = sa.table("alert_chains", sa.column("id", sa.Uuid()))
_records = sa.table(
    "sync_records",
    sa.column("entity", sa.String()),
    sa.column("record_id", sa.Uuid()),
    sa.column("deleted", sa.Boolean()),
)


def upgrade() -> None:
    # The sync engine's own code does the writes (seqs, memberships, evictions, checksums).
    from server.domain.sync.changelog import SyncRuntime, delete_records, rescope_hazards

    session = Session(bind=op.get_bind())
    runtime = SyncRuntime()
    assigned = sa.select(_hazards.c.id).where(
        sa.or_(
            _hazards.c.rectify_enterprise_id.is_not(None), _hazards.c.rectify_org_id.is_not(None)
        )
    )
    rescope_hazards(session, runtime, list(session.execute(assigned).scalars()))
    stale = sa.select(_records.c.record_id).where(
        _records.c.entity == "alert",
        _records.c.deleted.is_(False),
        _records.c.record_id.not_in(sa.select(_chains.c.id)),
    )
    delete_records(session, runtime, "alert", list(session.execute(stale).scalars()))
    session.close()


def downgrade() -> None:
    pass  # data only: the new versions stay (older servers read them as they are)
