"""Domain rows <-> synced field values, per entity (one table each, declared once here).

`fields_of(row)` is what a recorded write of `row` turns into (the change log's commit hook).
Field names are REST's (`schemas/`): one definition per entity (docs/sync-protocol.md has the
catalogue). Values are the wire forms of the protocol: UUIDs and RFC 3339 UTC times as strings,
GeoJSON points and polygons. Devices never write domain rows through this module: their writes
go through the domain actions (`policy.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import object_session

from server import geo
from server.models import (
    Alert,
    AlertChain,
    CheckDue,
    CheckItem,
    CheckSubmission,
    CheckTemplate,
    Contact,
    EmergencyPlan,
    Enterprise,
    Grid,
    Hazard,
    HazardEvent,
    HazardMedia,
    Incident,
    MediaObject,
    Record,
    Resource,
    Task,
    TaskEvent,
)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sid(value: uuid.UUID | None) -> str | None:
    """A UUID as its canonical string."""
    return str(value) if value is not None else None


def point(value: Any) -> dict[str, Any] | None:
    """A database point as a GeoJSON dict."""
    p = geo.point_from_db(value)
    if p is None:
        return None
    return {"type": "Point", "coordinates": [p.coordinates[0], p.coordinates[1]]}


def area(value: Any) -> dict[str, Any] | None:
    """A database polygon or multipolygon as a GeoJSON dict."""
    a = geo.area_from_db(value)
    return msgspec.to_builtins(a) if a is not None else None


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def task_event_item(ev: TaskEvent) -> dict[str, Any]:
    """A task timeline entry as an append-only item."""
    return _drop_none(
        {
            "id": str(ev.id),
            "from": ev.from_status,
            "to": ev.to_status,
            "at": iso(ev.at),
            "actor": sid(ev.actor_id),
            "device": ev.device_id,
            "location": point(ev.location),
            "accuracy_m": ev.accuracy_m,
            "note": ev.note,
            "photo_ids": list(getattr(ev, "photo_ids", None) or []) or None,
        }
    )


def hazard_event_item(ev: HazardEvent) -> dict[str, Any]:
    """A hazard timeline entry as an append-only item."""
    return _drop_none(
        {
            "id": str(ev.id),
            "from": ev.from_status,
            "to": ev.to_status,
            "at": iso(ev.at),
            "actor": sid(ev.actor_id),
            "note": ev.note,
            "kind": ev.kind,
            "photo_ids": list((ev.detail or {}).get("photo_ids") or []) or None,
        }
    )


def _task(row: Task) -> dict[str, Any]:
    return {
        "incident_id": sid(row.incident_id),
        "title": row.title,
        "description": row.description,
        "location": point(row.location),
        "priority": row.priority,
        "deadline": iso(row.deadline),
        "assignee_user_id": sid(row.assignee_user_id),
        "assignee_unit_id": sid(row.assignee_unit_id),
        "status": row.status,
        "area_id": sid(row.area_id),
        "plan_id": sid(row.plan_id),
        "dispatched_at": iso(row.dispatched_at),
        "accept_by": iso(row.accept_by),
        "created_at": iso(row.created_at),
    }


def _incident(row: Incident) -> dict[str, Any]:
    return {
        "type": row.type,
        "level": row.level,
        "title": row.title,
        "description": row.description,
        "location": point(row.location),
        "area_id": sid(row.area_id),
        "status": row.status,
        "source": row.source,
        "created_at": iso(row.created_at),
    }


def _hazard(row: Hazard) -> dict[str, Any]:
    return {
        "category": row.category,
        "severity": row.severity,
        "description": row.description,
        "location": point(row.location),
        "accuracy_m": row.accuracy_m,
        "reported_at": iso(row.reported_at),
        "status": row.status,
        "status_reason": row.status_reason,
        "reporter_id": sid(row.reporter_id),
        "grid_id": sid(row.grid_id),
        "area_id": sid(row.area_id),
        "enterprise_id": sid(row.enterprise_id),
        "rectify_org_id": sid(row.rectify_org_id),
        "rectify_enterprise_id": sid(row.rectify_enterprise_id),
        "rectify_deadline": iso(row.rectify_deadline),
        "overdue": bool(row.overdue),
        "photo_ids": [str(p) for p in row.photo_ids or []],
        "source": row.source,
        "check_submission_id": sid(row.check_submission_id),
        "check_item_id": sid(row.check_item_id),
        "created_at": iso(row.created_at),
    }


def _grid(row: Grid) -> dict[str, Any]:
    return {
        "name": row.name,
        "code": row.code,
        "area": area(row.boundary),
        "inspector_ids": [str(row.inspector_id)] if row.inspector_id else [],
    }


def plan_unit_kinds(templates: Iterable[Any]) -> list[str]:
    """The unit kinds a plan's templates dispatch to, sorted, once each."""
    kinds = {t.get("unit_kind") for t in templates if isinstance(t, dict)}
    return sorted(str(k) for k in kinds if k)


