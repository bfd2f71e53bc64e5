"""Counts and response times, scoped like every other read (a dispatcher sees their area).

Percentiles are computed in Python (nearest-rank on the sorted sample), which is the same on
SQLite and PostgreSQL; the rows are one per task in the window, small for a district.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import stats as s
from schemas.states import HazardStatus, TaskStatus
from server.auth.principal import Principal
from server.crud import live_visible
from server.domain.dispatch.assign import OPEN_STATUSES
from server.models import Grid, Hazard, Incident, Organisation, Task, TaskEvent, User


def period_start(at: datetime, period: s.Period) -> str:
    """The UTC bucket an instant falls in: 2026-07-01 (day), 2026-W27 (week), 2026-07 (month)."""
    match period:
        case s.Period.DAY:
            return at.date().isoformat()
        case s.Period.WEEK:
            year, week, _ = at.isocalendar()
            return f"{year}-W{week:02d}"
        case s.Period.MONTH:
            return f"{at.year:04d}-{at.month:02d}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None for an empty sample."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)


async def incident_counts(
    session: AsyncSession,
    p: Principal,
    period: s.Period,
    since: datetime | None,
    until: datetime | None,
) -> list[s.IncidentCount]:
    """Incidents the user may see, counted by period, type and level."""
    stmt = select(Incident.created_at, Incident.type, Incident.level).where(
        *live_visible(p, Incident)
    )
    if since is not None:
        stmt = stmt.where(Incident.created_at >= since)
    if until is not None:
        stmt = stmt.where(Incident.created_at < until)
    counts: Counter[tuple[str, str, int]] = Counter()
    for created_at, type_, level in (await session.execute(stmt)).all():
        counts[(period_start(created_at, period), type_, level)] += 1
    return [
        s.IncidentCount(period_start=k[0], type=k[1], level=k[2], count=n)
        for k, n in sorted(counts.items())
    ]


def _task_unit_column(column: Any) -> Any:
    """A column of the task's unit: its assigned unit's, else its assigned person's
    organisation's."""
    person_org = select(User.org_id).where(User.id == Task.assignee_user_id).scalar_subquery()
    return (
        select(column)
        .where(
            or_(
                Organisation.id == Task.assignee_unit_id,
                and_(Task.assignee_unit_id.is_(None), Organisation.id == person_org),
            )
        )
        .limit(1)
        .scalar_subquery()
    )


def _unit_kind_column() -> Any:
    """The task's unit kind: its unit's, else its assigned person's organisation's."""
    return _task_unit_column(Organisation.unit_kind)


#: The group key of a task row (kind, incident type, unit id, unit name, dispatched at).
GroupKey = tuple[str | None, str | None, uuid.UUID | None, str | None, str | None]


async def response_times(
    session: AsyncSession,
    p: Principal,
    since: datetime | None,
    until: datetime | None,
    by: Sequence[s.ResponseBy] = (s.ResponseBy.UNIT_KIND,),
    period: s.Period = s.Period.MONTH,
) -> list[s.ResponseTimes]:
    """Per group (`by`: unit kind, incident type, unit and/or `period` of the dispatch): seconds
    from (the last) dispatch to accepted and to on scene, p50/p90.

    The dispatch instant is the task's `dispatched_at` (its latest assignment); a step counts
    when its first timeline entry came at or after it.
    """
    wanted = set(by) or {s.ResponseBy.UNIT_KIND}
    incident_type = select(Incident.type).where(Incident.id == Task.incident_id).scalar_subquery()
    stmt = select(
        Task.id,
        Task.dispatched_at,
        _unit_kind_column(),
        incident_type,
        _task_unit_column(Organisation.id),
        _task_unit_column(Organisation.name),
    ).where(*live_visible(p, Task, Task.dispatched_at.is_not(None)))
    if since is not None:
        stmt = stmt.where(Task.dispatched_at >= since)
    if until is not None:
        stmt = stmt.where(Task.dispatched_at < until)
    tasks: dict[object, tuple[datetime, GroupKey]] = {}
    for tid, at, kind, itype, unit_id, unit_name in (await session.execute(stmt)).all():
        key: GroupKey = (
            (kind or "unknown") if s.ResponseBy.UNIT_KIND in wanted else None,
            (itype or "none") if s.ResponseBy.INCIDENT_TYPE in wanted else None,
            unit_id if s.ResponseBy.UNIT in wanted else None,
            unit_name if s.ResponseBy.UNIT in wanted else None,
            period_start(at, period) if s.ResponseBy.PERIOD in wanted else None,
        )
        tasks[tid] = (at, key)
    firsts: dict[tuple[object, str], datetime] = {}
    if tasks:
        steps = await session.execute(
            select(TaskEvent.task_id, TaskEvent.to_status, func.min(TaskEvent.at))
            .where(
                TaskEvent.task_id.in_(list(tasks)),
                TaskEvent.to_status.in_([TaskStatus.ACCEPTED.value, TaskStatus.ON_SCENE.value]),
            )
            .group_by(TaskEvent.task_id, TaskEvent.to_status)
        )
        for tid, status, at in steps.all():
            firsts[(tid, status)] = at
    accept: defaultdict[GroupKey, list[float]] = defaultdict(list)
    scene: defaultdict[GroupKey, list[float]] = defaultdict(list)
    total: Counter[GroupKey] = Counter()
    for tid, (dispatched, k) in tasks.items():
        total[k] += 1
        for status, bucket in (("accepted", accept), ("on_scene", scene)):
            reached = firsts.get((tid, status))
            if reached is not None and reached >= dispatched:
                bucket[k].append((reached - dispatched).total_seconds())
    return [
        s.ResponseTimes(
            unit_kind=k[0],
            incident_type=k[1],
            unit_id=k[2],
            unit_name=k[3],
            period_start=k[4],
            tasks=total[k],
            accepted=len(accept[k]),
            on_scene=len(scene[k]),
            accept_p50_s=percentile(accept[k], 50),
            accept_p90_s=percentile(accept[k], 90),
            on_scene_p50_s=percentile(scene[k], 50),
            on_scene_p90_s=percentile(scene[k], 90),
        )
        for k in sorted(total, key=lambda g: tuple("" if v is None else str(v) for v in g))
    ]


