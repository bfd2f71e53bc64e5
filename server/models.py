"""Tables for both backends. One Alembic history (server/migrations) creates them.

Every record a phone may create offline has a client-generated UUID, UTC timestamps and a soft
delete (`deleted_at`), so the sync engine can build on it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas.ids import uuid7


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: times are timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def point_col(nullable: bool = False) -> Mapped[Any]:
    """A WGS-84 point with a spatial index (R-tree on SpatiaLite, GiST on PostGIS)."""
    return mapped_column(
        Geometry("POINT", srid=4326, spatial_index=True, nullable=nullable), nullable=nullable
    )


def polygon_col(nullable: bool = False, kind: str = "POLYGON") -> Mapped[Any]:
    """A WGS-84 polygon (or multipolygon) with a spatial index."""
    return mapped_column(
        Geometry(kind, srid=4326, spatial_index=True, nullable=nullable), nullable=nullable
    )


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them on SQLite)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid(), dict[str, Any]: JSON()}


class Record(Base):
    """Columns every synced record has."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class AdminArea(Record):
    """City → district → street → community; `path` is the chain of ids for subtree queries."""

    __tablename__ = "admin_areas"

    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"))
    path: Mapped[str] = mapped_column(String(2000), index=True)
    boundary = polygon_col(nullable=True)


class Organisation(Record):
    """Command centre, linked unit, grid office or enterprise."""

    __tablename__ = "organisations"

    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    unit_kind: Mapped[str | None] = mapped_column(String(32), index=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"))
    location = point_col(nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32))


class User(Record):
    """A person who signs in."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The person's saved language (i18n.LANGS) for pushes and exports; Chinese by default.
    language: Mapped[str] = mapped_column(String(16), default="zh_CN", server_default="zh_CN")


class Membership(Record):
    """A user's place in an organisation beyond their home org."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "org_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    role: Mapped[str] = mapped_column(String(32), default="member")


class Grid(Record):
    """A patrol grid polygon with its inspector."""

    __tablename__ = "grids"

    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    boundary = polygon_col()
    inspector_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)


class Enterprise(Record):
    """An enterprise under safety supervision; its staff belong to `org_id`."""

    __tablename__ = "enterprises"

    name: Mapped[str] = mapped_column(String(200))
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    grid_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("grids.id"), index=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    location = point_col()
    address: Mapped[str | None] = mapped_column(String(400))
    # What kind of enterprise (e.g. `hazardous_chemicals`, `mall`): self-check templates can be
    # assigned by kind (`CheckAssignment.enterprise_kind`).
    kind: Mapped[str | None] = mapped_column(String(32), default=None, index=True)


class Incident(Record):
    """An incident; owns tasks."""

    __tablename__ = "incidents"

    type: Mapped[str] = mapped_column(String(32), index=True)
    level: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    location = point_col()
    area = polygon_col(nullable=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="open")
    source: Mapped[str] = mapped_column(String(16), default="hotline")
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    hazard_ids: Mapped[list[str]] = mapped_column(JSON, default=list)


class Task(Record):
    """A task dispatched to a person or a unit."""

    __tablename__ = "tasks"

    incident_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    location = point_col()
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    deadline: Mapped[datetime | None] = mapped_column()
    assignee_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    assignee_unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organisations.id"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), index=True, default="assigned")
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    # Dispatch by plan (issue 5): which plan template made it, when the current assignee was
    # dispatched, by when they must accept, and when escalation flagged it.
    plan_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    template_key: Mapped[str | None] = mapped_column(String(64), default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    accept_by: Mapped[datetime | None] = mapped_column(default=None, index=True)
    escalated_at: Mapped[datetime | None] = mapped_column(default=None)


class TaskEvent(Record):
    """One status step of a task, stamped with time, actor, device and GPS fix."""

    __tablename__ = "task_events"

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[str | None] = mapped_column(String(128))
    location = point_col(nullable=True)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
    # Photos (media ids) attached to this step; nullable so rows older than 0005 need no rewrite.
    photo_ids: Mapped[list[str] | None] = mapped_column(JSON, default=list)


class Hazard(Record):
    """A hazard report (隐患) in its closed loop."""

    __tablename__ = "hazards"

    category: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str] = mapped_column(Text)
    location = point_col()
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(32), index=True, default="reported")
    reporter_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    grid_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("grids.id"), index=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    enterprise_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("enterprises.id"), index=True
    )
    photo_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    rectify_org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organisations.id"))
    rectify_deadline: Mapped[datetime | None] = mapped_column()
    # Closed-loop fields (issue 4). `reported_at` is the phone's time of the report (it may sync
    # hours later); `overdue` is set once by the overdue job (UPDATE ... WHERE NOT overdue).
    reported_at: Mapped[datetime | None] = mapped_column(default=None)
    # No FOREIGN KEY: adding one would make SQLite rebuild this spatial table in the migration.
    rectify_enterprise_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    overdue: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0", index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Issue 12: where the hazard came from (`schemas.hazards.HazardSource`, docs/hazards.md),
    # and for one a failed self-check item opened, that submission and item (unique together:
    # one hazard per failed item, however often the submission arrives).
    source: Mapped[str] = mapped_column(
        String(32), default="grid_inspection", server_default="grid_inspection", index=True
    )
    check_submission_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    check_item_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


