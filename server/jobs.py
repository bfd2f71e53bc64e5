"""Periodic jobs of the hazard loop and the media pipeline, run by every server process.

- overdue: rectifications past their deadline become overdue, with one escalation each (the
  claim is `UPDATE ... WHERE NOT overdue`, so several processes never escalate twice); a
  rectification due within a day reminds its rectifier once (`notice_claims`);
- self-checks: this week's checks open, the reminder before the due day, last week's unsubmitted
  checks flagged missed (`server/domain/checks/schedule.py`, each claimed once);
- uploads: expired tus uploads are deleted; a complete upload left by a crash between its last
  PATCH and its ingest (idle for `STALE_COMPLETE`) is ingested now, or discarded if refused;
- blobs: temp files of crashed disk writes are swept;
- warnings: an expired warning leaves the phones a day after it expired
  (`alerts.retire_expired`);
- residents: warning subscriptions not renewed for 90 days lapse (deleted with their places).

`run_once` is what `liandong jobs run-once` calls; `hazard_jobs_lifespan` runs it every
`hazard_jobs_interval_s` inside the server when `background_jobs` is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio.to_thread
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from media.errors import MediaError
from media.store import DiskBlobStore
from push.outbox import Clock, utc_now
from server.domain.alerts.services import retire_expired
from server.domain.checks.schedule import DEFAULT_POLICY, CheckPolicy, ScheduleReport, run_schedule
from server.domain.hazards.services import mark_overdue, remind_deadlines
from server.domain.media.services import MediaRuntime, finish_upload
from server.domain.residents.services import lapse as lapse_subscriptions
from server.errors import DomainError
from server.models import utcnow
from server.tasks import running

log = logging.getLogger("liandong.jobs")
STALE_COMPLETE = timedelta(minutes=10)


@dataclass
class JobReport:
    """What one run did."""

    escalated: list[uuid.UUID] = field(default_factory=list)
    deadline_reminders: list[uuid.UUID] = field(default_factory=list)
    checks: ScheduleReport = field(default_factory=ScheduleReport)
    expired_uploads: int = 0
    recovered_uploads: int = 0
    discarded_uploads: int = 0
    swept_temp: int = 0
    retired_alerts: int = 0
    lapsed_subscriptions: int = 0
    failed: list[str] = field(default_factory=list)
    """Jobs that raised this run (logged whole; the others ran)."""


def _owner(owner: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(owner) if owner else None
    except ValueError:
        return None


async def _recover_uploads(
    sessionmaker: async_sessionmaker[AsyncSession],
    rt: MediaRuntime,
    now: datetime,
    report: JobReport,
) -> None:
    manager = rt.manager
    for info in await anyio.to_thread.run_sync(manager.completed):
        last_activity = info.expires_at - manager.ttl
        if now - last_activity < STALE_COMPLETE:
            continue  # a request is probably finishing it right now
        try:
            async with sessionmaker() as session, session.begin():
                await finish_upload(session, _owner(info.owner), rt, info)
            report.recovered_uploads += 1
        except (MediaError, DomainError) as exc:
            log.warning("discarded a left-over upload %s: %s", info.id, exc)
            await anyio.to_thread.run_sync(manager.discard, info.id)
            report.discarded_uploads += 1


async def run_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    rt: MediaRuntime | None = None,
    now: datetime | None = None,
    checks: CheckPolicy = DEFAULT_POLICY,
) -> JobReport:
    """Run every job once, each in its own transaction, at `now` (the clock's reading). A job
    that fails is logged whole and named in `report.failed`; the others still run."""
    at = now or utcnow()
    report = JobReport()

    async def overdue(s: AsyncSession) -> None:
        report.escalated = await mark_overdue(s, at, zone=checks.local_tz)

    async def alerts(s: AsyncSession) -> None:
        report.retired_alerts = await retire_expired(s, at)

    async def reminders(s: AsyncSession) -> None:
        report.deadline_reminders = await remind_deadlines(s, at, zone=checks.local_tz)

    async def schedule(s: AsyncSession) -> None:
        report.checks = await run_schedule(s, at, checks)

    async def subscriptions(s: AsyncSession) -> None:
        report.lapsed_subscriptions = await lapse_subscriptions(s, at)

    for name, job in (
        ("overdue", overdue),
        ("alerts", alerts),
        ("deadline_reminders", reminders),
        ("self_checks", schedule),
        ("subscriptions", subscriptions),
    ):
        try:
            async with sessionmaker() as session, session.begin():
                await job(session)
        except Exception:
            log.exception("job %s failed; the other jobs go on", name)
            report.failed.append(name)
    if rt is not None:
        try:
            report.expired_uploads = len(await anyio.to_thread.run_sync(rt.manager.expire, at))
            await _recover_uploads(sessionmaker, rt, at, report)
            if isinstance(rt.store, DiskBlobStore):
                report.swept_temp = await anyio.to_thread.run_sync(rt.store.sweep_temp)
        except Exception:
            log.exception("job uploads failed; the other jobs went on")
            report.failed.append("uploads")
    return report


async def _loop(app: Litestar, interval: float) -> None:
    clock: Clock = getattr(app.state, "clock", None) or utc_now
    while True:
        try:
            report = await run_once(
                app.state.sessionmaker,
                app.state.media,
                clock(),
                CheckPolicy.from_settings(app.state.settings),
            )
            if report.escalated:
                log.info("escalated %d overdue hazard(s)", len(report.escalated))
        except Exception:
            # Whatever went wrong, the loop must not end: the next round retries.
            log.exception("hazard jobs failed this round")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def hazard_jobs_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Run the jobs every `hazard_jobs_interval_s` while the app runs (if `background_jobs`)."""
    settings = app.state.settings
    if not settings.background_jobs or settings.hazard_jobs_interval_s <= 0:
        yield
        return
    async with running(_loop(app, settings.hazard_jobs_interval_s)):
        yield
