"""Public warnings as CAP 1.2 messages: drafts, approval, chains, authorities, imported feeds

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

`alerts` becomes one CAP message per row (draft or published, its document kept once
published); `alert_chains` is a warning as phones hold it (synced entity `alert`);
`alert_authorities` the organisations that send warnings; `alert_feeds` other authorities'
feeds to poll. The old flat `alerts` table is replaced: its rows were never published anywhere
(no public route, no CAP document existed), so they are not carried over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _record() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_geospatial_index(
            "idx_alerts_area", postgresql_using="gist", column_name="area"
        )
    op.drop_geospatial_table("alerts")

    op.create_geospatial_table(
        "alerts",
        sa.Column("chain_id", sa.Uuid(), nullable=False),
        sa.Column("identifier", sa.String(length=200), nullable=False),
        sa.Column("sender", sa.String(length=200), nullable=False),
        sa.Column("sent", TS, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("msg_type", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("references", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("color", sa.String(length=8), nullable=True),
        sa.Column("category", sa.JSON(), nullable=False),
        sa.Column("response_type", sa.JSON(), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("certainty", sa.String(length=16), nullable=False),
        sa.Column("effective", TS, nullable=True),
        sa.Column("onset", TS, nullable=True),
        sa.Column("expires", TS, nullable=True),
        sa.Column("web", sa.String(length=500), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=True),
        sa.Column("texts", sa.JSON(), nullable=False),
        sa.Column(
            "area",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("polygons", sa.JSON(), nullable=False),
        sa.Column("circles", sa.JSON(), nullable=False),
        sa.Column("geocodes", sa.JSON(), nullable=False),
        sa.Column("area_ids", sa.JSON(), nullable=False),
        sa.Column("area_id", sa.Uuid(), nullable=True),
        sa.Column("authority_id", sa.Uuid(), nullable=True),
        sa.Column("drafted_by", sa.Uuid(), nullable=True),
        sa.Column("approved_by", sa.Uuid(), nullable=True),
        sa.Column("published_by", sa.Uuid(), nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("superseded_by", sa.Uuid(), nullable=True),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("source_url", sa.String(length=500), nullable=True),
        sa.Column("cap_xml", sa.LargeBinary(), nullable=True),
        *_record(),
        sa.ForeignKeyConstraint(
            ["area_id"], ["admin_areas.id"], name=op.f("fk_alerts_area_id_admin_areas")
        ),
        sa.ForeignKeyConstraint(
            ["authority_id"],
            ["organisations.id"],
            name=op.f("fk_alerts_authority_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["drafted_by"], ["users.id"], name=op.f("fk_alerts_drafted_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["approved_by"], ["users.id"], name=op.f("fk_alerts_approved_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["published_by"], ["users.id"], name=op.f("fk_alerts_published_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("sender", "identifier", name=op.f("uq_alerts_sender_identifier")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_geospatial_index(
            "idx_alerts_area", ["area"], unique=False, postgresql_using="gist", postgresql_ops={}
        )
        batch_op.create_index(batch_op.f("ix_alerts_chain_id"), ["chain_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_expires"), ["expires"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_published_at"), ["published_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_state"), ["state"], unique=False)

    op.create_table(
        "alert_chains",
        sa.Column("current_id", sa.Uuid(), nullable=False),
        sa.Column("sender", sa.String(length=200), nullable=False),
        *_record(),
        sa.ForeignKeyConstraint(
            ["current_id"], ["alerts.id"], name=op.f("fk_alert_chains_current_id_alerts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_chains")),
    )
    op.create_table(
        "alert_authorities",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("sender", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=True),
        sa.Column("web", sa.String(length=500), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=True),
        sa.Column("approval_colors", sa.JSON(), nullable=False),
        sa.Column("approver_ids", sa.JSON(), nullable=False),
        *_record(),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_alert_authorities_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_authorities")),
        sa.UniqueConstraint("org_id", name=op.f("uq_alert_authorities_org_id")),
        sa.UniqueConstraint("sender", name=op.f("uq_alert_authorities_sender")),
    )
    op.create_table(
        "alert_feeds",
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_polled_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        *_record(),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_alert_feeds_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_feeds")),
        sa.UniqueConstraint("url", name=op.f("uq_alert_feeds_url")),
    )


def downgrade() -> None:
    op.drop_table("alert_feeds")
    op.drop_table("alert_authorities")
    op.drop_table("alert_chains")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_state"))
        batch_op.drop_index(batch_op.f("ix_alerts_published_at"))
        batch_op.drop_index(batch_op.f("ix_alerts_expires"))
        batch_op.drop_index(batch_op.f("ix_alerts_chain_id"))
        batch_op.drop_geospatial_index(
            "idx_alerts_area", postgresql_using="gist", column_name="area"
        )
    op.drop_geospatial_table("alerts")
    op.create_geospatial_table(
        "alerts",
        sa.Column("identifier", sa.String(length=200), nullable=False),
        sa.Column("msg_type", sa.String(length=16), nullable=False),
        sa.Column("references", sa.String(length=400), nullable=True),
        sa.Column("event", sa.String(length=200), nullable=False),
        sa.Column("color", sa.String(length=8), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("certainty", sa.String(length=16), nullable=False),
        sa.Column("headline", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("instruction", sa.Text(), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("area_desc", sa.String(length=200), nullable=False),
        sa.Column(
            "area",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("sent", TS, nullable=False),
        sa.Column("expires", TS, nullable=True),
        sa.Column("area_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        *_record(),
        sa.ForeignKeyConstraint(
            ["area_id"], ["admin_areas.id"], name=op.f("fk_alerts_area_id_admin_areas")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_alerts_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("identifier", name=op.f("uq_alerts_identifier")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_geospatial_index(
            "idx_alerts_area", ["area"], unique=False, postgresql_using="gist", postgresql_ops={}
        )
