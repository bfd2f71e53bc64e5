"""delta sync: change log, scope memberships, mutation outcomes, conflicts, checksums

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Only new tables (server/domain/sync); the domain tables are untouched. The counter row (id 1)
is inserted here so writers can lock it from the first push on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_records",
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("changed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entity", "record_id", name=op.f("pk_sync_records")),
    )
    op.create_table(
        "sync_members",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.Column("left_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("scope", "entity", "record_id", name=op.f("pk_sync_members")),
    )
    op.create_index("ix_sync_members_scope_seq", "sync_members", ["scope", "seq"])
    op.create_index(op.f("ix_sync_members_record_id"), "sync_members", ["record_id"])
    op.create_table(
        "sync_mutations",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", name=op.f("pk_sync_mutations")),
    )
    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_conflicts")),
    )
    op.create_index(op.f("ix_sync_conflicts_entity"), "sync_conflicts", ["entity"])
    op.create_index(op.f("ix_sync_conflicts_record_id"), "sync_conflicts", ["record_id"])
    op.create_index(op.f("ix_sync_conflicts_resolved"), "sync_conflicts", ["resolved"])
    op.create_index(op.f("ix_sync_conflicts_created_ms"), "sync_conflicts", ["created_ms"])
    op.create_table(
        "sync_checksums",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("checksum", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_sync_checksums")),
    )
    counter = op.create_table(
        "sync_counter",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_counter")),
    )
    op.bulk_insert(counter, [{"id": 1, "seq": 0, "horizon": 0}])
    op.create_table(
        "sync_commits",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sync_commits")),
    )
    op.create_index(op.f("ix_sync_commits_at_ms"), "sync_commits", ["at_ms"])


def downgrade() -> None:
    op.drop_table("sync_commits")
    op.drop_table("sync_counter")
    op.drop_table("sync_checksums")
    op.drop_table("sync_conflicts")
    op.drop_table("sync_mutations")
    op.drop_index("ix_sync_members_scope_seq", table_name="sync_members")
    op.drop_table("sync_members")
    op.drop_table("sync_records")