Index("uq_hazards_check_item", Hazard.check_submission_id, Hazard.check_item_id, unique=True)


class HazardEvent(Record):
    """One step of a hazard's lifecycle."""

    __tablename__ = "hazard_events"

    hazard_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("hazards.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: "transition" (a status step) or "escalation" (overdue; status unchanged).
    kind: Mapped[str] = mapped_column(String(16), default="transition", server_default="transition")


class HazardMedia(Base):
    """A photo attached to a hazard: at the report, with the rectification, or at re-inspection.

    `expected_at` is when the photo should have been taken (the report or step time); the
    evidence check compares the photo's EXIF against it and against the hazard's point.
    """

    __tablename__ = "hazard_media"
    __table_args__ = (UniqueConstraint("hazard_id", "media_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    hazard_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("hazards.id"), index=True)
    media_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("media_objects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="report")
    event_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("hazard_events.id"))
    expected_at: Mapped[datetime] = mapped_column(default=utcnow)
    added_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Escalation(Base):
    """An escalation to deliver (e.g. an overdue rectification); the push work sends it.

    Unique per (hazard, kind, deadline): however many job runners race, one row per deadline.
    """

    __tablename__ = "escalations"
    __table_args__ = (UniqueConstraint("hazard_id", "kind", "deadline"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    hazard_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("hazards.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="overdue")
    deadline: Mapped[datetime] = mapped_column()
    grid_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("grids.id"), index=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CheckTemplate(Record):
    """A versioned safety self-check template (安全周检查表)."""

    __tablename__ = "check_templates"
    __table_args__ = (UniqueConstraint("code", "version"),)

    code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class CheckItem(Record):
    """One checklist item of a template."""

    __tablename__ = "check_items"

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("check_templates.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32), default="other")


class CheckSubmission(Record):
    """An enterprise's weekly self-check, per-item results as JSON."""

    __tablename__ = "check_submissions"
    __table_args__ = (UniqueConstraint("enterprise_id", "template_id", "week"),)

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("check_templates.id"))
    enterprise_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enterprises.id"), index=True)
    week: Mapped[str] = mapped_column(String(8))
    submitted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    submitted_at: Mapped[datetime | None] = mapped_column()
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class CheckAssignment(Record):
    """Which enterprises must run a template's self-check, and on which weekday it is due.

    It names the template by `template_code`, so a new version carries the assignment over; it
    selects enterprises by hand (`enterprise_id`), by `enterprise_kind` and/or by area (the
    area's subtree); every given selector must match. Weekly; due on ISO weekday `due_weekday`
    (1 = Monday .. 7 = Sunday) of each ISO week, in the deployment's zone. Not synced: the
    phone sees the resulting `CheckDue` rows.
    """

    __tablename__ = "check_assignments"

    template_code: Mapped[str] = mapped_column(String(64), index=True)
    enterprise_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("enterprises.id"), index=True, default=None
    )
    enterprise_kind: Mapped[str | None] = mapped_column(String(32), default=None)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), default=None)
    due_weekday: Mapped[int] = mapped_column(Integer, default=5)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), default=None)


class CheckDue(Record):
    """One enterprise's self-check of one template for one ISO week: `due`, `done` or `missed`.

    Written by the self-check job (the week opens, the reminder, the missed flag) and by
    `checks.submit` (done); synced read-only to the enterprise (docs/sync-protocol.md).
    `reminded_at` and `missed_at` are claimed by conditional UPDATEs, so each push goes out
    once however many job runners race.
    """

    __tablename__ = "check_dues"
    __table_args__ = (UniqueConstraint("enterprise_id", "template_code", "week"),)

    enterprise_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enterprises.id"), index=True)
    template_code: Mapped[str] = mapped_column(String(64))
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("check_templates.id"))
    week: Mapped[str] = mapped_column(String(8), index=True)
    due_at: Mapped[datetime] = mapped_column()  # the end of the due day, local zone, as UTC
    status: Mapped[str] = mapped_column(String(16), default="due", index=True)
    submission_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    submitted_at: Mapped[datetime | None] = mapped_column(default=None)
    reminded_at: Mapped[datetime | None] = mapped_column(default=None)
    missed_at: Mapped[datetime | None] = mapped_column(default=None)
    grid_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    area_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class NoticeClaim(Base):
    """A scheduled notification that was sent: the job that inserts the key first sends it
    (e.g. a rectification deadline's reminder), every other runner finds the key and does not."""

    __tablename__ = "notice_claims"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[datetime] = mapped_column()


