"""Incidents and tasks: every write goes through here (one door), with its audit entry."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas import dispatch as s
from schemas.common import Priority, Role
from schemas.states import (
    INCIDENT_TRANSITIONS,
    TASK_STEP_ORDER,
    TASK_TRANSITIONS,
    IncidentStatus,
    TaskStatus,
    can_transition,
)
from server import audit, changes, geo
from server.auth.principal import Principal
from server.crud import (
    apply_patch,
    get_visible,
    live_visible,
    noun,
    refuse_taken_id,
    step_rank,
)
from server.db import dialect_of
from server.domain.dispatch import plans
from server.domain.dispatch.assign import (
    DEFAULT_POLICY,
    DispatchPolicy,
    announce_assignment,
    notify_assignees,
)
from server.domain.reference.services import ensure_in_my_area, locate_area, relocate
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.models import (
    Hazard,
    Incident,
    MediaObject,
    Organisation,
    ResponderPosition,
    Task,
    TaskEvent,
    User,
    utcnow,
)
from server.outbox import dialect_insert


def incident_out(row: Incident, distance_m: float | None = None) -> s.Incident:
    """Wire form of an incident."""
    loc = geo.point_required(row.location)
    return s.Incident(
        id=row.id,
        type=s.IncidentType(row.type),
        level=row.level,
        title=row.title,
        description=row.description,
        location=loc,
        area=geo.polygon_from_db(row.area),
        area_id=row.area_id,
        status=IncidentStatus(row.status),
        source=s.IncidentSource(row.source),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        distance_m=distance_m,
        hazard_ids=[uuid.UUID(h) for h in row.hazard_ids or []],
    )


def task_out(row: Task, distance_m: float | None = None) -> s.Task:
    """Wire form of a task."""
    loc = geo.point_required(row.location)
    return s.Task(
        id=row.id,
        incident_id=row.incident_id,
        title=row.title,
        description=row.description,
        location=loc,
        priority=Priority(row.priority),
        deadline=row.deadline,
        assignee_user_id=row.assignee_user_id,
        assignee_unit_id=row.assignee_unit_id,
        status=TaskStatus(row.status),
        area_id=row.area_id,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        distance_m=distance_m,
        plan_id=row.plan_id,
        template_key=row.template_key,
        dispatched_at=row.dispatched_at,
        accept_by=row.accept_by,
        escalated_at=row.escalated_at,
    )


def task_event_out(row: TaskEvent) -> s.TaskEvent:
    """Wire form of a timeline entry."""
    return s.TaskEvent(
        id=row.id,
        task_id=row.task_id,
        from_status=TaskStatus(row.from_status) if row.from_status else None,
        to_status=TaskStatus(row.to_status),
        at=row.at,
        actor_id=row.actor_id,
        device_id=row.device_id,
        location=geo.point_from_db(row.location),
        accuracy_m=row.accuracy_m,
        note=row.note,
        photo_ids=[uuid.UUID(str(x)) for x in row.photo_ids or []],
    )


async def _hazard_ids(session: AsyncSession, p: Principal, ids: list[uuid.UUID]) -> list[str]:
    """The linked hazards, each one live and visible to `p` (else it is reported missing)."""
    if not ids:
        return []
    stmt = select(Hazard.id).where(*live_visible(p, Hazard, Hazard.id.in_(set(ids))))
    found = set((await session.execute(stmt)).scalars())
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise InvalidInput(N_("no such hazard: {ids}"), ids=", ".join(missing), field="hazard_ids")
    return list(dict.fromkeys(str(i) for i in ids))


async def create_incident(
    session: AsyncSession,
    p: Principal,
    data: s.IncidentCreate,
    policy: DispatchPolicy = DEFAULT_POLICY,
) -> tuple[Incident, bool]:
    """Open an incident inside the dispatcher's area and run the matching emergency plans.

    The incident, the plan's tasks, their plan runs and their push jobs commit together.
    Returns the incident and whether this call opened it: a repeated id returns the existing
    one (and dispatches nothing new)."""
    if data.id is not None:
        existing = await session.get(Incident, data.id)
        if existing is not None:
            if existing.created_by != p.user_id:
                await refuse_taken_id(session, p, Incident, data.id)
            return existing, False
    lon, lat = data.location.coordinates
    area_id = await locate_area(session, lon, lat)
    await ensure_in_my_area(session, p, area_id, N_("incident location"))
    row = Incident(
        type=data.type.value,
        level=data.level,
        title=data.title,
        description=data.description,
        location=geo.point_to_db(data.location),
        area=geo.polygon_to_db(data.area) if data.area else None,
        area_id=area_id,
        status=IncidentStatus.OPEN.value,
        source=data.source.value,
        created_by=p.user_id,
        hazard_ids=await _hazard_ids(session, p, data.hazard_ids),
    )
    if data.id is not None:
        row.id = data.id
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "create", "incident", row.id, type=row.type, level=row.level)
    await plans.run_plans(session, p, row, policy)
    return row, True


async def patch_incident(
    session: AsyncSession,
    p: Principal,
    row: Incident,
    data: s.IncidentPatch,
    policy: DispatchPolicy = DEFAULT_POLICY,
) -> Incident:
    """Change an incident; status follows its machine. Raising the level (a smaller number)
    runs the plans that now match, dispatching only slots not dispatched before."""
    await ensure_in_my_area(session, p, row.area_id, N_("incident"))
    old_level = row.level
    changed = apply_patch(row, data, ("title", "description", "level"))
    if data.location is not msgspec.UNSET:
        await relocate(session, p, row, data.location, N_("incident location"))
        changed["location"] = data.location.coordinates
    if data.area is not msgspec.UNSET:
        row.area = geo.polygon_to_db(data.area) if data.area else None
        changed["area"] = data.area is not None
    if data.status is not msgspec.UNSET and data.status != row.status:
        old = IncidentStatus(row.status)
        if not can_transition(INCIDENT_TRANSITIONS, old, data.status):
            raise Conflict(
                N_("incident cannot go from {old} to {new}"),
                old=old,
                new=data.status,
                field="status",
            )
        row.status = changed["status"] = data.status.value
    if data.hazard_ids is not msgspec.UNSET:
        row.hazard_ids = await _hazard_ids(session, p, data.hazard_ids)
        changed["hazard_ids"] = row.hazard_ids
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "update", "incident", row.id, **changed)
    if row.level < old_level and row.status != IncidentStatus.CLOSED.value:
        await plans.run_plans(session, p, row, policy)
    return row


async def _check_assignees(
    session: AsyncSession, user_id: uuid.UUID | None, unit_id: uuid.UUID | None
) -> None:
    if user_id is None and unit_id is None:
        raise InvalidInput(
            N_("a task needs assignee_user_id or assignee_unit_id"), field="assignee"
        )
    if user_id is not None:
        user = await session.get(User, user_id)
        if (
            user is None
            or user.disabled
            or user.deleted_at is not None
            or user.role not in (Role.RESPONDER, Role.INSPECTOR)
        ):
            raise InvalidInput(
                N_("assignee must be an active responder or inspector"), field="assignee_user_id"
            )
    if unit_id is not None:
        unit = await session.get(Organisation, unit_id)
        if unit is None or unit.deleted_at is not None or unit.kind != "linked_unit":
            raise InvalidInput(N_("assignee unit must be a linked unit"), field="assignee_unit_id")


async def create_task(
    session: AsyncSession,
    p: Principal,
    data: s.TaskCreate,
    policy: DispatchPolicy = DEFAULT_POLICY,
) -> tuple[Task, bool]:
    """Dispatch a task; its first timeline entry is `assigned` and its push is queued with it.
    Returns the task and whether this call made it (a repeated id is a no-op)."""
    if data.id is not None:
        existing = await session.get(Task, data.id)
        if existing is not None:
            if existing.created_by != p.user_id:
                await refuse_taken_id(session, p, Task, data.id)
            return existing, False
    if data.incident_id is not None:
        try:  # another area's incident is no incident of ours (its existence is not told)
            await get_visible(session, p, Incident, data.incident_id)
        except NotFound:
            raise InvalidInput(N_("no such incident"), field="incident_id") from None
    await _check_assignees(session, data.assignee_user_id, data.assignee_unit_id)
    lon, lat = data.location.coordinates
    area_id = await locate_area(session, lon, lat)
    await ensure_in_my_area(session, p, area_id, N_("task location"))
    row = Task(
        incident_id=data.incident_id,
        title=data.title,
        description=data.description,
        location=geo.point_to_db(data.location),
        priority=data.priority.value,
        deadline=data.deadline,
        assignee_user_id=data.assignee_user_id,
        assignee_unit_id=data.assignee_unit_id,
        status=TaskStatus.ASSIGNED.value,
        area_id=area_id,
        created_by=p.user_id,
    )
    if data.id is not None:
        row.id = data.id
    session.add(row)
    await session.flush()
    await announce_assignment(
        session, row, actor_id=p.user_id, policy=policy, device_id=p.device_id or None
    )
    audit.record(
        session,
        p,
        "dispatch",
        "task",
        row.id,
        incident_id=data.incident_id,
        unit=data.assignee_unit_id,
        user=data.assignee_user_id,
    )
    return row, True


async def patch_task(
    session: AsyncSession,
    p: Principal,
    row: Task,
    data: s.TaskPatch,
    policy: DispatchPolicy = DEFAULT_POLICY,
) -> Task:
    """Change a task's details or assignees (dispatch).

    A new assignee is a reassignment: the task goes back to `assigned` with a timeline entry,
    a fresh accept window and a push to the new assignee; a finished task cannot be reassigned.
    """
    await ensure_in_my_area(session, p, row.area_id, N_("task"))
    before = (row.assignee_user_id, row.assignee_unit_id)
    changed = apply_patch(
        row,
        data,
        ("title", "description", "deadline", "assignee_user_id", "assignee_unit_id", "priority"),
    )
    if data.location is not msgspec.UNSET:
        await relocate(session, p, row, data.location, N_("task location"))
        changed["location"] = data.location.coordinates
    reassigned = (row.assignee_user_id, row.assignee_unit_id) != before
    if reassigned:
        if row.status in (TaskStatus.COMPLETED.value, TaskStatus.CANCELLED.value):
            raise Conflict(
                N_("a {status} task cannot be reassigned"), status=row.status, field="assignee"
            )
        await _check_assignees(session, row.assignee_user_id, row.assignee_unit_id)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "update", "task", row.id, **changed)
    if reassigned:
        await announce_assignment(
            session,
            row,
            actor_id=p.user_id,
            policy=policy,
            device_id=p.device_id or None,
            note="reassigned by dispatch",
        )
        audit.record(session, p, "reassign", "task", row.id, **changed)
    return row


def _is_assignee(p: Principal, row: Task) -> bool:
    return row.assignee_user_id == p.user_id or (
        p.org_id is not None and row.assignee_unit_id == p.org_id
    )


async def _task_photos(session: AsyncSession, ids: list[uuid.UUID]) -> list[str]:
    """Photos named as a step's evidence: each a declared, live media object."""
    if not ids:
        return []
    wanted = list(dict.fromkeys(ids))
    stmt = select(MediaObject.id).where(
        MediaObject.id.in_(wanted), MediaObject.deleted_at.is_(None)
    )
    found = set((await session.execute(stmt)).scalars())
    missing = [str(i) for i in wanted if i not in found]
    if missing:
        raise InvalidInput(
            N_("no media object {ids}: declare it first (POST /api/v1/media)"),
            ids=", ".join(missing),
            field="photo_ids",
            code="unknown_photo",
        )
    return [str(i) for i in wanted]


