"""dispatch by emergency plan, escalation, responder positions, push outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emergency_plans",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("incident_type", sa.String(length=32), nullable=False),
        sa.Column("min_level", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("templates", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_emergency_plans_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emergency_plans")),
        sa.UniqueConstraint("code", "version", name=op.f("uq_emergency_plans_code_version")),
    )
    op.create_index(op.f("ix_emergency_plans_code"), "emergency_plans", ["code"])
    op.create_index(op.f("ix_emergency_plans_incident_type"), "emergency_plans", ["incident_type"])

    op.create_table(
        "plan_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("incident_id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("plan_code", sa.String(length=64), nullable=False),
        sa.Column("template_key", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("tried_unit_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_plan_runs_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["emergency_plans.id"], name=op.f("fk_plan_runs_plan_id_emergency_plans")
        ),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_plan_runs_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_runs")),
        sa.UniqueConstraint(
            "incident_id",
            "plan_code",
            "template_key",
            "slot",
            name=op.f("uq_plan_runs_incident_id_plan_code_template_key_slot"),
        ),
    )
    op.create_index(op.f("ix_plan_runs_incident_id"), "plan_runs", ["incident_id"])
    op.create_index(op.f("ix_plan_runs_task_id"), "plan_runs", ["task_id"])

    op.create_table(
        "push_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_jobs")),
        sa.UniqueConstraint("event_id", "device_id", name=op.f("uq_push_jobs_event_id_device_id")),
    )
    op.create_index("ix_push_jobs_state_not_before", "push_jobs", ["state", "not_before"])
    op.create_index(op.f("ix_push_jobs_user_id"), "push_jobs", ["user_id"])

    op.create_table(
        "push_deliveries",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("event_id", "device_id", name=op.f("pk_push_deliveries")),
    )

    op.create_geospatial_table(
        "responder_positions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column(
            "location",
            Geometry(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_responder_positions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_responder_positions")),
    )
    with op.batch_alter_table("responder_positions", schema=None) as batch_op:
        batch_op.create_geospatial_index(
            "idx_responder_positions_location",
            ["location"],
            unique=False,
            postgresql_using="gist",
            postgresql_ops={},
        )
        batch_op.create_index(batch_op.f("ix_responder_positions_org_id"), ["org_id"], unique=False)

    # New columns on existing tables: plain ADD COLUMN (no batch rebuild, which would drop the
    # SpatiaLite geometry registration of tasks/incidents). Nothing here is a foreign key.
    op.add_column("tasks", sa.Column("plan_id", sa.Uuid(), nullable=True))
    op.add_column("tasks", sa.Column("template_key", sa.String(length=64), nullable=True))
    op.add_column("tasks", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("accept_by", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_tasks_accept_by"), "tasks", ["accept_by"])
    op.add_column(
        "incidents",
        sa.Column("hazard_ids", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot DROP COLUMN where an index or trigger names it; drop the index first.
        op.drop_index(op.f("ix_tasks_accept_by"), table_name="tasks")
        for column in ("escalated_at", "accept_by", "dispatched_at", "template_key", "plan_id"):
            op.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
        op.execute("ALTER TABLE incidents DROP COLUMN hazard_ids")
    else:
        op.drop_index(op.f("ix_tasks_accept_by"), table_name="tasks")
        for column in ("escalated_at", "accept_by", "dispatched_at", "template_key", "plan_id"):
            op.drop_column("tasks", column)
        op.drop_column("incidents", "hazard_ids")
    with op.batch_alter_table("responder_positions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_responder_positions_org_id"))
        batch_op.drop_geospatial_index(
            "idx_responder_positions_location", postgresql_using="gist", column_name="location"
        )
    op.drop_geospatial_table("responder_positions")
    op.drop_table("push_deliveries")
    op.drop_index(op.f("ix_push_jobs_user_id"), table_name="push_jobs")
    op.drop_index("ix_push_jobs_state_not_before", table_name="push_jobs")
    op.drop_table("push_jobs")
    op.drop_index(op.f("ix_plan_runs_task_id"), table_name="plan_runs")
    op.drop_index(op.f("ix_plan_runs_incident_id"), table_name="plan_runs")
    op.drop_table("plan_runs")
    op.drop_index(op.f("ix_emergency_plans_incident_type"), table_name="emergency_plans")
    op.drop_index(op.f("ix_emergency_plans_code"), table_name="emergency_plans")
    op.drop_table("emergency_plans")