def _resource(row: Resource) -> dict[str, Any]:
    """A resource's synced values (wire forms)."""
    return {
        "kind": row.kind,
        "name": row.name,
        "location": point(row.location),
        "address": row.address,
        "capacity": row.capacity,
        "contact": row.contact_name,
        "phone": row.phone,
        "area_id": sid(row.area_id),
    }


def _contact(row: Contact) -> dict[str, Any]:
    """A contact's synced values (wire forms)."""
    return {
        "kind": row.kind,
        "name": row.name,
        "name_en": row.name_en,
        "phone": row.phone,
        "org_id": sid(row.org_id),
        "user_id": sid(row.user_id),
        "role_title": row.role_title,
        "area_ids": [str(a) for a in row.area_ids or []],
        "duty": bool(row.duty),
        "notes": row.notes,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def _plan(row: EmergencyPlan) -> dict[str, Any]:
    """A plan version's synced values (wire forms)."""
    templates = [dict(t) for t in row.templates or []]
    return {
        "code": row.code,
        "version": row.version,
        "name": row.name,
        "description": row.description,
        "incident_type": row.incident_type,
        "min_level": row.min_level,
        "active": bool(row.active),
        "templates": templates,
        "unit_kinds": plan_unit_kinds(templates),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


_COLOR_LEVEL = {"blue": "IV", "yellow": "III", "orange": "II", "red": "I"}


def alert_values(msg: Alert) -> dict[str, Any]:
    """A warning's synced values: those of its chain's current message (docs/sync-protocol.md,
    entity `alert`). `texts` maps each language (zh-CN always, en-US when given) to its texts."""
    return {
        "message_id": sid(msg.id),
        "identifier": msg.identifier,
        "sender": msg.sender,
        "sent": iso(msg.sent),
        "status": msg.status,
        "msg_type": msg.msg_type,
        "references": [dict(r) for r in msg.references or []],
        "color": msg.color,
        "level": _COLOR_LEVEL.get(msg.color or ""),
        "category": list(msg.category or []),
        "response_type": list(msg.response_type or []),
        "urgency": msg.urgency,
        "severity": msg.severity,
        "certainty": msg.certainty,
        "effective": iso(msg.effective),
        "onset": iso(msg.onset),
        "expires": iso(msg.expires),
        "web": msg.web,
        "contact": msg.contact,
        "texts": {
            t["language"]: {k: v for k, v in t.items() if k != "language" and v is not None}
            for t in msg.texts or []
        },
        "area": area(msg.area),
        "circles": [dict(c) for c in msg.circles or []],
        "geocodes": [dict(g) for g in msg.geocodes or []],
        "area_ids": list(msg.area_ids or []),
        "imported": bool(msg.imported),
        "cap_url": f"/api/v1/public/cap/{msg.id}",
    }


def _alert(row: AlertChain) -> dict[str, Any]:
    session = object_session(row)
    msg = session.get(Alert, row.current_id) if session is not None else None
    return alert_values(msg) if msg is not None else {}


def _check_template(row: CheckTemplate) -> dict[str, Any]:
    session = object_session(row)
    items: Iterable[CheckItem] = []
    if session is not None:
        stmt = select(CheckItem).where(CheckItem.template_id == row.id)
        items = session.execute(stmt.order_by(CheckItem.position)).scalars()
    return {
        "code": row.code,
        "name": row.name,
        "version": row.version,
        "active": row.active,
        "items": [
            {"id": str(i.id), "position": i.position, "text": i.text, "category": i.category}
            for i in items
        ],
    }


def _check_submission(row: CheckSubmission) -> dict[str, Any]:
    session = object_session(row)
    ent = session.get(Enterprise, row.enterprise_id) if session is not None else None
    return {
        "enterprise_id": sid(row.enterprise_id),
        "template_id": sid(row.template_id),
        "week": row.week,
        "results": list(row.results or []),
        "submitted_by": sid(row.submitted_by),
        "submitted_at": iso(row.submitted_at),
        "grid_id": sid(ent.grid_id) if ent is not None else None,
        "area_id": sid(ent.area_id) if ent is not None else None,
    }


def _check_due(row: CheckDue) -> dict[str, Any]:
    return {
        "enterprise_id": sid(row.enterprise_id),
        "template_id": sid(row.template_id),
        "template_code": row.template_code,
        "week": row.week,
        "due_at": iso(row.due_at),
        "status": row.status,
        "submission_id": sid(row.submission_id),
        "submitted_at": iso(row.submitted_at),
        "reminded_at": iso(row.reminded_at),
        "missed_at": iso(row.missed_at),
        "grid_id": sid(row.grid_id),
        "area_id": sid(row.area_id),
    }


HAZARD_SCOPE_KEYS = (
    ("grid", "grid_id"),
    ("enterprise", "enterprise_id"),
    ("reporter", "reporter_id"),
    ("harea", "area_id"),
    # Whoever must rectify it holds it, as REST shows it to them (scope._assigned_to_my_org):
    # the assigned enterprise's staff, and the members of the assigned organisation.
    ("enterprise", "rectify_enterprise_id"),
    ("org", "rectify_org_id"),
)


def hazard_scopes(values: dict[str, Any]) -> list[str]:
    """The scopes of a hazard with these synced values (grid, enterprise, reporter, area, and
    the enterprise and organisation assigned to rectify it)."""
    found = (f"{prefix}:{values[name]}" for prefix, name in HAZARD_SCOPE_KEYS if values.get(name))
    return list(dict.fromkeys(found))


def _media(row: MediaObject) -> dict[str, Any]:
    session = object_session(row)
    shared: set[str] = set()
    if session is not None:
        stmt = (
            select(Hazard)
            .join(HazardMedia, HazardMedia.hazard_id == Hazard.id)
            .where(HazardMedia.media_id == row.id)
        )
        for hazard in session.execute(stmt).scalars():
            shared.update(hazard_scopes(_hazard(hazard)))
    return {
        "sha256": row.sha256,
        "content_type": row.content_type,
        "size": row.size,
        "width": row.width,
        "height": row.height,
        "status": row.status,
        "uploaded_by": sid(row.uploaded_by),
        "shared_with": sorted(shared),
        "created_at": iso(row.created_at),
    }


@dataclass(frozen=True, slots=True)
class Mapped:
    """How one synced entity lives in the domain tables."""

    entity: str
    model: type[Record]
    fields: Callable[[Any], dict[str, Any]]


MAPPED: tuple[Mapped, ...] = (
    Mapped("task", Task, _task),
    Mapped("incident", Incident, _incident),
    Mapped("hazard", Hazard, _hazard),
    Mapped("grid", Grid, _grid),
    Mapped("resource", Resource, _resource),
    Mapped("contact", Contact, _contact),
    Mapped("plan", EmergencyPlan, _plan),
    Mapped("alert", AlertChain, _alert),
    Mapped("check_template", CheckTemplate, _check_template),
    Mapped("check_submission", CheckSubmission, _check_submission),
    Mapped("check_due", CheckDue, _check_due),
    Mapped("media", MediaObject, _media),
)
BY_MODEL: dict[type[Any], Mapped] = {m.model: m for m in MAPPED}
BY_ENTITY: dict[str, Mapped] = {m.entity: m for m in MAPPED}


def fields_of(row: Record) -> dict[str, Any]:
    """The synced values of a domain row."""
    return BY_MODEL[type(row)].fields(row)