async def _seen_step(
    session: AsyncSession, step_id: uuid.UUID | None, task_id: uuid.UUID
) -> TaskEvent | None:
    if step_id is None:
        return None
    seen = await session.get(TaskEvent, step_id)
    if seen is not None and seen.task_id != task_id:
        raise Conflict(N_("a step with this id belongs to another task"), field="id")
    return seen


async def _write_step(
    session: AsyncSession,
    p: Principal,
    row: Task,
    to_status: str,
    data: s.TaskTransition | s.TaskNote,
    photos: list[str],
) -> TaskEvent:
    """The timeline entry of a step or note (the phone's id, time, fix and photos), recorded
    with its task; a fix also moves the responder's last known position."""
    at = data.at or utcnow()
    event = TaskEvent(
        task_id=row.id,
        from_status=row.status,
        to_status=to_status,
        at=at,
        actor_id=p.user_id,
        device_id=data.device_id or p.device_id or None,
        location=geo.point_to_db(data.location) if data.location else None,
        accuracy_m=data.accuracy_m,
        note=data.note,
        photo_ids=photos,
    )
    if data.id is not None:
        event.id = data.id
    row.status = to_status
    session.add(event)
    await session.flush()
    changes.record(session, row, event)
    if data.location is not None:
        fix = s.PositionReport(
            location=data.location, accuracy_m=data.accuracy_m, at=at, device_id=data.device_id
        )
        await record_position(session, p, fix, task_id=row.id)
    return event


