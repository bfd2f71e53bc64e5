"""Residents' warning subscriptions (issue 15), their places, public rate limits; claim index

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28

`resident_subscriptions` (one per push address / phone number, a secret's hash, a language),
`resident_places` (points rounded to ~100 m with a spatial index, or named areas), `rate_hits`
(per-address limits of the public routes). `push_jobs`' due index gains `created_at`, the
second sort key of every claim: a warning's 100,000 jobs share one `not_before`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_hits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_hits")),
    )
    with op.batch_alter_table("rate_hits", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rate_hits_bucket_client_at", ["bucket", "client", "at"], unique=False
        )

    op.create_table(
        "resident_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=True),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resident_subscriptions")),
        sa.UniqueConstraint("address_hash", name=op.f("uq_resident_subscriptions_address_hash")),
    )
    with op.batch_alter_table("resident_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_resident_subscriptions_renewed_at"), ["renewed_at"], unique=False
        )

    op.create_geospatial_table(
        "resident_places",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column(
            "location",
            Geometry(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
            ),
            nullable=True,
        ),
        sa.Column("area_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["area_id"], ["admin_areas.id"], name=op.f("fk_resident_places_area_id_admin_areas")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["resident_subscriptions.id"],
            name=op.f("fk_resident_places_subscription_id_resident_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resident_places")),
    )
    with op.batch_alter_table("resident_places", schema=None) as batch_op:
        batch_op.create_geospatial_index(
            "idx_resident_places_location",
            ["location"],
            unique=False,
            postgresql_using="gist",
            postgresql_ops={},
        )
        batch_op.create_index(batch_op.f("ix_resident_places_area_id"), ["area_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_resident_places_subscription_id"), ["subscription_id"], unique=False
        )

    with op.batch_alter_table("push_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_push_jobs_state_not_before"))
        batch_op.create_index(
            "ix_push_jobs_due", ["state", "not_before", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("push_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_push_jobs_due")
        batch_op.create_index(
            batch_op.f("ix_push_jobs_state_not_before"), ["state", "not_before"], unique=False
        )

    with op.batch_alter_table("resident_places", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resident_places_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_resident_places_area_id"))
        batch_op.drop_geospatial_index(
            "idx_resident_places_location", postgresql_using="gist", column_name="location"
        )

    op.drop_geospatial_table("resident_places")
    with op.batch_alter_table("resident_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resident_subscriptions_renewed_at"))

    op.drop_table("resident_subscriptions")
    with op.batch_alter_table("rate_hits", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_hits_bucket_client_at")

    op.drop_table("rate_hits")
