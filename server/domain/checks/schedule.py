"""The weekly self-check as a loop: which enterprises owe which template each ISO week
(`CheckAssignment`), the week's `CheckDue` rows the phone syncs, the reminder before the due
day, the missed flag after the week, and the completion figures statistics report.

Weeks are ISO weeks (`2026-W48`) in the deployment's zone (`CheckPolicy.local_tz`). The job
(`run_schedule`, called by `server.jobs.run_once`) is safe with several runners: a week's row is
inserted with ON CONFLICT DO NOTHING on (enterprise, template code, week), and the reminder and
the missed flag are each claimed by a conditional UPDATE that only one transaction wins; only
the winner queues the push.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from push.notices import Notice
from schemas import checks as s
from server import audit, changes
from server.auth.principal import Principal
from server.config import Settings
from server.crud import live_visible
from server.errors import InvalidInput, NotFound
from server.models import (
    AdminArea,
    CheckAssignment,
    CheckDue,
    CheckTemplate,
    Enterprise,
    utcnow,
)
from server.notify import GridInspector, OrgMembers, notify
from server.outbox import dialect_insert

DUE, DONE, MISSED = s.DueStatus.DUE.value, s.DueStatus.DONE.value, s.DueStatus.MISSED.value


@dataclass(frozen=True)
class CheckPolicy:
    """When weeks begin and end, how late a week may still be submitted, when to remind."""

    local_tz: str = "Asia/Shanghai"
    grace_weeks: int = 1  # a submission may name the current week or this many before it
    remind_days: int = 1  # the reminder goes out this many days before the due day begins

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckPolicy:
        """The policy this server is configured with."""
        return cls(settings.local_tz, settings.check_grace_weeks, settings.check_remind_days)

    @property
    def zone(self) -> ZoneInfo:
        """The deployment's zone."""
        return ZoneInfo(self.local_tz)


DEFAULT_POLICY = CheckPolicy()


# ---------------------------------------------------------------------------- ISO weeks


def week_of(at: datetime, policy: CheckPolicy = DEFAULT_POLICY) -> str:
    """The ISO week (`2026-W48`) `at` falls in, in the deployment's zone."""
    year, week, _ = at.astimezone(policy.zone).isocalendar()
    return f"{year:04d}-W{week:02d}"


def _monday(week: str) -> date:
    year, number = week.split("-W")
    return date.fromisocalendar(int(year), int(number), 1)


def week_offset(week: str, weeks: int) -> str:
    """The ISO week `weeks` after `week` (negative: before)."""
    year, number, _ = (_monday(week) + timedelta(weeks=weeks)).isocalendar()
    return f"{year:04d}-W{number:02d}"


def weeks_between(earlier: str, later: str) -> int:
    """How many weeks `later` is after `earlier`."""
    return (_monday(later) - _monday(earlier)).days // 7


def _local_midnight(day: date, policy: CheckPolicy) -> datetime:
    return datetime.combine(day, time(0), tzinfo=policy.zone)


def week_end(week: str, policy: CheckPolicy = DEFAULT_POLICY) -> datetime:
    """When `week` ends: the next Monday's local midnight."""
    return _local_midnight(_monday(week) + timedelta(days=7), policy)


def due_day(week: str, weekday: int) -> date:
    """The due day of `week` for ISO weekday `weekday` (1 Monday .. 7 Sunday)."""
    return _monday(week) + timedelta(days=weekday - 1)


def due_at(week: str, weekday: int, policy: CheckPolicy = DEFAULT_POLICY) -> datetime:
    """The end of the due day (local midnight after it)."""
    return _local_midnight(due_day(week, weekday) + timedelta(days=1), policy)


def accepts_week(week: str, now: datetime, policy: CheckPolicy = DEFAULT_POLICY) -> bool:
    """A submission may name the current week or one of the `grace_weeks` before it."""
    try:
        behind = weeks_between(week, week_of(now, policy))
    except ValueError:  # 2026-W53 in a year with 52 weeks
        return False
    return 0 <= behind <= policy.grace_weeks