async def transition_task(
    session: AsyncSession,
    p: Principal,
    task_id: uuid.UUID,
    data: s.TaskTransition,
    policy: DispatchPolicy = DEFAULT_POLICY,
) -> tuple[TaskEvent, bool]:
    """Move a task along its machine (both doors: REST and a device's `task_step`); stamped
    with time, actor, device, GPS fix and evidence photos.

    Assignees accept, decline (with a reason; a plan task then passes to the next nearest
    unit), go en route, arrive and complete; dispatch cancels and re-assigns a declined task.
    Returns the step and whether this call took it: a repeated step id returns the event
    already recorded.
    """
    row = await get_visible(session, p, Task, task_id)
    seen = await _seen_step(session, data.id, row.id)
    if seen is not None:
        return seen, False
    old = TaskStatus(row.status)
    new = data.to_status
    if not can_transition(TASK_TRANSITIONS, old, new):
        raise Conflict(
            N_("task cannot go from {old} to {new}"),
            old=old,
            new=new,
            field="to_status",
            code="illegal_transition",
        )
    dispatch_moves = {TaskStatus.CANCELLED, TaskStatus.ASSIGNED}
    if new in dispatch_moves:
        if not p.has(Role.ADMIN, Role.DISPATCHER):
            raise Forbidden(N_("only dispatch cancels or re-assigns a task"), code="not_dispatch")
        await ensure_in_my_area(session, p, row.area_id, N_("task"))
    elif not _is_assignee(p, row):
        raise Forbidden(N_("only the task's assignee moves it along"), code="not_assignee")
    if new is TaskStatus.DECLINED and not (data.note or "").strip():
        raise InvalidInput(
            N_("declining needs a reason in note"), field="note", code="reason_required"
        )
    photos = await _task_photos(session, data.photo_ids)
    if new is TaskStatus.ASSIGNED:
        # Dispatch sends a declined task out again (to the same assignee; PATCH assignee_* to
        # choose another): a fresh accept window and a new push.
        again = await announce_assignment(
            session,
            row,
            actor_id=p.user_id,
            policy=policy,
            note=data.note,
            device_id=data.device_id or p.device_id or None,
        )
        audit.record(
            session, p, "transition", "task", row.id, from_status=old.value, to_status=new.value
        )
        return again, True
    event = await _write_step(session, p, row, new.value, data, photos)
    audit.record(
        session,
        p,
        "transition",
        "task",
        row.id,
        from_status=old.value,
        to_status=new.value,
        photos=photos or None,
    )
    if new is TaskStatus.CANCELLED:
        await notify_assignees(session, row, "task.cancelled", f"task.cancelled:{row.id}")
    elif new is TaskStatus.DECLINED:
        await plans.pass_on_declined(session, p, row, policy)
    return event, True