class Alert(Record):
    """One CAP 1.2 message of a public warning (docs/alerts.md).

    A draft (`state` draft) is edited until it is published; then it never changes again:
    `cap_xml` holds the exact document served at `/api/v1/public/cap/{id}` (signed when a key
    is configured), and only the bookkeeping columns `superseded_by` and `updated_at` move
    when a later message of its chain supersedes it. `texts` holds one entry per language
    (zh-CN always): {language, event, headline, description, instruction, sender_name,
    area_desc}. `area` is the polygons with the circles approximated, for spatial queries;
    `polygons` are exactly what the CAP document carries. `area_ids` are the deepest
    administrative areas it touches (phones of those areas hold it).
    """

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("sender", "identifier"),)

    chain_id: Mapped[uuid.UUID] = mapped_column(Uuid(), index=True)
    identifier: Mapped[str] = mapped_column(String(200))
    sender: Mapped[str] = mapped_column(String(200))
    sent: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16))
    msg_type: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16), default="Public")
    state: Mapped[str] = mapped_column(String(16), index=True)
    references: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    color: Mapped[str | None] = mapped_column(String(8), default=None)
    category: Mapped[list[str]] = mapped_column(JSON, default=list)
    response_type: Mapped[list[str]] = mapped_column(JSON, default=list)
    urgency: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    certainty: Mapped[str] = mapped_column(String(16))
    effective: Mapped[datetime | None] = mapped_column(default=None)
    onset: Mapped[datetime | None] = mapped_column(default=None)
    expires: Mapped[datetime | None] = mapped_column(default=None, index=True)
    web: Mapped[str | None] = mapped_column(String(500), default=None)
    contact: Mapped[str | None] = mapped_column(String(200), default=None)
    texts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    area = polygon_col(kind="MULTIPOLYGON")
    polygons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    circles: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    geocodes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    area_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), default=None)
    authority_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organisations.id"), default=None
    )
    drafted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), default=None)
    approved_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), default=None)
    published_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    source_url: Mapped[str | None] = mapped_column(String(500), default=None)
    cap_xml: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


class AlertChain(Record):
    """A warning as phones hold it: the chain of its messages, `id` = the first message's id.

    Synced as entity `alert` (mapping.py): its values are those of the chain's current message
    (`current_id`). Created when the first message is published; a Cancel deletes it (phones
    drop it); an Update points it at the new message (phones replace it).
    """

    __tablename__ = "alert_chains"

    current_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id"))
    sender: Mapped[str] = mapped_column(String(200))


class AlertAuthority(Record):
    """An organisation that sends warnings: CAP sender id, names, who approves what."""

    __tablename__ = "alert_authorities"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), unique=True)
    sender: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200), default=None)
    web: Mapped[str | None] = mapped_column(String(500), default=None)
    contact: Mapped[str | None] = mapped_column(String(200), default=None)
    approval_colors: Mapped[list[str]] = mapped_column(JSON, default=list)
    approver_ids: Mapped[list[str]] = mapped_column(JSON, default=list)


class AlertFeed(Record):
    """Another authority's CAP feed an administrator asked this server to poll."""

    __tablename__ = "alert_feeds"

    url: Mapped[str] = mapped_column(String(500), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_polled_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), default=None)


class Resource(Record):
    """Shelter, supply depot or rescue team."""

    __tablename__ = "resources"

    kind: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(200))
    location = point_col()
    capacity: Mapped[int | None] = mapped_column(Integer)
    contact_name: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(Text)
    area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)