# ---------------------------------------------------------------------------- assignments


def _matches(assignment: CheckAssignment) -> list[ColumnElement[bool]]:
    """Enterprise conditions of one assignment (every given selector must hold)."""
    conds: list[ColumnElement[bool]] = [Enterprise.deleted_at.is_(None)]
    if assignment.enterprise_id is not None:
        conds.append(Enterprise.id == assignment.enterprise_id)
    if assignment.enterprise_kind is not None:
        conds.append(Enterprise.kind == assignment.enterprise_kind)
    if assignment.area_id is not None:
        top = select(AdminArea.path).where(AdminArea.id == assignment.area_id).scalar_subquery()
        own = select(AdminArea.path).where(AdminArea.id == Enterprise.area_id).scalar_subquery()
        conds.append(own.startswith(top))
    return conds


async def active_templates(
    session: AsyncSession, codes: Collection[str]
) -> dict[str, CheckTemplate]:
    """The active version of each template code, in one query (a retired code is absent)."""
    if not codes:
        return {}
    stmt = (
        select(CheckTemplate)
        .where(
            CheckTemplate.code.in_(sorted(codes)),
            CheckTemplate.active.is_(True),
            CheckTemplate.deleted_at.is_(None),
        )
        .order_by(CheckTemplate.code, CheckTemplate.version.desc())
    )
    out: dict[str, CheckTemplate] = {}
    for template in (await session.execute(stmt)).scalars():
        out.setdefault(template.code, template)
    return out


async def active_template(session: AsyncSession, code: str) -> CheckTemplate | None:
    """The active version of a template code (None once the template is retired)."""
    return (await active_templates(session, [code])).get(code)


INSERT_ROWS = 1000
"""Rows per INSERT when a week opens: 11 parameters each, far below PostgreSQL's 32,767 (and
SQLite's 32,766) bound parameters per statement, whatever the number of enterprises."""