async def note_task(
    session: AsyncSession, p: Principal, task_id: uuid.UUID, data: s.TaskNote
) -> tuple[TaskEvent, bool]:
    """A progress note on a task without a status change (both doors: REST and a device's
    `task_step` with no `to_status`): by its assignee or dispatch, on a task still open, with
    the fix (which also moves the responder's position) and evidence photos. Returns the
    timeline entry and whether this call wrote it (a repeated id returns the first)."""
    row = await get_visible(session, p, Task, task_id)
    seen = await _seen_step(session, data.id, row.id)
    if seen is not None:
        return seen, False
    if not (_is_assignee(p, row) or p.has(Role.ADMIN, Role.DISPATCHER)):
        raise Forbidden(N_("only the task's assignee or dispatch adds notes"), code="not_assignee")
    if row.status in (TaskStatus.COMPLETED.value, TaskStatus.CANCELLED.value):
        raise Conflict(
            N_("the task is {status}"), status=row.status, field="task_id", code="task_closed"
        )
    photos = await _task_photos(session, data.photo_ids)
    event = await _write_step(session, p, row, row.status, data, photos)
    audit.record(session, p, "note", "task", row.id, photos=photos or None)
    return event, True


async def report_position(session: AsyncSession, p: Principal, data: s.PositionReport) -> None:
    """A position fix from a responder's or inspector's device (both doors: REST and a
    device's `position_fix`)."""
    if not p.has(Role.RESPONDER, Role.INSPECTOR):
        raise Forbidden(N_("only responders and inspectors report positions"))
    await record_position(session, p, data)


