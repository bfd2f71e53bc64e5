"""Hazard reports: creation with grid derived from the point, corrections, deletion."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import hazards as s
from schemas.common import Role
from schemas.states import HazardStatus
from server import audit, geo
from server.auth.principal import Principal
from server.domain.reference.services import locate_area, locate_grid
from server.errors import Conflict, Forbidden, InvalidInput
from server.models import Enterprise, Hazard, HazardEvent, utcnow


def hazard_out(row: Hazard, distance_m: float | None = None) -> s.Hazard:
    """Wire form of a hazard."""
    loc = geo.point_required(row.location)
    return s.Hazard(
        id=row.id,
        category=s.HazardCategory(row.category),
        severity=s.Severity(row.severity),
        description=row.description,
        location=loc,
        accuracy_m=row.accuracy_m,
        status=HazardStatus(row.status),
        reporter_id=row.reporter_id,
        grid_id=row.grid_id,
        area_id=row.area_id,
        enterprise_id=row.enterprise_id,
        photo_ids=[uuid.UUID(str(x)) for x in row.photo_ids or []],
        rectify_org_id=row.rectify_org_id,
        rectify_deadline=row.rectify_deadline,
        created_at=row.created_at,
        updated_at=row.updated_at,
        distance_m=distance_m,
    )


async def create_hazard(session: AsyncSession, p: Principal, data: s.HazardCreate) -> Hazard:
    """Report a hazard. Enterprise staff report for their own enterprise. Retries are no-ops."""
    if data.id is not None:
        existing = await session.get(Hazard, data.id)
        if existing is not None:
            if existing.reporter_id != p.user_id:
                raise Conflict("a hazard with this id already exists", field="id")
            return existing
    enterprise_id = data.enterprise_id
    if p.role is Role.ENTERPRISE_STAFF:
        mine = (
            await session.execute(select(Enterprise.id).where(Enterprise.org_id == p.org_id))
        ).scalar_one_or_none()
        if mine is None:
            raise Forbidden("your account is not linked to an enterprise")
        if enterprise_id not in (None, mine):
            raise Forbidden("enterprise staff report for their own enterprise only")
        enterprise_id = mine
    elif enterprise_id is not None and await session.get(Enterprise, enterprise_id) is None:
        raise InvalidInput("no such enterprise", field="enterprise_id")
    lon, lat = data.location.coordinates
    row = Hazard(
        category=data.category.value,
        severity=data.severity.value,
        description=data.description,
        location=geo.point_to_db(data.location),
        accuracy_m=data.accuracy_m,
        status=HazardStatus.REPORTED.value,
        reporter_id=p.user_id,
        grid_id=await locate_grid(session, lon, lat),
        area_id=await locate_area(session, lon, lat),
        enterprise_id=enterprise_id,
        photo_ids=[str(x) for x in data.photo_ids],
    )
    if data.id is not None:
        row.id = data.id
    session.add(row)
    await session.flush()
    session.add(
        HazardEvent(hazard_id=row.id, from_status=None, to_status="reported", actor_id=p.user_id)
    )
    audit.record(session, p, "report", "hazard", row.id, category=row.category)
    return row


async def patch_hazard(
    session: AsyncSession, p: Principal, row: Hazard, data: s.HazardPatch
) -> Hazard:
    """Correct details: the reporter while still `reported`, or dispatch at any time."""
    is_dispatch = p.has(Role.ADMIN, Role.DISPATCHER)
    if not is_dispatch and not (row.reporter_id == p.user_id and row.status == "reported"):
        raise Forbidden("only the reporter (before verification) or dispatch corrects a hazard")
    changed: dict[str, Any] = {}
    for name in ("category", "severity", "description"):
        value = getattr(data, name)
        if value is not msgspec.UNSET:
            setattr(row, name, value.value if hasattr(value, "value") else value)
            changed[name] = value
    await session.flush()
    audit.record(session, p, "update", "hazard", row.id, **changed)
    return row


async def delete_hazard(session: AsyncSession, p: Principal, row: Hazard) -> None:
    """Withdraw a report (reporter before verification, or dispatch)."""
    if not p.has(Role.ADMIN, Role.DISPATCHER) and not (
        row.reporter_id == p.user_id and row.status == "reported"
    ):
        raise Forbidden("only the reporter (before verification) or dispatch deletes a hazard")
    row.deleted_at = utcnow()
    await session.flush()
    audit.record(session, p, "delete", "hazard", row.id)
