"""The notification layer (server/notify.py) on both databases: a user's saved language and who
may set it; pushes queued in each recipient's language; one definition of a unit's active
members for choosing units and for telling them."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from push.base import PushMessage
from server.demo import did
from server.models import PushJobRow
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db, register_device


def messages_for(database_url: str, event_prefix: str) -> dict[str, PushMessage]:
    """Queued messages whose event starts with `event_prefix`, by the recipient's user id."""

    async def read(session: AsyncSession) -> dict[str, PushMessage]:
        rows = await session.execute(
            select(PushJobRow.user_id, PushJobRow.message).where(
                PushJobRow.event_id.startswith(event_prefix)
            )
        )
        return {str(u): msgspec.json.decode(m, type=PushMessage) for u, m in rows.all()}

    return in_db(database_url, read)


def set_language(client: TestClient[Any], headers: dict[str, str], lang: str) -> dict[str, Any]:
    r = client.patch("/api/v1/auth/me", headers=headers, json={"language": lang})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_user_saves_their_language_and_an_admin_can_set_it(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    fire = auth("fire1")
    assert client.get("/api/v1/auth/me", headers=fire).json()["language"] == "zh_CN"
    assert set_language(client, fire, "en")["language"] == "en"
    assert client.get("/api/v1/auth/me", headers=fire).json()["language"] == "en"

    bad = client.patch("/api/v1/auth/me", headers=fire, json={"language": "fr"})
    assert bad.status_code == 400, bad.text
    assert client.patch("/api/v1/auth/me", json={"language": "en"}).status_code == 401

    target = f"/api/v1/users/{did('user:fire1')}"
    for who in ("fire1", "dispatcher", "inspector1"):
        denied = client.patch(target, headers=auth(who), json={"language": "zh_CN"})
        assert denied.status_code == 403, (who, denied.text)
    ok = client.patch(target, headers=auth("admin"), json={"language": "zh_CN"})
    assert ok.status_code == 200 and ok.json()["language"] == "zh_CN", ok.text
    missing = client.patch(
        f"/api/v1/users/{uuid.uuid4()}", headers=auth("admin"), json={"language": "en"}
    )
    assert missing.status_code == 404
    audit = client.get(
        "/api/v1/audit", headers=auth("admin"), params={"entity_id": str(did("user:fire1"))}
    ).json()
    saved = [e["detail"]["language"] for e in audit if e["action"] == "set_language"]
    assert sorted(saved) == ["en", "zh_CN"]

    made = client.post(
        "/api/v1/users", headers=auth("admin"), json=f.user("responder", "fire", language="en")
    )
    assert made.status_code == 201 and made.json()["language"] == "en", made.text


def test_a_task_push_reaches_each_member_in_their_own_language(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    admin = auth("admin")
    second = client.post(
        "/api/v1/users", headers=admin, json=f.user("responder", "fire", language="en")
    ).json()
    other = auth(second["username"], "correct horse battery")
    register_device(client, auth("fire1"), "fire1")
    register_device(client, other, "fire-en")

    task = client.post(
        "/api/v1/tasks", headers=auth("dispatcher"), json=f.task(title="化工品泄漏 leak")
    )
    assert task.status_code == 201, task.text
    got = messages_for(database_url, "task.assigned:")
    zh, en = got[str(did("user:fire1"))], got[second["id"]]
    assert zh.data["notice_title"] == "新任务：化工品泄漏 leak"  # noqa: RUF001
    assert en.data["notice_title"] == "New task: 化工品泄漏 leak"
    for m in (zh, en):  # data-only, the same machine-readable parts
        assert m.title is None and m.data["task_id"] == task.json()["id"]
        assert m.data["record"] == "task" and m.data["kind"] == "task.assigned"

    # A unit without an active member is not chosen, and nobody is told: one definition.
    for user in (str(did("user:fire1")), second["id"]):
        assert client.post(f"/api/v1/users/{user}/disable", headers=admin).status_code == 200
    alone = client.post(
        "/api/v1/tasks", headers=auth("dispatcher"), json=f.task(title="nobody home")
    )
    assert alone.status_code == 201
    assert not any(
        m.data.get("task_id") == alone.json()["id"]
        for m in messages_for(database_url, "task.assigned:").values()
    )


def test_each_hazard_step_tells_the_next_person_once_in_their_language(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    from tests.integration.test_hazard_loop import deadline, step
    from tests.integration.test_media_api import photo, sha

    insp, ent, disp = auth("inspector1"), auth("enterprise1"), auth("dispatcher")
    for who in ("inspector1", "enterprise1", "dispatcher"):
        register_device(client, auth(who), who)
    set_language(client, ent, "en")
    users = {who: str(did(f"user:{who}")) for who in ("inspector1", "enterprise1", "dispatcher")}

    # A low-severity report by enterprise staff: the grid's inspector only.
    low = client.post(
        "/api/v1/hazards",
        headers=ent,
        json=f.hazard(severity="low", description="消防通道堵塞", category="fire"),
    )
    assert low.status_code == 201, low.text
    hid = low.json()["id"]
    got = messages_for(database_url, f"hazard.reported:{hid}")
    assert set(got) == {users["inspector1"]}
    m = got[users["inspector1"]]
    assert (m.title, m.body) == ("您的网格有新隐患", "消防隐患（低风险）：消防通道堵塞")  # noqa: RUF001
    assert (m.data["record"], m.data["record_id"]) == ("hazard", hid)
    # A critical one also reaches the area's dispatchers (the reporter is not told).
    high = client.post("/api/v1/hazards", headers=insp, json=f.hazard(severity="critical"))
    assert set(messages_for(database_url, f"hazard.reported:{high.json()['id']}")) == {
        users["dispatcher"]
    }

    # Assigned to the enterprise: its staff, in English, with the deadline.
    assert step(client, disp, hid, "verified").status_code == 201
    r = step(
        client,
        disp,
        hid,
        "rectification_assigned",
        deadline=deadline(),
        assignee_enterprise_id=str(did("enterprise:bund-mall")),
    )
    assert r.status_code == 201, r.text
    got = messages_for(database_url, "hazard.rectification_assigned:")
    assert set(got) == {users["enterprise1"]}
    assert got[users["enterprise1"]].title.startswith("Hazard to rectify by 20")  # type: ignore[union-attr]

    # Rectified: the inspector who must re-inspect; a retried step tells nobody again.
    body = {"photo_sha256": [sha(photo())], "id": str(uuid.uuid4())}
    assert step(client, ent, hid, "rectified", **body).status_code == 201
    assert step(client, ent, hid, "rectified", **body).status_code == 200
    got = messages_for(database_url, "hazard.rectified:")
    assert set(got) == {users["inspector1"]}
    assert got[users["inspector1"]].title == "已整改，请复查"  # noqa: RUF001

    # Reopened: the rectifier, with the reason.
    assert step(client, insp, hid, "reopened", note="照片看不清").status_code == 201
    got = messages_for(database_url, "hazard.reopened:")
    assert set(got) == {users["enterprise1"]}
    assert got[users["enterprise1"]].body == "Reason: 照片看不清"

    async def jobs_per_event(session: AsyncSession) -> list[int]:
        from sqlalchemy import func

        rows = await session.execute(
            select(func.count())
            .select_from(PushJobRow)
            .where(PushJobRow.event_id.startswith("hazard."))
            .group_by(PushJobRow.event_id, PushJobRow.user_id)
        )
        return list(rows.scalars())

    assert set(in_db(database_url, jobs_per_event)) == {1}  # each step once per device
