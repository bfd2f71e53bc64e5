"""Background jobs: one failing job neither skips the others nor ends the server's job loop;
their notices show times in the deployment's configured zone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient

from server import jobs
from server.db import make_engine, make_sessionmaker
from server.domain.checks.schedule import CheckPolicy
from server.models import utcnow
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import register_device
from tests.integration.test_notify import messages_for
from tests.integration.test_sync_rectifiers import _assigned_hazard


def test_a_failing_job_is_logged_and_the_others_still_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def broken(session: Any, now: datetime, **_: Any) -> list[Any]:
        raise KeyError("a bug, not a database blip")

    def spy(name: str, real: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            ran.append(name)
            return await real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(jobs, "mark_overdue", broken)  # the first job: the rest must run
    for name in ("retire_expired", "remind_deadlines", "run_schedule", "lapse_subscriptions"):
        monkeypatch.setattr(jobs, name, spy(name, getattr(jobs, name)))

    async def run() -> jobs.JobReport:
        engine = make_engine(database_url)
        try:
            return await jobs.run_once(make_sessionmaker(engine), None, utcnow())
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    assert report.failed == ["overdue"]
    assert ran == ["retire_expired", "remind_deadlines", "run_schedule", "lapse_subscriptions"]
    assert "job overdue failed" in caplog.text and "KeyError" in caplog.text


def test_the_job_loop_survives_any_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    again = asyncio.Event()

    async def flaky(*args: Any) -> jobs.JobReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("not a database error")
        again.set()
        return jobs.JobReport()

    monkeypatch.setattr(jobs, "run_once", flaky)
    app: Any = SimpleNamespace(
        state=SimpleNamespace(
            sessionmaker=None, media=None, settings=SimpleNamespace(), clock=utcnow
        )
    )
    monkeypatch.setattr(
        jobs.CheckPolicy, "from_settings", staticmethod(lambda s: jobs.DEFAULT_POLICY)
    )

    async def run() -> None:
        task = asyncio.create_task(jobs._loop(app, 0.01))
        try:
            await asyncio.wait_for(again.wait(), 5)
        finally:
            task.cancel()

    asyncio.run(run())
    assert calls >= 2


def test_a_deadline_reminder_shows_the_deployments_wall_clock(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    # The deployment's zone comes from its settings (LIANDONG_LOCAL_TZ), not the environment.
    register_device(client, auth("enterprise1"), "zone-enterprise1")
    hid, _ = _assigned_hazard(
        client, auth, assignee_enterprise_id=str(f.did("enterprise:bund-mall"))
    )
    policy = CheckPolicy(local_tz="America/New_York")

    async def run() -> jobs.JobReport:
        engine = make_engine(database_url)
        try:
            later = utcnow() + timedelta(days=2, hours=12)  # the deadline is 3 days away
            return await jobs.run_once(make_sessionmaker(engine), None, later, policy)
        finally:
            await engine.dispose()

    assert asyncio.run(run()).deadline_reminders == [uuid.UUID(hid)]
    got = messages_for(database_url, f"hazard.deadline_soon:{hid}")
    titles = {m.title for m in got.values()}
    assert titles and all(t is not None and t.endswith(("-05:00", "-04:00")) for t in titles)
