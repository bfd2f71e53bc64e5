"""media pipeline and the hazard closed loop

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Adds photo links (hazard_media), escalations, the closed-loop columns of hazards, the kind of a
hazard event, and a media object's filename and storage time. Columns added to existing
tables only (never a table rebuild): SQLite would otherwise recreate spatial tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "escalations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("hazard_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("grid_id", sa.Uuid(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("area_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["area_id"], ["admin_areas.id"], name=op.f("fk_escalations_area_id_admin_areas")
        ),
        sa.ForeignKeyConstraint(
            ["grid_id"], ["grids.id"], name=op.f("fk_escalations_grid_id_grids")
        ),
        sa.ForeignKeyConstraint(
            ["hazard_id"], ["hazards.id"], name=op.f("fk_escalations_hazard_id_hazards")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_escalations_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalations")),
        sa.UniqueConstraint(
            "hazard_id", "kind", "deadline", name=op.f("uq_escalations_hazard_id_kind_deadline")
        ),
    )
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_escalations_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_escalations_grid_id"), ["grid_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_escalations_hazard_id"), ["hazard_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_escalations_org_id"), ["org_id"], unique=False)

    op.create_table(
        "hazard_media",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("hazard_id", sa.Uuid(), nullable=False),
        sa.Column("media_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("expected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["added_by"], ["users.id"], name=op.f("fk_hazard_media_added_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["hazard_events.id"], name=op.f("fk_hazard_media_event_id_hazard_events")
        ),
        sa.ForeignKeyConstraint(
            ["hazard_id"], ["hazards.id"], name=op.f("fk_hazard_media_hazard_id_hazards")
        ),
        sa.ForeignKeyConstraint(
            ["media_id"],
            ["media_objects.id"],
            name=op.f("fk_hazard_media_media_id_media_objects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hazard_media")),
        sa.UniqueConstraint(
            "hazard_id", "media_id", name=op.f("uq_hazard_media_hazard_id_media_id")
        ),
    )
    with op.batch_alter_table("hazard_media", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hazard_media_hazard_id"), ["hazard_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_hazard_media_media_id"), ["media_id"], unique=False)

    with op.batch_alter_table("hazard_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="transition", nullable=False)
        )

    with op.batch_alter_table("hazards", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rectify_enterprise_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("overdue", sa.Boolean(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_hazards_overdue"), ["overdue"], unique=False)

    with op.batch_alter_table("media_objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("filename", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN on both (SQLite >= 3.35): a batch rebuild of a spatial table would break
    # its SpatiaLite metadata. An index naming the column goes first.
    op.drop_index(op.f("ix_hazards_overdue"), table_name="hazards")
    for table, column in (
        ("media_objects", "stored_at"),
        ("media_objects", "filename"),
        ("hazards", "status_reason"),
        ("hazards", "overdue"),
        ("hazards", "rectify_enterprise_id"),
        ("hazards", "reported_at"),
        ("hazard_events", "kind"),
    ):
        op.drop_column(table, column)

    op.drop_index(op.f("ix_hazard_media_media_id"), table_name="hazard_media")
    op.drop_index(op.f("ix_hazard_media_hazard_id"), table_name="hazard_media")
    op.drop_table("hazard_media")

    for name in ("org_id", "hazard_id", "grid_id", "created_at"):
        op.drop_index(op.f(f"ix_escalations_{name}"), table_name="escalations")
    op.drop_table("escalations")
