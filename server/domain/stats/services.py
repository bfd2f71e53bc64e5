"""Counts and response times, scoped like every other read (a dispatcher sees their area).

Percentiles are computed in Python (nearest-rank on the sorted sample), which is the same on
SQLite and PostgreSQL; the rows are one per task in the window, small for a district.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import stats as s
from schemas.states import TaskStatus
from server.auth.principal import Principal
from server.crud import live_visible
from server.domain.dispatch.assign import OPEN_STATUSES
from server.models import Incident, Organisation, Task, TaskEvent, User


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


def _unit_kind_column() -> object:
    """The task's unit kind: its unit's, else its assigned person's organisation's."""
    person_org = select(User.org_id).where(User.id == Task.assignee_user_id).scalar_subquery()
    return (
        select(Organisation.unit_kind)
        .where(
            or_(
                Organisation.id == Task.assignee_unit_id,
                and_(Task.assignee_unit_id.is_(None), Organisation.id == person_org),
            )
        )
        .limit(1)
        .scalar_subquery()
    )


async def response_times(
    session: AsyncSession, p: Principal, since: datetime | None, until: datetime | None
) -> list[s.ResponseTimes]:
    """Per unit kind: seconds from (the last) dispatch to accepted and to on scene, p50/p90.

    The dispatch instant is the task's `dispatched_at` (its latest assignment); a step counts
    when its first timeline entry came at or after it.
    """
    kind = _unit_kind_column()
    stmt = select(Task.id, Task.dispatched_at, kind).where(  # type: ignore[call-overload]
        *live_visible(p, Task, Task.dispatched_at.is_not(None))
    )
    if since is not None:
        stmt = stmt.where(Task.dispatched_at >= since)
    if until is not None:
        stmt = stmt.where(Task.dispatched_at < until)
    tasks = {tid: (at, k or "unknown") for tid, at, k in (await session.execute(stmt)).all()}
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
    accept: defaultdict[str, list[float]] = defaultdict(list)
    scene: defaultdict[str, list[float]] = defaultdict(list)
    total: Counter[str] = Counter()
    for tid, (dispatched, k) in tasks.items():
        total[k] += 1
        for status, bucket in (("accepted", accept), ("on_scene", scene)):
            reached = firsts.get((tid, status))
            if reached is not None and reached >= dispatched:
                bucket[k].append((reached - dispatched).total_seconds())
    return [
        s.ResponseTimes(
            unit_kind=k,
            tasks=total[k],
            accepted=len(accept[k]),
            on_scene=len(scene[k]),
            accept_p50_s=percentile(accept[k], 50),
            accept_p90_s=percentile(accept[k], 90),
            on_scene_p50_s=percentile(scene[k], 50),
            on_scene_p90_s=percentile(scene[k], 90),
        )
        for k in sorted(total)
    ]


async def flagged_tasks(
    session: AsyncSession, p: Principal, which: str, now: datetime
) -> list[s.TaskFlag]:
    """Open tasks past their deadline (`overdue`) or flagged by escalation (`escalated`)."""
    kind = _unit_kind_column()
    stmt = select(Task, kind).where(*live_visible(p, Task))  # type: ignore[call-overload]
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


def _cell(value: object) -> object:
    if value is None:
        return ""
    # A spreadsheet runs a cell that starts like a formula; user text (titles) must not.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: Iterable[msgspec.Struct], fields: Sequence[str]) -> str:
    """CSV with a header row; times ISO 8601 UTC, empty cells for None, formulas defused."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fields)
    for row in rows:
        plain = msgspec.to_builtins(row)
        writer.writerow([_cell(plain.get(f)) for f in fields])
    return out.getvalue()


def since_default(now: datetime) -> datetime:
    """The default window start: 90 days back."""
    return now - timedelta(days=90)