async def open_weeks(
    session: AsyncSession, now: datetime, policy: CheckPolicy = DEFAULT_POLICY
) -> int:
    """Make sure every assigned enterprise has its row for this week (and for last week, if the
    assignment existed by then: a job that did not run for days still flags the miss).
    Only enterprises without their row are read and inserted, so a pass with nothing new writes
    nothing. Returns how many rows this call created."""
    current = week_of(now, policy)
    created = 0
    assignments = list(
        (
            await session.execute(
                select(CheckAssignment)
                .where(CheckAssignment.deleted_at.is_(None))
                .order_by(CheckAssignment.created_at, CheckAssignment.id)
            )
        ).scalars()
    )
    templates = await active_templates(session, {a.template_code for a in assignments})
    for assignment in assignments:
        template = templates.get(assignment.template_code)
        if template is None:
            continue  # retired: nothing is due any more
        for week in (week_offset(current, -1), current):
            if week_end(week, policy) <= assignment.created_at:
                continue
            has_row = (
                select(CheckDue.id)
                .where(
                    CheckDue.enterprise_id == Enterprise.id,
                    CheckDue.template_code == template.code,
                    CheckDue.week == week,
                )
                .exists()
            )
            owing = (
                await session.execute(
                    # In id order: racing runners insert in the same order (no deadlock).
                    select(Enterprise.id, Enterprise.grid_id, Enterprise.area_id)
                    .where(*_matches(assignment), ~has_row)
                    .order_by(Enterprise.id)
                )
            ).all()
            day_ends = due_at(week, assignment.due_weekday, policy)
            for start in range(0, len(owing), INSERT_ROWS):
                values = [
                    {
                        "id": uuid.uuid4(),
                        "enterprise_id": ent_id,
                        "template_code": template.code,
                        "template_id": template.id,
                        "week": week,
                        "due_at": day_ends,
                        "status": DUE,
                        "grid_id": grid_id,
                        "area_id": area_id,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for ent_id, grid_id, area_id in owing[start : start + INSERT_ROWS]
                ]
                stmt = (
                    dialect_insert(session, CheckDue.__table__)
                    .values(values)
                    .on_conflict_do_nothing(
                        index_elements=["enterprise_id", "template_code", "week"]
                    )
                    .returning(CheckDue.__table__.c.id)
                )
                for new_id in (await session.execute(stmt)).scalars():
                    changes.record_ref(session, CheckDue, new_id)
                    created += 1
    return created


async def assign(
    session: AsyncSession, p: Principal, data: s.CheckAssignmentCreate
) -> CheckAssignment:
    """Assign a template code to enterprises (administrators; audited)."""
    if data.enterprise_id is None and data.enterprise_kind is None and data.area_id is None:
        raise InvalidInput(
            N_("name the enterprises: enterprise_id, enterprise_kind or area_id"),
            field="enterprise_id",
            code="no_selector",
        )
    if await active_template(session, data.template_code) is None:
        raise InvalidInput(N_("no active template with this code"), field="template_code")
    if data.enterprise_id is not None:
        ent = await session.get(Enterprise, data.enterprise_id)
        if ent is None or ent.deleted_at is not None:
            raise InvalidInput(N_("no such enterprise"), field="enterprise_id")
    if data.area_id is not None and await session.get(AdminArea, data.area_id) is None:
        raise InvalidInput(N_("no such area"), field="area_id")
    row = CheckAssignment(
        template_code=data.template_code,
        enterprise_id=data.enterprise_id,
        enterprise_kind=data.enterprise_kind,
        area_id=data.area_id,
        due_weekday=data.due_weekday,
        created_by=p.user_id,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        p,
        "create",
        "check_assignment",
        row.id,
        template_code=row.template_code,
        enterprise_id=str(row.enterprise_id) if row.enterprise_id else None,
        enterprise_kind=row.enterprise_kind,
        area_id=str(row.area_id) if row.area_id else None,
        due_weekday=row.due_weekday,
    )
    return row


async def unassign(session: AsyncSession, p: Principal, assignment_id: uuid.UUID) -> None:
    """End an assignment (soft delete; audited). Rows already opened stay as they are."""
    row = await session.get(CheckAssignment, assignment_id)
    if row is None or row.deleted_at is not None:
        raise NotFound(N_("no check assignment {id}"), id=assignment_id)
    row.deleted_at = utcnow()
    await session.flush()
    audit.record(session, p, "delete", "check_assignment", row.id)


# ---------------------------------------------------------------------------- reminders, misses


async def _claim(session: AsyncSession, due_id: uuid.UUID, *conds: Any, **values: Any) -> bool:
    """Set `values` on the row if `conds` still hold: True for the one transaction that did."""
    result = await session.execute(
        update(CheckDue)
        .where(CheckDue.id == due_id, *conds)
        .values(**values)
        .execution_options(synchronize_session=False, recorded=True)
    )
    if getattr(result, "rowcount", 0) != 1:
        return False
    changes.record_ref(session, CheckDue, due_id)
    return True


async def _names(session: AsyncSession, due: CheckDue) -> tuple[Enterprise, CheckTemplate]:
    enterprise = await session.get(Enterprise, due.enterprise_id)
    template = await session.get(CheckTemplate, due.template_id)
    assert enterprise is not None and template is not None  # foreign keys  # noqa: S101
    return enterprise, template


def due_notice(
    kind: str, due: CheckDue, enterprise: Enterprise, template: CheckTemplate, day: date
) -> Notice:
    """A notice about one week's self-check that opens its `check_due` record."""
    return Notice(
        kind=kind,
        event_id=f"{kind}:{due.id}",
        record="check_due",
        record_id=str(due.id),
        params={
            "template": template.name,
            "enterprise": enterprise.name,
            "week": due.week,
            "due_on": day.isoformat(),
        },
        data={
            "check_due_id": str(due.id),
            "enterprise_id": str(enterprise.id),
            "template_id": str(template.id),
            "week": due.week,
        },
    )


async def remind_due(
    session: AsyncSession, now: datetime, policy: CheckPolicy = DEFAULT_POLICY
) -> list[uuid.UUID]:
    """Remind each enterprise of a check still due, `remind_days` before its due day begins:
    its staff, once per week. Returns the rows reminded by this call."""
    lead = timedelta(days=1 + policy.remind_days)  # due_at is the end of the due day
    open_rows = [
        CheckDue.status == DUE,
        CheckDue.reminded_at.is_(None),
        CheckDue.deleted_at.is_(None),
        CheckDue.due_at <= now + lead,
        CheckDue.due_at > now,
    ]
    stmt = select(CheckDue).where(*open_rows).order_by(CheckDue.id)
    rows = list((await session.execute(stmt)).scalars())
    won: list[uuid.UUID] = []
    for due in rows:
        if not await _claim(session, due.id, *open_rows, reminded_at=now, updated_at=now):
            continue
        enterprise, template = await _names(session, due)
        day = (due.due_at.astimezone(policy.zone) - timedelta(days=1)).date()
        notice = due_notice("check.due_soon", due, enterprise, template, day)
        await notify(session, notice, OrgMembers.of(enterprise.org_id), now=now)
        won.append(due.id)
    return won


async def flag_missed(
    session: AsyncSession, now: datetime, policy: CheckPolicy = DEFAULT_POLICY
) -> list[uuid.UUID]:
    """Flag every check whose week ended unsubmitted `missed` and tell the grid's inspector,
    once. Returns the rows flagged by this call."""
    current = week_of(now, policy)
    candidates = list(
        (
            await session.execute(
                select(CheckDue)
                .where(
                    CheckDue.status == DUE,
                    CheckDue.deleted_at.is_(None),
                    CheckDue.week < current,
                )
                .order_by(CheckDue.id)
            )
        ).scalars()
    )
    won: list[uuid.UUID] = []
    for due in candidates:
        if week_end(due.week, policy) > now:
            continue  # same-length strings compare as weeks; this guards a zone change
        claimed = await _claim(
            session, due.id, CheckDue.status == DUE, status=MISSED, missed_at=now, updated_at=now
        )
        if not claimed:
            continue
        enterprise, template = await _names(session, due)
        day = (due.due_at.astimezone(policy.zone) - timedelta(days=1)).date()
        notice = due_notice("check.missed", due, enterprise, template, day)
        await notify(session, notice, GridInspector(enterprise.grid_id), now=now)
        won.append(due.id)
    return won


@dataclass
class ScheduleReport:
    """What one pass of the self-check job did."""

    opened: int = 0
    reminded: list[uuid.UUID] = field(default_factory=list)
    missed: list[uuid.UUID] = field(default_factory=list)


async def run_schedule(
    session: AsyncSession, now: datetime, policy: CheckPolicy = DEFAULT_POLICY
) -> ScheduleReport:
    """One pass: open this week's rows, remind, flag last weeks' misses (caller commits)."""
    report = ScheduleReport()
    report.opened = await open_weeks(session, now, policy)
    report.reminded = await remind_due(session, now, policy)
    report.missed = await flag_missed(session, now, policy)
    return report


# ---------------------------------------------------------------------------- submissions


async def mark_done(
    session: AsyncSession,
    template: CheckTemplate,
    enterprise: Enterprise,
    week: str,
    submission_id: uuid.UUID,
    at: datetime,
    policy: CheckPolicy = DEFAULT_POLICY,
) -> None:
    """The week's row is done (a late submission within the grace keeps its `missed_at`)."""
    stmt = select(CheckDue).where(
        CheckDue.enterprise_id == enterprise.id,
        CheckDue.template_code == template.code,
        CheckDue.week == week,
    )
    due = (await session.execute(stmt)).scalar_one_or_none()
    if due is None:
        due = CheckDue(
            enterprise_id=enterprise.id,
            template_code=template.code,
            template_id=template.id,
            week=week,
            due_at=week_end(week, policy),
            grid_id=enterprise.grid_id,
            area_id=enterprise.area_id,
        )
        session.add(due)
    due.status = DONE
    due.submission_id = submission_id
    due.submitted_at = at
    due.deleted_at = None
    await session.flush()
    changes.record(session, due)


async def withdraw_open(
    session: AsyncSession, *which: ColumnElement[bool], now: datetime | None = None
) -> int:
    """Open (`due`) rows matching `which` stop being due: withdrawn, so their phones see them
    deleted and no reminder or missed flag follows. Returns how many."""
    at = now or utcnow()
    ids = list(
        (
            await session.execute(
                select(CheckDue.id).where(
                    *which, CheckDue.status == DUE, CheckDue.deleted_at.is_(None)
                )
            )
        ).scalars()
    )
    for due_id in ids:
        await _claim(session, due_id, CheckDue.status == DUE, deleted_at=at, updated_at=at)
    return len(ids)


async def retire_code(session: AsyncSession, code: str, now: datetime | None = None) -> int:
    """A retired template stops being due: open rows of its code are withdrawn."""
    return await withdraw_open(session, CheckDue.template_code == code, now=now)


async def close_enterprise(session: AsyncSession, enterprise_id: uuid.UUID) -> int:
    """A deactivated enterprise owes nothing more: its open rows are withdrawn (a reactivated
    one owes its checks again from the week after)."""
    return await withdraw_open(session, CheckDue.enterprise_id == enterprise_id)


# ---------------------------------------------------------------------------- reading


def due_out(row: CheckDue) -> s.CheckDue:
    """Wire form of one week's check."""
    return s.CheckDue(
        id=row.id,
        enterprise_id=row.enterprise_id,
        template_id=row.template_id,
        template_code=row.template_code,
        week=row.week,
        due_at=row.due_at,
        status=s.DueStatus(row.status),
        submission_id=row.submission_id,
        submitted_at=row.submitted_at,
        reminded_at=row.reminded_at,
        missed_at=row.missed_at,
    )


def _count(cond: ColumnElement[bool]) -> Any:
    """How many rows of the group satisfy `cond` (both databases)."""
    return func.sum(case((cond, literal(1)), else_=literal(0)))


async def completion(
    session: AsyncSession,
    p: Principal,
    *,
    week_from: str | None = None,
    week_to: str | None = None,
    enterprise_ids: Sequence[uuid.UUID] = (),
) -> list[s.CheckCompletionRow]:
    """Self-check completion by enterprise and week, within what `p` may see: how many checks
    were due, done (on time or late) and missed. The data statistics and exports report."""
    conds: list[Any] = list(live_visible(p, CheckDue))
    if week_from:
        conds.append(CheckDue.week >= week_from)
    if week_to:
        conds.append(CheckDue.week <= week_to)
    if enterprise_ids:
        conds.append(CheckDue.enterprise_id.in_(list(enterprise_ids)))
    late = and_(CheckDue.status == DONE, CheckDue.missed_at.is_not(None))

    stmt = (
        select(
            CheckDue.enterprise_id,
            CheckDue.week,
            func.count(),
            _count(CheckDue.status == DONE),
            _count(late),
            _count(CheckDue.status == MISSED),
        )
        .where(*conds)
        .group_by(CheckDue.enterprise_id, CheckDue.week)
        .order_by(CheckDue.week, CheckDue.enterprise_id)
    )
    return [
        s.CheckCompletionRow(
            enterprise_id=ent,
            week=week,
            due=int(total),
            done=int(done or 0),
            late=int(late_n or 0),
            missed=int(missed or 0),
        )
        for ent, week, total, done, late_n, missed in (await session.execute(stmt)).all()
    ]
