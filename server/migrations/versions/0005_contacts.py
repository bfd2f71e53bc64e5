"""contacts (通讯录), photos on task steps

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

A new `contacts` table, the one place for phone numbers, and a nullable `photo_ids` JSON column
on `task_events`. `task_events` is a spatial table: its column is added (and dropped) with a
plain ALTER TABLE on both backends, since a batch rebuild would break SpatiaLite's metadata.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("role_title", sa.String(length=100), nullable=True),
        sa.Column("area_ids", sa.JSON(), nullable=False),
        sa.Column("duty", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_contacts_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_contacts_org_id_organisations")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_contacts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_contacts_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_contacts_user_id"), ["user_id"], unique=False)

    op.add_column("task_events", sa.Column("photo_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("task_events", "photo_ids")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_user_id"))
        batch_op.drop_index(batch_op.f("ix_contacts_org_id"))
        batch_op.drop_index(batch_op.f("ix_contacts_kind"))
    op.drop_table("contacts")
