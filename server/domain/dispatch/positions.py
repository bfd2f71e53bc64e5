"""Where units and responders are: last known positions and current tasks, for dispatch."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import dispatch as s
from schemas.common import Role
from server import geo
from server.auth.principal import Principal
from server.domain.dispatch.assign import OPEN_STATUSES
from server.models import Organisation, ResponderPosition, Task, User
from server.scope import home_area_subtree


async def unit_positions(session: AsyncSession, p: Principal) -> list[s.UnitPosition]:
    """Linked units (a dispatcher: those based in their area) with their responders' last
    positions and open tasks. A responder's current task is the one named by their last fix
    while it is open, else their newest open task, else their unit's."""
    units_q = select(Organisation).where(
        Organisation.kind == "linked_unit", Organisation.deleted_at.is_(None)
    )
    if p.role is not Role.ADMIN:
        units_q = units_q.where(Organisation.area_id.in_(home_area_subtree(p)))
    units = list((await session.execute(units_q.order_by(Organisation.name))).scalars())
    unit_ids = [u.id for u in units]
    if not unit_ids:
        return []
    people = (
        await session.execute(
            select(User, ResponderPosition)
            .outerjoin(ResponderPosition, ResponderPosition.user_id == User.id)
            .where(
                User.org_id.in_(unit_ids),
                User.role == Role.RESPONDER.value,
                User.disabled.is_(False),
                User.deleted_at.is_(None),
            )
            .order_by(User.username)
        )
    ).all()
    user_ids = [u.id for u, _ in people]
    open_tasks = (
        await session.execute(
            select(Task.id, Task.assignee_unit_id, Task.assignee_user_id)
            .where(
                Task.deleted_at.is_(None),
                Task.status.in_(OPEN_STATUSES),
                or_(Task.assignee_unit_id.in_(unit_ids), Task.assignee_user_id.in_(user_ids)),
            )
            .order_by(Task.dispatched_at.desc(), Task.id)
        )
    ).all()
    by_unit: dict[uuid.UUID, list[uuid.UUID]] = {}
    by_user: dict[uuid.UUID, list[uuid.UUID]] = {}
    open_ids = set()
    for tid, unit_id, user_id in open_tasks:
        open_ids.add(tid)
        if unit_id is not None:
            by_unit.setdefault(unit_id, []).append(tid)
        if user_id is not None:
            by_user.setdefault(user_id, []).append(tid)
    responders: dict[uuid.UUID, list[s.ResponderPosition]] = {}
    for user, pos in people:
        current: uuid.UUID | None = None
        if pos is not None and pos.task_id in open_ids:
            current = pos.task_id
        else:
            mine = by_user.get(user.id) or by_unit.get(user.org_id or uuid.UUID(int=0)) or []
            current = mine[0] if mine else None
        responders.setdefault(user.org_id or uuid.UUID(int=0), []).append(
            s.ResponderPosition(
                user_id=user.id,
                display_name=user.display_name,
                location=geo.point_from_db(pos.location) if pos else None,
                accuracy_m=pos.accuracy_m if pos else None,
                at=pos.at if pos else None,
                current_task_id=current,
            )
        )
    return [
        s.UnitPosition(
            unit_id=u.id,
            name=u.name,
            unit_kind=u.unit_kind,
            location=geo.point_from_db(u.location),
            open_task_ids=by_unit.get(u.id, []),
            responders=responders.get(u.id, []),
        )
        for u in units
    ]
