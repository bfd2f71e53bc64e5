"""Emergency plans: versioned CRUD and running them against an incident.

Running is idempotent: each (incident, plan code, template key, slot) is claimed in `plan_runs`
with INSERT ... ON CONFLICT DO NOTHING before its task is created, so a re-run, a level raised
twice or two concurrent requests never dispatch the same slot twice. A new plan version keeps its
code, so editing a plan does not re-dispatch what the previous version already sent.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas import plans as s
from schemas.dispatch import IncidentType
from schemas.states import TaskStatus
from server import audit, changes, geo
from server.auth.principal import Principal
from server.crud import retire_versions
from server.domain.dispatch.assign import (
    DispatchPolicy,
    announce_assignment,
    nearest_units,
    notify_dispatchers,
)
from server.errors import Conflict, NotFound
from server.models import EmergencyPlan, Incident, PlanRun, Task, utcnow
from server.outbox import dialect_insert


def templates_of(row: EmergencyPlan) -> list[s.TaskTemplate]:
    """The plan's task templates as Structs."""
    return msgspec.convert(row.templates, list[s.TaskTemplate])


def plan_out(row: EmergencyPlan) -> s.Plan:
    """Wire form of a plan version."""
    return s.Plan(
        id=row.id,
        code=row.code,
        version=row.version,
        name=row.name,
        description=row.description,
        incident_type=IncidentType(row.incident_type),
        min_level=row.min_level,
        active=row.active,
        templates=templates_of(row),
        created_by=row.created_by,
        created_at=row.created_at,
    )


def run_out(row: PlanRun) -> s.PlanRun:
    """Wire form of a plan run slot."""
    return s.PlanRun(
        id=row.id,
        incident_id=row.incident_id,
        plan_id=row.plan_id,
        plan_code=row.plan_code,
        template_key=row.template_key,
        slot=row.slot,
        task_id=row.task_id,
        tried_unit_ids=[uuid.UUID(u) for u in row.tried_unit_ids],
        created_at=row.created_at,
    )


def _check_keys(templates: list[s.TaskTemplate]) -> None:
    keys = [t.key for t in templates]
    if len(keys) != len(set(keys)):
        raise Conflict(N_("template keys must be unique within a plan"), field="templates")


async def create_plan(session: AsyncSession, p: Principal, data: s.PlanCreate) -> EmergencyPlan:
    """Version 1 of a new plan code."""
    _check_keys(data.templates)
    taken = await session.execute(select(EmergencyPlan.id).where(EmergencyPlan.code == data.code))
    if taken.first() is not None:
        raise Conflict(
            N_("a plan with this code exists; update it for a new version"), field="code"
        )
    row = EmergencyPlan(
        code=data.code,
        version=1,
        name=data.name,
        description=data.description,
        incident_type=data.incident_type.value,
        min_level=data.min_level,
        active=True,
        templates=msgspec.to_builtins(data.templates),
        created_by=p.user_id,
    )
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "create", "plan", row.id, code=row.code, version=1)
    return row


async def get_plan(session: AsyncSession, plan_id: uuid.UUID) -> EmergencyPlan:
    """A plan version by id (deleted ones are gone)."""
    row = await session.get(EmergencyPlan, plan_id)
    if row is None or row.deleted_at is not None:
        raise NotFound(N_("no plan {id}"), id=plan_id)
    return row


async def list_plans(session: AsyncSession, *, include_inactive: bool) -> list[EmergencyPlan]:
    """Plans by code; only the active versions unless asked for every version."""
    stmt = select(EmergencyPlan).where(EmergencyPlan.deleted_at.is_(None))
    if not include_inactive:
        stmt = stmt.where(EmergencyPlan.active.is_(True))
    rows = await session.execute(stmt.order_by(EmergencyPlan.code, EmergencyPlan.version))
    return list(rows.scalars())