_POSITION_COLUMNS = ("user_id", "org_id", "location", "accuracy_m", "at", "device_id", "task_id")
_POSITION_UPSERT: dict[str, Any] = {}


def _position_upsert(session: AsyncSession) -> Any:
    """One statement, built once per backend: insert the user's position, or overwrite it
    unless the stored fix is newer; the task is kept unless the fix names one."""
    dialect = dialect_of(session)
    stmt = _POSITION_UPSERT.get(dialect)
    if stmt is None:
        table = ResponderPosition.__table__
        ins = dialect_insert(session, table).values(
            {name: bindparam(name, type_=table.c[name].type) for name in _POSITION_COLUMNS}
        )
        new = ins.excluded
        stmt = _POSITION_UPSERT[dialect] = ins.on_conflict_do_update(
            index_elements=[table.c.user_id],
            set_={
                **{name: new[name] for name in _POSITION_COLUMNS if name != "user_id"},
                "task_id": func.coalesce(new.task_id, table.c.task_id),
            },
            where=table.c.at <= new.at,
        )
    return stmt


async def record_position(
    session: AsyncSession,
    p: Principal,
    data: s.PositionReport,
    task_id: uuid.UUID | None = None,
) -> None:
    """Keep the user's last known position; an older fix (sent late from offline) never
    overwrites a newer one. One statement (a responder reports every few minutes: in a surge
    this is the commonest write)."""
    values = {
        "user_id": p.user_id,
        "org_id": p.org_id,
        "location": geo.point_to_db(data.location),
        "accuracy_m": data.accuracy_m,
        "at": data.at or utcnow(),
        "device_id": data.device_id or p.device_id or None,
        "task_id": task_id,
    }
    await session.execute(_position_upsert(session), values)


# The order of a task's timeline (`schemas.states.task_step_rank`, which the phone uses too):
# by time, entries of one instant by the lifecycle, a note after the step into its status, then
# by when the server wrote them and by id, so that the order is total on both databases.
TIMELINE_ORDER = (
    TaskEvent.at,
    step_rank(TASK_STEP_ORDER, TaskEvent.to_status, TaskEvent.from_status),
    TaskEvent.created_at,
    TaskEvent.id,
)


async def incident_timeline(
    session: AsyncSession, incident_id: uuid.UUID, task_filter: Any
) -> list[TaskEvent]:
    """Every timeline entry of the incident's tasks (those `task_filter` lets through), in order."""
    stmt = (
        select(TaskEvent)
        .join(Task, Task.id == TaskEvent.task_id)
        .where(Task.incident_id == incident_id, Task.deleted_at.is_(None))
        .order_by(*TIMELINE_ORDER)
    )
    if task_filter is not None:
        stmt = stmt.where(task_filter)
    return list((await session.execute(stmt)).scalars())


async def task_timeline(session: AsyncSession, task_id: uuid.UUID) -> list[TaskEvent]:
    """A task's timeline in order (`TIMELINE_ORDER`)."""
    rows = await session.execute(
        select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(*TIMELINE_ORDER)
    )
    return list(rows.scalars())


async def soft_delete(session: AsyncSession, p: Principal, row: Incident | Task) -> None:
    """Mark deleted (kept for sync tombstones and the record)."""
    await ensure_in_my_area(session, p, row.area_id, noun(type(row)))
    if row.deleted_at is not None:
        raise NotFound(N_("already deleted"))
    row.deleted_at = utcnow()
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "delete", row.__tablename__[:-1], row.id)
