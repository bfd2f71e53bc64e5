"""Choosing units and announcing assignments: the one door every (re)dispatch goes through.

`announce_assignment` stamps the `assigned` timeline entry, starts the accept window and queues
the push for the assignee's devices, all in the caller's transaction (the transactional outbox).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from push.notices import Notice
from schemas.states import TaskStatus
from server import changes, geo
from server.config import Settings
from server.db import dialect_of
from server.models import Incident, Organisation, Task, TaskEvent, utcnow
from server.notify import AreaDispatchers, TaskAssignees, active_members, notify

OPEN_STATUSES = (
    TaskStatus.ASSIGNED.value,
    TaskStatus.ACCEPTED.value,
    TaskStatus.EN_ROUTE.value,
    TaskStatus.ON_SCENE.value,
    TaskStatus.DECLINED.value,
)


@dataclass(frozen=True)
class DispatchPolicy:
    """Accept windows before escalation: `window_high_s` for level I-II, `window_low_s` else."""

    window_high_s: int = 180
    window_low_s: int = 600

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchPolicy:
        """The policy configured for this server."""
        return cls(settings.escalation_window_s, settings.escalation_window_low_s)

    def window(self, level: int | None, override_s: int | None = None) -> timedelta:
        """How long an assignee has to accept: the template's window, else by level."""
        if override_s is not None:
            return timedelta(seconds=override_s)
        high = level is not None and level <= 2
        return timedelta(seconds=self.window_high_s if high else self.window_low_s)


DEFAULT_POLICY = DispatchPolicy()


@dataclass(frozen=True)
class UnitChoice:
    """A candidate unit and its geodesic distance from the incident."""

    unit: Organisation
    distance_m: float


async def nearest_units(
    session: AsyncSession,
    unit_kind: str,
    lon: float,
    lat: float,
    *,
    exclude: set[uuid.UUID] | None = None,
    limit: int = 1,
) -> list[UnitChoice]:
    """Available linked units of `unit_kind`, nearest first (ties by id, so the order is stable).

    Available: a live linked unit with a base location and at least one active member who can
    receive the task. Open workload does not exclude a unit: a brigade takes several incidents,
    and the dispatcher reassigns by hand when it is stretched (docs/dispatch.md).
    """
    dist = geo.distance_m(dialect_of(session), Organisation.location, lon, lat).label("d")
    stmt = (
        select(Organisation, dist)
        .where(
            Organisation.kind == "linked_unit",
            Organisation.unit_kind == unit_kind,
            Organisation.deleted_at.is_(None),
            Organisation.location.is_not(None),
            exists(active_members(lambda c: c == Organisation.id)),
        )
        .order_by(dist, Organisation.id)
        .limit(limit)
    )
    if exclude:
        stmt = stmt.where(Organisation.id.not_in(exclude))
    rows = await session.execute(stmt)
    return [UnitChoice(unit, float(d)) for unit, d in rows.all()]


def task_notice(task: Task, event_id: str, kind: str) -> Notice:
    """A task event as a data-only notice (the app rings; it fetches details by task_id)."""
    data = {
        "task_id": str(task.id),
        "title": task.title[:120],
        "priority": task.priority,
        "status": task.status,
    }
    if task.incident_id is not None:
        data["incident_id"] = str(task.incident_id)
    return Notice(
        kind=kind,
        event_id=event_id,
        record="task",
        record_id=str(task.id),
        params={"title": task.title[:120], "priority": task.priority},
        data=data,
        visible=False,
        ttl_seconds=3600,
    )


async def incident_level(session: AsyncSession, task: Task) -> int | None:
    """The level of the task's incident, if it has one."""
    if task.incident_id is None:
        return None
    incident = await session.get(Incident, task.incident_id)
    return incident.level if incident is not None else None


async def announce_assignment(
    session: AsyncSession,
    task: Task,
    *,
    actor_id: uuid.UUID | None,
    policy: DispatchPolicy,
    accept_window_s: int | None = None,
    note: str | None = None,
    device_id: str | None = None,
    now: datetime | None = None,
) -> TaskEvent:
    """Put `task` in `assigned` for its current assignee: timeline entry, accept window, push.

    The push jobs are written in the caller's transaction and name the timeline entry as their
    event, so a reassignment is a new event and a retried request is not.
    """
    at = now or utcnow()
    previous = task.status if task.dispatched_at is not None else None
    task.status = TaskStatus.ASSIGNED.value
    task.dispatched_at = at
    task.accept_by = at + policy.window(await incident_level(session, task), accept_window_s)
    task.escalated_at = None
    event = TaskEvent(
        task_id=task.id,
        from_status=previous,
        to_status=TaskStatus.ASSIGNED.value,
        at=at,
        actor_id=actor_id,
        device_id=device_id,
        note=note,
    )
    session.add(event)
    await session.flush()
    changes.record(session, task, event)
    await notify_assignees(session, task, "task.assigned", f"task.assigned:{event.id}")
    return event


async def notify_assignees(session: AsyncSession, task: Task, kind: str, event_id: str) -> int:
    """Tell the task's assignees about a change (e.g. `task.cancelled`)."""
    return await notify(session, task_notice(task, event_id, kind), TaskAssignees(task))


async def notify_dispatchers(session: AsyncSession, task: Task, kind: str, event_id: str) -> int:
    """Queue a push about `task` to every dispatcher responsible for its area."""
    return await notify(session, task_notice(task, event_id, kind), AreaDispatchers(task.area_id))
