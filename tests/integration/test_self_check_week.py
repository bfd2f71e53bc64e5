"""Issue 12's Done-when, one run per database: an enterprise through a week of its safety
self-check (企业安全周检查). The check is due and its phone holds it; the reminder goes out; the
officer submits offline through the real sync client with one failed item and a photo; the
hazard appears with the photo and the inspector is told; the next week's check is missed and
flagged; the enterprise rectifies, the inspector is told, re-inspects and closes. Pushes are
read from the outbox (each recipient's jobs, in their saved language: the inspector and one
officer read English, the other officer Chinese); the story's refusals (a role that may not
assign checks, a second submission of the week) are read in Chinese and in English, with the
same machine-readable parts. The time-driven steps run the real jobs
(`server.jobs.run_once`) at the readings of a `ManualClock`; the requests run at real time."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.sync import Op
from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.checks import schedule
from server.domain.sync.lifespan import synced_sessionmaker
from server.jobs import JobReport, run_once
from server.models import Hazard, PushJobRow
from tests import factories as f
from tests.clocks import ManualClock
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db, register_device
from tests.integration.sync_helpers import Phone
from tests.integration.test_hazard_loop import deadline, step
from tests.integration.test_media_api import photo, sha, upload
from tests.integration.test_notify import messages_for, set_language

SHANGHAI = ZoneInfo("Asia/Shanghai")
POLICY = schedule.CheckPolicy()


def jobs_at(settings: Settings, clock: ManualClock) -> JobReport:
    """One pass of the server's periodic jobs at the clock's reading."""

    async def run() -> JobReport:
        engine = make_engine(settings.database_url)
        try:
            # As the server's own job loop and `liandong jobs run-once` do: synced sessions, so
            # what the jobs write reaches the phones.
            sessions = synced_sessionmaker(make_sessionmaker(engine))["sessionmaker"]
            return await run_once(sessions, None, clock(), POLICY)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def local(week: str, weekday: int, hour: int) -> datetime:
    """A Shanghai wall-clock time in `week` as UTC."""
    day = schedule.due_day(week, weekday)
    return datetime.combine(day, time(hour), tzinfo=SHANGHAI).astimezone(UTC)


def count(database_url: str, stmt: Any) -> int:
    async def read(session: AsyncSession) -> int:
        return int((await session.execute(stmt)).scalar_one())

    return in_db(database_url, read)


HAN = re.compile(r"[\u4e00-\u9fff]")


def told_in_both(send: Callable[[dict[str, str]], Any], status: int) -> None:
    """The same refusal asked for in Chinese and in English: the words change, the
    machine-readable parts (`type`, `code`, `status`, field names) do not."""
    said = {}
    for lang in ("zh-CN", "en"):
        r = send({"Accept-Language": lang})
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        said[lang] = r.json()
    zh, en = said["zh-CN"], said["en"]
    assert {k: zh.get(k) for k in ("type", "code", "status")} == {
        k: en.get(k) for k in ("type", "code", "status")
    }
    assert HAN.search(zh["title"]) and not HAN.search(en["title"] + str(en.get("detail", "")))


def test_an_enterprise_through_a_week_of_self_checks(
    client: TestClient[Any], auth: Sessions, database_url: str, settings: Settings
) -> None:
    admin, ent, insp, disp = (auth(u) for u in ("admin", "enterprise1", "inspector1", "dispatcher"))
    set_language(client, insp, "en")
    made = client.post(
        "/api/v1/users", headers=admin, json=f.user("enterprise_staff", "enterprise", language="en")
    )
    assert made.status_code == 201, made.text
    officer_en = auth(made.json()["username"], "correct horse battery")
    for who, headers in (("ent", ent), ("ent-en", officer_en), ("insp", insp), ("disp", disp)):
        register_device(client, headers, who)
    users = {
        "enterprise1": str(did("user:enterprise1")),
        "officer_en": made.json()["id"],
        "inspector1": str(did("user:inspector1")),
    }
    staff = {users["enterprise1"], users["officer_en"]}
    mall = str(did("enterprise:bund-mall"))

    # An administrator assigns the weekly template to the mall, due on Sundays.
    assignment = {"template_code": "weekly-safety", "enterprise_id": mall, "due_weekday": 7}
    for who in ("dispatcher", "inspector1", "enterprise1"):
        denied = client.post("/api/v1/check-assignments", headers=auth(who), json=assignment)
        assert denied.status_code == 403, who
    told_in_both(
        lambda h: client.post("/api/v1/check-assignments", headers={**ent, **h}, json=assignment),
        403,
    )
    r = client.post("/api/v1/check-assignments", headers=admin, json=assignment)
    assert r.status_code == 201, r.text

    # Monday morning: the week opens; the officer's phone holds the week's check, due.
    week = f.week()
    clock = ManualClock()
    clock.now = local(week, 1, 9)
    assert jobs_at(settings, clock).checks.opened == 1
    dues = client.get("/api/v1/check-dues", headers=ent).json()
    assert [(d["week"], d["status"]) for d in dues] == [(week, "due")]
    due_id = dues[0]["id"]
    phone = Phone(client, ent)
    try:
        phone.sync()
        held = phone.get("check_due", due_id)
        assert held is not None and held["status"] == "due" and held["week"] == week
        assert client.get("/api/v1/check-dues", headers=auth("inspector2")).json() == []

        # Saturday: the reminder, to both officers, each in their language; once.
        clock.now = local(week, 6, 0) + timedelta(minutes=30)
        assert jobs_at(settings, clock).checks.reminded == [uuid.UUID(due_id)]
        assert jobs_at(settings, clock).checks.reminded == []
        got = messages_for(database_url, f"check.due_soon:{due_id}")
        assert set(got) == staff
        due_on = schedule.due_day(week, 7).isoformat()
        assert got[users["enterprise1"]].title == f"安全周检查将于 {due_on} 到期"
        assert got[users["officer_en"]].title == f"Weekly safety check due {due_on}"
        assert got[users["officer_en"]].data["record"] == "check_due"

        # Offline, the officer fills in the checklist: item 3 fails, with a note and a photo.
        data = photo()
        assert upload(client, ent, data).status_code in (200, 201)
        media = client.post("/api/v1/media", headers=ent, json={"sha256": sha(data)}).json()
        tpl = client.get(f"/api/v1/check-templates/{did('check:weekly')}", headers=ent).json()
        failed_item = tpl["items"][2]
        results: list[dict[str, Any]] = [
            {"item_id": i["id"], "result": "pass"} for i in tpl["items"]
        ]
        results[2] = {
            "item_id": failed_item["id"],
            "result": "fail",
            "note": "配电箱旁私拉电线",
            "photo_ids": [media["id"]],
        }
        sid = uuid.uuid4()
        fields = {"template_id": tpl["id"], "week": week, "results": results}
        phone.store.write("check_submission", sid, fields, op=Op.CREATE)
        phone.sync()
        assert phone.store.pending_count() == 0 and not phone.store.log_entries("refused")
        assert phone.get("check_due", due_id)["status"] == "done"  # type: ignore[index]

        # The hazard is there at once, with the photo and the way back to the item.
        listed = client.get(
            "/api/v1/hazards", headers=insp, params={"source": "enterprise_inspection"}
        ).json()["items"]
        assert len(listed) == 1, listed
        hazard = listed[0]
        assert hazard["check_submission_id"] == str(sid)
        assert hazard["check_item_id"] == failed_item["id"]
        assert hazard["category"] == failed_item["category"] == "electrical"
        assert hazard["enterprise_id"] == mall and hazard["grid_id"] == str(did("grid:A"))
        assert "配电箱旁私拉电线" in hazard["description"]
        assert [p["media_id"] for p in hazard["photos"]] == [media["id"]]
        assert hazard["photos"][0]["status"] == "stored"
        phone.sync()
        mirrored = phone.get("hazard", hazard["id"])
        assert mirrored is not None and mirrored["source"] == "enterprise_inspection"
        hid = hazard["id"]
        # The inspector is told, in English; the officer who reported is not.
        got = messages_for(database_url, f"hazard.reported:{hid}")
        assert set(got) == {users["inspector1"]}
        assert got[users["inspector1"]].title == "New hazard in your grid"
        assert got[users["inspector1"]].body.startswith("electrical hazard (medium severity)")  # type: ignore[union-attr]

        # However often the submission arrives, the item opens one hazard.
        again = client.post(
            "/api/v1/check-submissions", headers=ent, json={**fields, "id": str(sid)}
        )
        assert again.status_code == 200, again.text
        twin = client.post("/api/v1/check-submissions", headers=ent, json=fields)
        assert twin.status_code == 409
        told_in_both(
            lambda h: client.post("/api/v1/check-submissions", headers={**ent, **h}, json=fields),
            409,
        )
        opened = select(func.count()).select_from(Hazard).where(Hazard.check_submission_id == sid)
        assert count(database_url, opened) == 1
    finally:
        phone.close()

    # The next week nobody submits: the week after, it is flagged missed and the inspector told.
    clock.now = local(schedule.week_offset(week, 1), 1, 9)
    assert jobs_at(settings, clock).checks.opened == 1
    clock.now = local(schedule.week_offset(week, 2), 1, 9)
    report = jobs_at(settings, clock)
    assert len(report.checks.missed) == 1
    assert jobs_at(settings, clock).checks.missed == []
    missed = client.get("/api/v1/check-dues", headers=insp, params={"status": "missed"}).json()
    assert [d["week"] for d in missed] == [schedule.week_offset(week, 1)]
    got = messages_for(database_url, f"check.missed:{missed[0]['id']}")
    assert set(got) == {users["inspector1"]}
    assert got[users["inspector1"]].title == "Weekly safety check missed"
    assert schedule.week_offset(week, 1) in (got[users["inspector1"]].body or "")

    # The hazard runs the loop: assigned to the mall (both officers told, with the deadline).
    assert step(client, disp, hid, "verified").status_code == 201
    due_by = deadline(3)
    r = step(
        client,
        disp,
        hid,
        "rectification_assigned",
        deadline=due_by,
        assignee_enterprise_id=mall,
    )
    assert r.status_code == 201, r.text
    got = messages_for(database_url, "hazard.rectification_assigned:")
    assert set(got) == staff
    assert got[users["enterprise1"]].title.startswith("隐患整改，期限 20")  # type: ignore[union-attr]  # noqa: RUF001
    assert got[users["officer_en"]].title.startswith("Hazard to rectify by 20")  # type: ignore[union-attr]
    # A day before the deadline, the rectifier is reminded, once.
    clock.now = datetime.fromisoformat(due_by) - timedelta(hours=12)
    assert jobs_at(settings, clock).deadline_reminders == [uuid.UUID(hid)]
    assert jobs_at(settings, clock).deadline_reminders == []
    got = messages_for(database_url, f"hazard.deadline_soon:{hid}")
    assert set(got) == staff and got[users["enterprise1"]].title.startswith("整改即将到期")  # type: ignore[union-attr]

    # Rectified with an after-photo: the inspector is told, re-inspects and closes.
    after = photo()
    r = step(client, ent, hid, "rectified", note="已重新布线", photo_sha256=[sha(after)])
    assert r.status_code == 201, r.text
    got = messages_for(database_url, "hazard.rectified:")
    assert set(got) == {users["inspector1"]}
    assert got[users["inspector1"]].title == "Rectified: please re-inspect"
    assert step(client, insp, hid, "reinspected", note="复查合格").status_code == 201
    assert step(client, insp, hid, "closed").status_code == 201
    closed = client.get(f"/api/v1/hazards/{hid}", headers=insp).json()
    assert closed["status"] == "closed" and closed["source"] == "enterprise_inspection"

    # Every push of the story went out once per device.
    per_event = (
        select(func.count())
        .select_from(PushJobRow)
        .group_by(PushJobRow.event_id, PushJobRow.device_id)
        .order_by(func.count().desc())
        .limit(1)
    )
    assert count(database_url, per_event) == 1
