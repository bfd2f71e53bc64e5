"""One failing background job neither skips the others nor ends the server's job loop."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from server import jobs
from server.db import make_engine, make_sessionmaker
from server.models import utcnow


def test_a_failing_job_is_logged_and_the_others_still_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def broken(session: Any, now: datetime) -> list[Any]:
        raise KeyError("a bug, not a database blip")

    def spy(name: str, real: Any) -> Any:
        async def wrapped(*args: Any) -> Any:
            ran.append(name)
            return await real(*args)

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