async def flagged_tasks(
    session: AsyncSession, p: Principal, which: str, now: datetime
) -> list[s.TaskFlag]:
    """Open tasks past their deadline (`overdue`) or flagged by escalation (`escalated`)."""
    kind = _unit_kind_column()
    stmt = select(Task, kind).where(*live_visible(p, Task))
    if which == "overdue":
        stmt = stmt.where(
            Task.deadline.is_not(None), Task.deadline < now, Task.status.in_(OPEN_STATUSES)
        )
    else:
        stmt = stmt.where(Task.escalated_at.is_not(None))
    rows = await session.execute(stmt.order_by(Task.created_at).limit(5000))
    return [
        s.TaskFlag(
            task_id=t.id,
            incident_id=t.incident_id,
            title=t.title,
            status=t.status,
            unit_kind=k,
            assignee_unit_id=t.assignee_unit_id,
            assignee_user_id=t.assignee_user_id,
            dispatched_at=t.dispatched_at,
            deadline=t.deadline,
            escalated_at=t.escalated_at,
        )
        for t, k in rows.all()
    ]


def since_default(now: datetime) -> datetime:
    """The default window start: 90 days back."""
    return now - timedelta(days=90)


_RECTIFIED = (HazardStatus.RECTIFIED, HazardStatus.REINSPECTED, HazardStatus.CLOSED)


async def hazard_counts(
    session: AsyncSession,
    p: Principal,
    by: Sequence[s.HazardBy],
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> list[s.HazardCounts]:
    """Hazards `p` may see, reported in [since, until), grouped by `by` (source, category,
    grid, status): totals, closed, rectifications assigned and rectified, the rate, and the
    rectifications overdue at `now`.

    A hazard counts as assigned once it has a rectifying organisation, and as rectified when,
    so assigned, it reached rectified, re-inspected or closed (a reopened one is not)."""
    wanted = set(by)
    reported = func.coalesce(Hazard.reported_at, Hazard.created_at)
    grid_name = select(Grid.name).where(Grid.id == Hazard.grid_id).scalar_subquery()
    stmt = select(
        Hazard.source,
        Hazard.category,
        Hazard.grid_id,
        grid_name,
        Hazard.status,
        Hazard.rectify_org_id,
        Hazard.rectify_deadline,
    ).where(*live_visible(p, Hazard))
    if since is not None:
        stmt = stmt.where(reported >= since)
    if until is not None:
        stmt = stmt.where(reported < until)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for source, category, grid_id, gname, status, org, deadline in (
        await session.execute(stmt)
    ).all():
        key = (
            source if s.HazardBy.SOURCE in wanted else None,
            category if s.HazardBy.CATEGORY in wanted else None,
            grid_id if s.HazardBy.GRID in wanted else None,
            gname if s.HazardBy.GRID in wanted else None,
            status if s.HazardBy.STATUS in wanted else None,
        )
        n = groups.setdefault(key, [0, 0, 0, 0, 0])
        assigned = org is not None
        n[0] += 1
        n[1] += status == HazardStatus.CLOSED
        n[2] += assigned
        n[3] += assigned and status in _RECTIFIED
        n[4] += (
            status == HazardStatus.RECTIFICATION_ASSIGNED
            and deadline is not None
            and deadline < now
        )
    return [
        s.HazardCounts(
            source=k[0],
            category=k[1],
            grid_id=k[2],
            grid_name=k[3],
            status=k[4],
            total=n[0],
            closed=n[1],
            rectification_assigned=n[2],
            rectified=n[3],
            rectification_rate=round(n[3] / n[2], 4) if n[2] else None,
            overdue=n[4],
        )
        for k, n in sorted(
            groups.items(), key=lambda g: tuple("" if v is None else str(v) for v in g[0])
        )
    ]
