"""The self-check loop's rules on both databases: which weeks and photos a submission may name
(REST and sync refuse alike), assignments by hand, kind and area and who may make them,
retiring a template, hazard sources and who may name one, and the completion figures."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.checks import CheckSubmissionCreate
from schemas.common import Role
from schemas.sync import Mutation, Op, Reason
from server.auth.principal import Principal
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.checks import schedule
from server.domain.checks import services as check_services
from server.jobs import JobReport, run_once
from server.models import CheckDue, PushJobRow, utcnow
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db, register_device
from tests.integration.test_media_api import photo, sha
from tests.integration.test_sync_api import push

SUBMIT = "/api/v1/check-submissions"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _template(client: TestClient[Any], auth: Sessions) -> dict[str, Any]:
    r = client.get(f"/api/v1/check-templates/{did('check:weekly')}", headers=auth("enterprise1"))
    return dict(r.json())


def _body(tpl: dict[str, Any], week: str, photo_id: str | None = None) -> dict[str, Any]:
    results: list[dict[str, Any]] = [{"item_id": i["id"], "result": "pass"} for i in tpl["items"]]
    if photo_id is not None:
        results[0] = {"item_id": tpl["items"][0]["id"], "result": "fail", "photo_ids": [photo_id]}
    return {"template_id": tpl["id"], "week": week, "results": results}


def _declare(client: TestClient[Any], headers: dict[str, str]) -> str:
    r = client.post("/api/v1/media", headers=headers, json={"sha256": sha(photo())})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


def test_weeks_and_photos_a_submission_may_name(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    ent = auth("enterprise1")
    tpl = _template(client, auth)
    for week in (f.week(-2), f.week(1), "2099-W01"):
        got = _problem(client.post(SUBMIT, headers=ent, json=_body(tpl, week)), 422)
        assert got["code"] == "week_not_open" and got["errors"][0]["field"] == "week", week
    unknown = _body(tpl, f.week(), str(uuid.uuid4()))
    assert _problem(client.post(SUBMIT, headers=ent, json=unknown), 422)["code"] == "unknown_photo"
    foreign = _body(tpl, f.week(), _declare(client, auth("inspector1")))
    assert _problem(client.post(SUBMIT, headers=ent, json=foreign), 422)["code"] == "foreign_photo"

    # Sync refuses the same, for the same reasons; nothing is written.
    h = int(utcnow().timestamp() * 1000) << 16
    muts = [
        Mutation(
            seq=n, entity="check_submission", id=uuid.uuid4(), hlc=h + n, op=Op.CREATE, fields=b
        )
        for n, b in enumerate((_body(tpl, f.week(-3)), unknown, foreign), start=1)
    ]
    reply = push(client, ent, "dev-rules", muts)
    assert [(a.refusal.code, a.refusal.rule) for a in reply.acks if a.refusal] == [
        (Reason.INVALID_VALUE, "week_not_open"),
        (Reason.INVALID_VALUE, "unknown_photo"),
        (Reason.INVALID_VALUE, "foreign_photo"),
    ]
    assert client.get(SUBMIT, headers=ent).json() == []

    # Last week, within the grace, with the officer's own photo: accepted, one hazard.
    mine = _body(tpl, f.week(-1), _declare(client, ent))
    r = client.post(SUBMIT, headers=ent, json=mine)
    assert r.status_code == 201, r.text
    hazards = client.get(
        "/api/v1/hazards", headers=ent, params={"source": "enterprise_inspection"}
    ).json()["items"]
    assert [h["check_submission_id"] for h in hazards] == [r.json()["id"]]


def test_assignments_select_enterprises_and_only_admins_make_them(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    admin = auth("admin")
    url = "/api/v1/check-assignments"
    for who in ("dispatcher", "enterprise1", "fire1"):
        assert client.get(url, headers=auth(who)).status_code == 403, who
    assert client.get(url).status_code == 401
    none = client.post(url, headers=admin, json={"template_code": "weekly-safety"})
    assert _problem(none, 422)["code"] == "no_selector"
    unknown = {"template_code": "nope", "area_id": str(did("area:huangpu"))}
    assert client.post(url, headers=admin, json=unknown).status_code == 422
    bad_day = {
        "template_code": "weekly-safety",
        "area_id": str(did("area:huangpu")),
        "due_weekday": 8,
    }
    assert client.post(url, headers=admin, json=bad_day).status_code == 400

    # A second enterprise of another kind in the district; one assignment by area, one by kind.
    other = client.post(
        "/api/v1/enterprises",
        headers=admin,
        json={"name": "化工厂 Chem works", "location": f.point(*f.IN_GRID_B), "kind": "chemicals"},
    )
    assert other.status_code == 201, other.text
    assert other.json()["kind"] == "chemicals"
    by_area = {"template_code": "weekly-safety", "area_id": str(did("area:huangpu"))}
    made = client.post(url, headers=admin, json=by_area)
    assert made.status_code == 201, made.text
    now = utcnow()

    async def open_now(session: AsyncSession) -> int:
        return await schedule.open_weeks(session, now)

    # Both enterprises owe this week's check (and no earlier one: the assignment is new).
    assert in_db(database_url, open_now) == 2
    assert in_db(database_url, open_now) == 0  # a second runner opens nothing
    dues = client.get("/api/v1/check-dues", headers=admin).json()
    assert {(d["enterprise_id"], d["week"]) for d in dues} == {
        (str(did("enterprise:bund-mall")), f.week()),
        (other.json()["id"], f.week()),
    }
    # Each sees its own: the grid-B inspector only the chemical works'.
    seen = client.get("/api/v1/check-dues", headers=auth("inspector2")).json()
    assert [d["enterprise_id"] for d in seen] == [other.json()["id"]]
    assert client.get("/api/v1/check-dues", headers=auth("fire1")).status_code == 403

    # Retiring the template: it is no longer due, offered or accepted.
    tpl = _template(client, auth)
    retire = f"/api/v1/check-templates/{tpl['id']}/retire"
    assert client.post(retire, headers=auth("dispatcher")).status_code == 403
    r = client.post(retire, headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    again = client.post(retire, headers={**admin, "Accept-Language": "zh-CN"})
    assert _problem(again, 409)["code"] == "already_inactive"  # as a plan's retirement
    assert again.json()["detail"] == "该检查表模板已停用"
    assert client.get("/api/v1/check-dues", headers=admin).json() == []
    assert in_db(database_url, open_now) == 0
    refused = client.post(SUBMIT, headers=auth("enterprise1"), json=_body(tpl, f.week()))
    assert _problem(refused, 422)["errors"][0]["field"] == "template_id"

    assignment_id = made.json()["id"]
    assert client.delete(f"{url}/{assignment_id}", headers=auth("dispatcher")).status_code == 403
    assert client.delete(f"{url}/{assignment_id}", headers=admin).status_code == 204
    assert client.delete(f"{url}/{assignment_id}", headers=admin).status_code == 404
    assert client.get(url, headers=admin).json() == []


def test_hazard_sources_follow_who_reports(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    def report(who: str, **kw: Any) -> Any:
        return client.post("/api/v1/hazards", headers=auth(who), json=f.hazard(**kw))

    assert report("enterprise1").json()["source"] == "self_reported"
    assert report("inspector1").json()["source"] == "grid_inspection"
    third = report("dispatcher", source="third_party_inspection")
    assert third.status_code == 201 and third.json()["source"] == "third_party_inspection"
    assert report("inspector1", source="third_party_inspection").status_code == 403
    assert report("inspector1", source="grid_inspection").status_code == 201  # its own: fine
    assert report("dispatcher", source="enterprise_inspection").status_code == 422
    listed = client.get(
        "/api/v1/hazards", headers=auth("dispatcher"), params={"source": "third_party_inspection"}
    ).json()["items"]
    assert [h["id"] for h in listed] == [third.json()["id"]]
    assert (
        client.get("/api/v1/hazards", params={"source": "nope"}, headers=auth("admin")).status_code
        == 400
    )


def test_completion_counts_done_late_and_missed(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    admin = auth("admin")
    r = client.post(
        "/api/v1/check-assignments",
        headers=admin,
        json={"template_code": "weekly-safety", "enterprise_id": str(did("enterprise:bund-mall"))},
    )
    assert r.status_code == 201, r.text
    now = utcnow()
    later = now + timedelta(weeks=1)

    async def run(session: AsyncSession) -> None:
        await schedule.open_weeks(session, now)  # this week
        await schedule.run_schedule(session, later)  # next week: this week's is missed

    in_db(database_url, run)
    # Submitted late (within the grace): done, and counted late.
    tpl = _template(client, auth)
    assert (
        client.post(SUBMIT, headers=auth("enterprise1"), json=_body(tpl, f.week())).status_code
        == 201
    )

    def rows(who: Principal) -> Any:
        async def read(session: AsyncSession) -> Any:
            return await schedule.completion(session, who, week_from=f.week(), week_to=f.week(1))

        return in_db(database_url, read)

    # Statistics read them: JSON, or CSV headed in the reader's language.
    url = "/api/v1/stats/self-checks"
    window = {"week_from": f.week(), "week_to": f.week(1)}
    got = client.get(url, headers=admin, params=window)
    assert got.status_code == 200, got.text
    figures = {(r["week"], r["due"], r["done"], r["late"], r["missed"]) for r in got.json()}
    assert figures == {(f.week(), 1, 1, 1, 0), (f.week(1), 1, 0, 0, 0)}
    assert client.get(url, headers=auth("dispatcher"), params=window).json() == got.json()
    elsewhere = {**window, "enterprise_id": str(uuid.uuid4())}
    assert client.get(url, headers=admin, params=elsewhere).json() == []
    for who in ("inspector1", "enterprise1", "fire1"):
        assert client.get(url, headers=auth(who)).status_code == 403, who
    assert client.get(url).status_code == 401
    assert client.get(url, headers=admin, params={"week_from": "2026-48"}).status_code == 400
    bad_week = client.get("/api/v1/check-dues", headers=admin, params={"week": "2026-48"})
    assert bad_week.status_code == 400
    zh = {**admin, "Accept-Language": "zh-CN", "Accept": "text/csv"}
    csv = client.get(url, headers=zh, params=window)
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "企业,周次,应检次数,已检次数,补检次数,漏检"
    assert len(lines) == 3
    outsider = Principal(
        did("user:inspector2"), "inspector2", Role.INSPECTOR, None, None, uuid.uuid4(), "t"
    )
    assert rows(outsider) == []  # grid B's inspector: not his enterprise


def test_racing_job_runners_remind_and_flag_once(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    admin = auth("admin")
    for who in ("enterprise1", "inspector1"):
        register_device(client, auth(who), f"race-{who}")
    body = {
        "template_code": "weekly-safety",
        "enterprise_id": str(did("enterprise:bund-mall")),
        "due_weekday": 7,
    }
    assert client.post("/api/v1/check-assignments", headers=admin, json=body).status_code == 201
    week = f.week()
    saturday = datetime.combine(schedule.due_day(week, 6), time(1), tzinfo=SHANGHAI)
    next_monday = saturday + timedelta(days=2, hours=8)

    def race(at: datetime) -> list[JobReport]:
        async def run() -> list[JobReport]:
            engines = [make_engine(database_url) for _ in range(3)]
            try:
                return list(
                    await asyncio.gather(
                        *(run_once(make_sessionmaker(e), None, at.astimezone(UTC)) for e in engines)
                    )
                )
            finally:
                for engine in engines:
                    await engine.dispose()

        return asyncio.run(run())

    reports = race(saturday)
    assert sum(r.checks.opened for r in reports) == 1
    assert sum(len(r.checks.reminded) for r in reports) == 1
    reports = race(next_monday)
    assert sum(len(r.checks.missed) for r in reports) == 1
    assert sum(r.checks.opened for r in reports) == 1  # next week's

    async def jobs(session: AsyncSession) -> list[tuple[str, str]]:
        rows = await session.execute(
            select(PushJobRow.event_id, PushJobRow.device_id).where(
                PushJobRow.event_id.like("check.%")
            )
        )
        return [(e, d) for e, d in rows.all()]

    queued = in_db(database_url, jobs)
    assert len(queued) == len(set(queued)) == 2  # one reminder, one missed flag, one device each


def test_a_reminder_claimed_by_a_concurrent_runner_is_not_sent_again(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    """Two runners read the same due row; the second waits on the first's claim and, once the
    first commits, finds it taken (PostgreSQL's READ COMMITTED; SQLite serialises writers)."""
    body = {
        "template_code": "weekly-safety",
        "enterprise_id": str(did("enterprise:bund-mall")),
        "due_weekday": 7,
    }
    made = client.post("/api/v1/check-assignments", headers=auth("admin"), json=body)
    assert made.status_code == 201, made.text
    at = datetime.combine(schedule.due_day(f.week(), 6), time(1), tzinfo=SHANGHAI).astimezone(UTC)
    in_db(database_url, lambda s: schedule.open_weeks(s, at))

    async def interleaved() -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        one, two = make_engine(database_url), make_engine(database_url)
        try:
            async with make_sessionmaker(one)() as first:
                await first.begin()
                won = await schedule.remind_due(first, at)  # claimed, not committed yet
                async with make_sessionmaker(two)() as second, second.begin():
                    late = asyncio.create_task(schedule.remind_due(second, at))
                    await asyncio.sleep(0.5)  # the second runner reads, then waits on the row
                    await first.commit()
                    return won, await late
        finally:
            await one.dispose()
            await two.dispose()

    won, lost = asyncio.run(interleaved())
    assert len(won) == 1 and lost == []


def test_opening_a_week_inserts_in_bounded_chunks_and_only_what_is_missing(
    client: TestClient[Any], auth: Sessions, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = auth("admin")
    for n in range(3):
        body = {"name": f"商铺 {n}", "location": f.point(*f.IN_GRID_B)}
        assert client.post("/api/v1/enterprises", headers=admin, json=body).status_code == 201
    by_area = {"template_code": "weekly-safety", "area_id": str(did("area:huangpu"))}
    assert client.post("/api/v1/check-assignments", headers=admin, json=by_area).status_code == 201
    monkeypatch.setattr(schedule, "INSERT_ROWS", 3, raising=False)  # 4 enterprises: two INSERTs
    now = utcnow()

    def opened() -> tuple[int, list[str]]:
        statements: list[str] = []

        async def run() -> int:
            engine = make_engine(database_url)
            event.listen(
                engine.sync_engine,
                "before_cursor_execute",
                lambda _c, _cur, stmt, *_rest: statements.append(stmt),
            )
            try:
                async with make_sessionmaker(engine)() as session, session.begin():
                    return await schedule.open_weeks(session, now)
            finally:
                await engine.dispose()

        return asyncio.run(run()), statements

    made, first = opened()
    assert made == 4
    assert sum(s.startswith("INSERT INTO check_due") for s in first) == 2
    assert sum("FROM check_templates" in s for s in first) == 1  # one query for all codes
    again, second = opened()
    assert again == 0
    assert not [s for s in second if s.startswith("INSERT")]  # nothing new: nothing written


def test_a_submission_dates_its_weeks_row_in_the_deployments_zone(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    # A deployment far from Shanghai (LIANDONG_LOCAL_TZ): the row a submission opens ends the
    # week at that zone's midnight, as the schedule's own rows do.
    policy = schedule.CheckPolicy(local_tz="America/Los_Angeles")
    tpl = _template(client, auth)
    week = schedule.week_of(utcnow(), policy)
    staff = Principal(
        did("user:enterprise1"),
        "enterprise1",
        Role.ENTERPRISE_STAFF,
        did("org:enterprise"),
        None,
        uuid.uuid4(),
        "t",
    )

    async def submit(session: AsyncSession) -> datetime:
        data = msgspec.convert(_body(tpl, week), CheckSubmissionCreate)
        row, _ = await check_services.submit(session, staff, data, policy=policy)
        due = await session.scalar(select(CheckDue).where(CheckDue.submission_id == row.id))
        assert due is not None
        return due.due_at

    got = in_db(database_url, submit)
    got = got if got.tzinfo else got.replace(tzinfo=UTC)  # SQLite reads UTC back naive
    assert got.astimezone(UTC) == schedule.week_end(week, policy).astimezone(UTC)


def test_a_deactivated_enterprise_owes_no_more_checks(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    admin = auth("admin")
    ent = str(did("enterprise:bund-mall"))
    body = {"template_code": "weekly-safety", "enterprise_id": ent}
    made = client.post("/api/v1/check-assignments", headers=admin, json=body)
    assert made.status_code == 201, made.text
    now = utcnow()
    assert in_db(database_url, lambda s: schedule.open_weeks(s, now)) == 1
    off = client.post(f"/api/v1/enterprises/{ent}/deactivate", headers=admin)
    assert off.status_code == 200, off.text
    assert client.get("/api/v1/check-dues", headers=admin).json() == []  # withdrawn
    # Neither a reminder nor a missed flag follows.
    report = in_db(database_url, lambda s: schedule.run_schedule(s, now + timedelta(weeks=1)))
    assert (report.opened, report.reminded, report.missed) == (0, [], [])
