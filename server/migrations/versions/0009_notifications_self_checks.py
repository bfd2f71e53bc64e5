"""users' language, hazard sources, the self-check schedule, notice claims (issue 12)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28

- `users.language`: the saved language of pushes and exports (`zh_CN` by default).
- `hazards.source` (self_reported, enterprise_inspection, grid_inspection,
  third_party_inspection), backfilled from the reporter's role; `check_submission_id` and
  `check_item_id` link a hazard to the failed self-check item that opened it (unique together).
- `enterprises.kind`, for assigning templates by kind.
- `check_assignments` (which enterprises run which template, due on which weekday) and
  `check_dues` (one row per enterprise, template and ISO week: due, done or missed).
- `notice_claims`: the key of each scheduled notification already sent.

`hazards` and `enterprises` are spatial tables: their columns and indexes are added with plain
ALTER TABLE / CREATE INDEX on both backends (a batch rebuild would break SpatiaLite's metadata).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_AWARE = sa.DateTime(timezone=True)


def _record_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _AWARE, nullable=False),
        sa.Column("updated_at", _AWARE, nullable=False),
        sa.Column("deleted_at", _AWARE, nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=16), server_default="zh_CN", nullable=False)
        )

    op.add_column(
        "hazards",
        sa.Column("source", sa.String(length=32), server_default="grid_inspection", nullable=False),
    )
    op.add_column("hazards", sa.Column("check_submission_id", sa.Uuid(), nullable=True))
    op.add_column("hazards", sa.Column("check_item_id", sa.Uuid(), nullable=True))
    op.create_index(op.f("ix_hazards_source"), "hazards", ["source"], unique=False)
    op.create_index(
        "uq_hazards_check_item", "hazards", ["check_submission_id", "check_item_id"], unique=True
    )
    # Reports by enterprise staff were the enterprise's own (docs/hazards.md has the mapping).
    op.execute(
        "UPDATE hazards SET source = 'self_reported' WHERE reporter_id IN "
        "(SELECT id FROM users WHERE role = 'enterprise_staff')"
    )

    op.add_column("enterprises", sa.Column("kind", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_enterprises_kind"), "enterprises", ["kind"], unique=False)

    op.create_table(
        "check_assignments",
        sa.Column("template_code", sa.String(length=64), nullable=False),
        sa.Column("enterprise_id", sa.Uuid(), nullable=True),
        sa.Column("enterprise_kind", sa.String(length=32), nullable=True),
        sa.Column("area_id", sa.Uuid(), nullable=True),
        sa.Column("due_weekday", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        *_record_columns(),
        sa.ForeignKeyConstraint(
            ["area_id"], ["admin_areas.id"], name=op.f("fk_check_assignments_area_id_admin_areas")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_check_assignments_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name=op.f("fk_check_assignments_enterprise_id_enterprises"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_assignments")),
    )
    with op.batch_alter_table("check_assignments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_check_assignments_enterprise_id"), ["enterprise_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_check_assignments_template_code"), ["template_code"], unique=False
        )

    op.create_table(
        "check_dues",
        sa.Column("enterprise_id", sa.Uuid(), nullable=False),
        sa.Column("template_code", sa.String(length=64), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("week", sa.String(length=8), nullable=False),
        sa.Column("due_at", _AWARE, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("submission_id", sa.Uuid(), nullable=True),
        sa.Column("submitted_at", _AWARE, nullable=True),
        sa.Column("reminded_at", _AWARE, nullable=True),
        sa.Column("missed_at", _AWARE, nullable=True),
        sa.Column("grid_id", sa.Uuid(), nullable=True),
        sa.Column("area_id", sa.Uuid(), nullable=True),
        *_record_columns(),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name=op.f("fk_check_dues_enterprise_id_enterprises"),
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["check_templates.id"],
            name=op.f("fk_check_dues_template_id_check_templates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_dues")),
        sa.UniqueConstraint(
            "enterprise_id",
            "template_code",
            "week",
            name=op.f("uq_check_dues_enterprise_id_template_code_week"),
        ),
    )
    with op.batch_alter_table("check_dues", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_check_dues_enterprise_id"), ["enterprise_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_check_dues_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_check_dues_week"), ["week"], unique=False)

    op.create_table(
        "notice_claims",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("at", _AWARE, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_notice_claims")),
    )


def downgrade() -> None:
    op.drop_table("notice_claims")
    with op.batch_alter_table("check_dues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_check_dues_week"))
        batch_op.drop_index(batch_op.f("ix_check_dues_status"))
        batch_op.drop_index(batch_op.f("ix_check_dues_enterprise_id"))
    op.drop_table("check_dues")
    with op.batch_alter_table("check_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_check_assignments_template_code"))
        batch_op.drop_index(batch_op.f("ix_check_assignments_enterprise_id"))
    op.drop_table("check_assignments")
    op.drop_index(op.f("ix_enterprises_kind"), table_name="enterprises")
    op.drop_column("enterprises", "kind")
    op.drop_index("uq_hazards_check_item", table_name="hazards")
    op.drop_index(op.f("ix_hazards_source"), table_name="hazards")
    op.drop_column("hazards", "check_item_id")
    op.drop_column("hazards", "check_submission_id")
    op.drop_column("hazards", "source")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("language")