class Contact(Record):
    """A phone number to call (通讯录): a unit's or organisation's duty line, or a person.

    The one place for phone numbers. `area_ids` are the ids (strings) of the areas it serves;
    an empty list serves everywhere. `duty` marks the duty lines a warning reaches by SMS.
    """

    __tablename__ = "contacts"

    kind: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200), default=None)
    phone: Mapped[str] = mapped_column(String(32))
    org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organisations.id"), index=True, default=None
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id"), index=True, default=None
    )
    role_title: Mapped[str | None] = mapped_column(String(100), default=None)
    area_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    duty: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[str | None] = mapped_column(Text, default=None)
    # Who created it: a create retried by the same user returns the first result.
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), default=None)


class Device(Record):
    """A user's device and its push registration."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "device_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    platform: Mapped[str] = mapped_column(String(32), default="android")
    channel: Mapped[str | None] = mapped_column(String(16))
    token: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[datetime | None] = mapped_column()
    # SHA-256 (hex) of the secret issued at this device's last sign-in: presenting the secret
    # proves "this device signed in before" and exempts the sign-in from address throttling.
    login_secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)


class MediaObject(Record):
    """A photo or file, known by its SHA-256; `pending` until its bytes arrive and verify."""

    __tablename__ = "media_objects"

    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    exif: Mapped[dict[str, Any]] = mapped_column(default=dict)
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    filename: Mapped[str | None] = mapped_column(String(255), default=None)
    stored_at: Mapped[datetime | None] = mapped_column(default=None)


class RefreshToken(Base):
    """A long-lived refresh token bound to one device; rotated on use, revocable."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginFailure(Base):
    """A failed login, for throttling (kept in the database so every process sees it)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_at", "username", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))


class AuditLog(Base):
    """Append-only record of every action; triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32), index=True)
    entity_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
    # The area it happened in (server/audit.py), so a dispatcher reads their area's audit. No
    # FOREIGN KEY: adding one would make SQLite rebuild this trigger-guarded table.
    area_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)