async def update_plan(
    session: AsyncSession, p: Principal, row: EmergencyPlan, data: s.PlanUpdate
) -> EmergencyPlan:
    """Write the next version of the plan (the old version stays, inactive)."""
    latest = (
        await session.execute(
            select(EmergencyPlan)
            .where(EmergencyPlan.code == row.code)
            .order_by(EmergencyPlan.version.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one()
    if latest.id != row.id:
        raise Conflict(
            N_("version {version} is newer; update that one"), version=latest.version, field="id"
        )

    def pick(name: str, current: Any) -> Any:
        value = getattr(data, name)
        return current if value is msgspec.UNSET else value

    templates = pick("templates", None)
    if templates is not None:
        _check_keys(templates)
    new = EmergencyPlan(
        code=row.code,
        version=row.version + 1,
        name=pick("name", row.name),
        description=pick("description", row.description),
        incident_type=str(pick("incident_type", row.incident_type)),
        min_level=pick("min_level", row.min_level),
        active=pick("active", True),
        templates=msgspec.to_builtins(templates) if templates is not None else row.templates,
        created_by=p.user_id,
    )
    row.active = False
    session.add(new)
    await session.flush()
    changes.record(session, row, new)
    audit.record(session, p, "update", "plan", new.id, code=new.code, version=new.version)
    return new


async def delete_plan(session: AsyncSession, p: Principal, row: EmergencyPlan) -> None:
    """Retire every version of the plan's code (runs keep their references)."""
    now = utcnow()
    rows = await session.execute(select(EmergencyPlan).where(EmergencyPlan.code == row.code))
    for version in rows.scalars():
        version.active = False
        version.deleted_at = version.deleted_at or now
        changes.record(session, version)
    await session.flush()
    audit.record(session, p, "delete", "plan", row.id, code=row.code)


async def retire_plan(session: AsyncSession, p: Principal, row: EmergencyPlan) -> None:
    """Retire the plan: every version inactive (kept and readable; an update makes a new active
    version again); 409 when no version is active."""
    await retire_versions(session, EmergencyPlan, row.code)
    audit.record(session, p, "retire", "plan", row.id, code=row.code)


async def matching_plans(session: AsyncSession, incident: Incident) -> list[EmergencyPlan]:
    """Active plans for the incident's type whose minimum level covers its level."""
    rows = await session.execute(
        select(EmergencyPlan)
        .where(
            EmergencyPlan.active.is_(True),
            EmergencyPlan.deleted_at.is_(None),
            EmergencyPlan.incident_type == incident.type,
            EmergencyPlan.min_level >= incident.level,
        )
        .order_by(EmergencyPlan.code)
    )
    return list(rows.scalars())


async def _units_in_use(
    session: AsyncSession, incident_id: uuid.UUID, plan_code: str, template_key: str
) -> set[uuid.UUID]:
    rows = await session.execute(
        select(PlanRun.tried_unit_ids).where(
            PlanRun.incident_id == incident_id,
            PlanRun.plan_code == plan_code,
            PlanRun.template_key == template_key,
        )
    )
    return {uuid.UUID(u) for tried in rows.scalars() for u in tried}


async def _claim_slot(
    session: AsyncSession, incident: Incident, plan: EmergencyPlan, key: str, slot: int
) -> PlanRun | None:
    stmt = (
        dialect_insert(session, PlanRun.__table__)
        .values(
            id=uuid.uuid4(),
            incident_id=incident.id,
            plan_id=plan.id,
            plan_code=plan.code,
            template_key=key,
            slot=slot,
            tried_unit_ids=[],
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["incident_id", "plan_code", "template_key", "slot"])
        .returning(PlanRun.__table__.c.id)
    )
    run_id = (await session.execute(stmt)).scalar_one_or_none()
    if run_id is None:
        return None
    return await session.get(PlanRun, run_id)


async def run_plans(
    session: AsyncSession, p: Principal | None, incident: Incident, policy: DispatchPolicy
) -> list[Task]:
    """Dispatch every slot of every matching plan that has not been dispatched yet.

    In the caller's transaction: the tasks, their timeline entries, the plan runs and the push
    jobs commit together. Each slot goes to the nearest available unit of the template's kind
    that no other slot of the same template already holds. A slot with no unit left is recorded
    without a task, and the dispatchers are told (audit `plan_unfilled`).
    """
    actor = p.user_id if p else None
    loc = geo.point_required(incident.location)
    lon, lat = loc.coordinates
    created: list[Task] = []
    now = utcnow()
    for plan in await matching_plans(session, incident):
        dispatched: list[str] = []
        for template in templates_of(plan):
            for slot in range(template.required_count):
                run = await _claim_slot(session, incident, plan, template.key, slot)
                if run is None:
                    continue  # already dispatched by an earlier run
                busy = await _units_in_use(session, incident.id, plan.code, template.key)
                choices = await nearest_units(
                    session, template.unit_kind, lon, lat, exclude=busy, limit=1
                )
                if not choices:
                    audit.record(
                        session,
                        p,
                        "plan_unfilled",
                        "incident",
                        incident.id,
                        plan=plan.code,
                        template=template.key,
                        slot=slot,
                    )
                    continue
                unit = choices[0].unit
                task = Task(
                    incident_id=incident.id,
                    title=template.title,
                    description=template.instructions,
                    location=incident.location,
                    priority=template.priority.value,
                    deadline=(
                        now + timedelta(seconds=template.deadline_offset_s)
                        if template.deadline_offset_s is not None
                        else None
                    ),
                    assignee_unit_id=unit.id,
                    status=TaskStatus.ASSIGNED.value,
                    area_id=incident.area_id,
                    created_by=actor,
                    plan_id=plan.id,
                    template_key=template.key,
                )
                session.add(task)
                await session.flush()
                run.task_id = task.id
                run.tried_unit_ids = [str(unit.id)]
                await announce_assignment(
                    session,
                    task,
                    actor_id=actor,
                    policy=policy,
                    accept_window_s=template.accept_window_s,
                    note=f"plan {plan.code} v{plan.version}: nearest {template.unit_kind} "
                    f"({choices[0].distance_m:.0f} m)",
                    now=now,
                )
                created.append(task)
                dispatched.append(str(task.id))
        if dispatched:
            audit.record(
                session,
                p,
                "run_plan",
                "incident",
                incident.id,
                plan=plan.code,
                version=plan.version,
                tasks=dispatched,
            )
    return created


async def plan_runs_of(session: AsyncSession, incident_id: uuid.UUID) -> list[PlanRun]:
    """Every slot dispatched for the incident."""
    rows = await session.execute(
        select(PlanRun)
        .where(PlanRun.incident_id == incident_id)
        .order_by(PlanRun.plan_code, PlanRun.template_key, PlanRun.slot)
    )
    return list(rows.scalars())


async def pass_on_declined(
    session: AsyncSession, p: Principal, task: Task, policy: DispatchPolicy
) -> bool:
    """After a decline, send a plan task to the next nearest unit when its template says so.

    Returns True when the task was reassigned. With no unit left, the dispatchers are notified.
    """
    if task.plan_id is None or task.template_key is None or task.incident_id is None:
        return False
    plan = await session.get(EmergencyPlan, task.plan_id)
    run = (
        await session.execute(select(PlanRun).where(PlanRun.task_id == task.id))
    ).scalar_one_or_none()
    incident = await session.get(Incident, task.incident_id)
    if plan is None or run is None or incident is None:
        return False
    template = next((t for t in templates_of(plan) if t.key == task.template_key), None)
    if template is None or not template.reassign_on_decline:
        return False
    lon, lat = geo.point_required(incident.location).coordinates
    busy = await _units_in_use(session, incident.id, run.plan_code, run.template_key)
    choices = await nearest_units(session, template.unit_kind, lon, lat, exclude=busy, limit=1)
    if not choices:
        await notify_dispatchers(session, task, "task.declined", f"task.declined:{task.id}")
        audit.record(session, p, "decline_unfilled", "task", task.id, template=template.key)
        return False
    unit = choices[0].unit
    task.assignee_unit_id = unit.id
    task.assignee_user_id = None
    run.tried_unit_ids = [*run.tried_unit_ids, str(unit.id)]
    await announce_assignment(
        session,
        task,
        actor_id=None,
        policy=policy,
        accept_window_s=template.accept_window_s,
        note=f"declined; passed to next nearest {template.unit_kind} "
        f"({choices[0].distance_m:.0f} m)",
    )
    audit.record(session, None, "reassign", "task", task.id, unit=unit.id, reason="declined")
    return True