class EmergencyPlan(Record):
    """A versioned emergency plan (预案): (incident type, minimum level) -> task templates.

    `min_level` is the least severe level the plan covers: a level-II plan (2) runs for I and II.
    Editing a plan adds a row with `version + 1` and deactivates the old one, so a plan run keeps
    pointing at the exact version that dispatched it.
    """

    __tablename__ = "emergency_plans"
    __table_args__ = (UniqueConstraint("code", "version"),)

    code: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    incident_type: Mapped[str] = mapped_column(String(32), index=True)
    min_level: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    templates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class PlanRun(Base):
    """One dispatched slot of a plan template for an incident; the unique key makes re-runs no-ops.

    `tried_unit_ids` lists every unit this slot went to, so a decline moves on to the next nearest.
    """

    __tablename__ = "plan_runs"
    __table_args__ = (UniqueConstraint("incident_id", "plan_code", "template_key", "slot"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("emergency_plans.id"))
    plan_code: Mapped[str] = mapped_column(String(64))
    template_key: Mapped[str] = mapped_column(String(64))
    slot: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    tried_unit_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PushJobRow(Base):
    """A transactional-outbox job: one message for one device, written with the change it reports.

    See `server.outbox.SqlOutboxStore` and push/outbox.py for the lease and dedup rules.
    """

    __tablename__ = "push_jobs"
    __table_args__ = (
        UniqueConstraint("event_id", "device_id"),
        # Claims read the due jobs in (not_before, created_at) order: a warning's fan-out
        # enqueues 100,000 jobs with one not_before, which without created_at in the index
        # would be sorted in full for every claim.
        Index("ix_push_jobs_due", "state", "not_before", "created_at"),
        # A dead address (404/410) kills the jobs still queued to it (`prune_address`): found
        # by address among the pending jobs, not by a scan of a fan-out's 100,000. A hash
        # index on PostgreSQL, as a B-tree entry is limited to 2,704 bytes and a registered
        # token may have 4,096 (one such token would fail a whole fan-out's enqueue).
        Index(
            "ix_push_jobs_pending_address",
            "address",
            postgresql_using="hash",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    event_id: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(default=None)
    lease_token: Mapped[str | None] = mapped_column(String(64), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class PushDelivery(Base):
    """Proof that (event, device) was accepted by the push service: the at-most-once record."""

    __tablename__ = "push_deliveries"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column()
    at: Mapped[datetime] = mapped_column()
    provider_id: Mapped[str | None] = mapped_column(String(200))


class ResponderPosition(Base):
    """A responder's last known position (one row per user, overwritten by newer fixes)."""

    __tablename__ = "responder_positions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    location = point_col()
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column()
    device_id: Mapped[str | None] = mapped_column(String(128))
    task_id: Mapped[uuid.UUID | None] = mapped_column()


# --- Delta sync (issue 3): the change log beside the domain tables (server/domain/sync). ---


class SyncRecord(Base):
    """A synced record's merge state (per-field value, HLC, device, version) as msgpack.

    The domain tables stay the truth for REST; this is what the merge reads and devices pull.
    """

    __tablename__ = "sync_records"

    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    changed_ms: Mapped[int] = mapped_column(BigInteger)


class SyncMember(Base):
    """(scope, record): `seq` is its place in the scope's feed (its version, or the seq at which
    it left); `left_ms` is set while it is an eviction marker."""

    __tablename__ = "sync_members"
    __table_args__ = (Index("ix_sync_members_scope_seq", "scope", "seq"),)

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    since: Mapped[int] = mapped_column(BigInteger)
    left_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)


class SyncMutation(Base):
    """The stored outcome (an msgpack `Ack`) of one device mutation: exactly-once pushes."""

    __tablename__ = "sync_mutations"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ack: Mapped[bytes] = mapped_column(LargeBinary)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    # What the mutation said (`sync.server.fingerprint`): the same (device, seq) with other
    # content is a reinstalled device reusing its numbers, refused instead of answered `dup`.
    # NULL for outcomes stored before migration 0006 (no check for those).
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary(16), default=None)


class SyncConflict(Base):
    """A value that lost a merge (the `schemas.sync.Conflict` as JSON), for dispatch to resolve."""

    __tablename__ = "sync_conflicts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    entity: Mapped[str] = mapped_column(String(32), index=True)
    record_id: Mapped[uuid.UUID] = mapped_column(index=True)
    field: Mapped[str] = mapped_column(String(64))
    resolved: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    data: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class SyncChecksum(Base):
    """XOR of record hashes of a scope's live members (see sync/checksum.py)."""

    __tablename__ = "sync_checksums"

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    checksum: Mapped[int] = mapped_column(BigInteger, default=0)


class SyncCounter(Base):
    """The one row (id 1) holding the last seq and the tombstone horizon; writers lock it to
    commit in seq order."""

    __tablename__ = "sync_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    horizon: Mapped[int] = mapped_column(BigInteger, default=0)


class SyncCommit(Base):
    """Last seq of each committed sync write and its time, to turn an age into a horizon seq."""

    __tablename__ = "sync_commits"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


# --- Residents' warning subscriptions (issue 15): no account, a secret instead. ---


class ResidentSubscription(Base):
    """A resident's subscription to warnings: one push address, a language, up to five places.

    `address` is a Web Push / UnifiedPush subscription JSON, an FCM token or an E.164 phone
    number; `address_hash` (SHA-256) keeps one subscription per address, plus at most one
    re-registration of a confirmed SMS number waiting for its code (`pending_hash`), which
    replaces it when confirmed. Only the SHA-256 of
    the secret handed out at registration is kept (`secret_hash`); moving, renewing and
    deleting need the secret. SMS subscriptions stay unconfirmed (and receive nothing) until
    the code sent to the number comes back. `renewed_at` older than 90 days: lapsed, deleted.
    """

    __tablename__ = "resident_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(Text)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The push service's origin (Web Push), for the per-service report; None otherwise.
    service: Mapped[str | None] = mapped_column(String(200), default=None)
    lang: Mapped[str] = mapped_column(String(8), default="zh_CN")
    secret_hash: Mapped[str] = mapped_column(String(64))
    confirmed: Mapped[bool] = mapped_column(Boolean, default=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    code_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ResidentPlace(Base):
    """One place of a subscription: a point rounded to ~100 m, or a named area (village)."""

    __tablename__ = "resident_places"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("resident_subscriptions.id", ondelete="CASCADE"), index=True
    )
    location = point_col(nullable=True)
    area_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("admin_areas.id"), index=True, default=None
    )


class RateHit(Base):
    """One counted request of a rate-limited public action (per client address and window)."""

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_bucket_client_at", "bucket", "client", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(32))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column()
