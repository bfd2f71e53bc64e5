"""Issue 5's Done-when scenario and the push path: the real app with its outbox worker in the
lifespan, the real firebase-admin SDK, and the FCM v1 stand-in on loopback. No Google."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import firebase_admin
import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from push.base import Channel, Delivered, PushMessage
from push.fcm import FcmSender, firebase_app
from push.outbox import OutboxWorker
from server.app import create_app
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.dispatch.escalation import escalate_due
from server.models import AuditLog, Device, PushJobRow, utcnow
from server.outbox import SqlOutboxStore
from tests import factories as f
from tests.conftest import Sessions, fresh_database, make_settings
from tests.integration.dispatch_helpers import (
    in_db,
    nearest,
    register_device,
    tasks_of,
    unit_key,
    unit_locations,
)
from tests.peers.fcm_standin import UNREGISTERED, FcmStandIn, quota_exceeded

PROJECT = "liandong-test"


@pytest.fixture(scope="module")
def standin() -> Iterator[FcmStandIn]:
    with FcmStandIn() as s:
        yield s


@pytest.fixture(scope="module")
def push_client(
    database_url: str, standin: FcmStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient[Any]]:
    """The real app with FCM pointed at the stand-in and the outbox worker in its lifespan."""
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("push-var"),
        fcm_project_id=PROJECT,
        fcm_endpoint=standin.base_url,
        background_jobs=True,
        outbox_poll_s=0.2,
        escalate_poll_s=3600.0,
    )
    with TestClient(app=create_app(settings)) as c:
        yield c


def _wait_tokens(standin: FcmStandIn, tokens: set[str], deadline: float) -> dict[str, Any]:
    """Messages for these tokens (token -> message) once all arrived or the deadline passed."""
    while True:
        got = {m.token: m for m in standin.messages() if m.token in tokens}
        if set(got) == tokens or time.perf_counter() > deadline:
            return got
        time.sleep(0.005)


def test_done_when_hazmat_leak_level_ii(
    push_client: TestClient[Any], auth: Sessions, standin: FcmStandIn, database_url: str
) -> None:
    client = push_client
    d = auth("dispatcher")
    tokens = {
        "fire1": register_device(client, auth("fire1"), "fire1"),
        "ems1": register_device(client, auth("ems1"), "ems1"),
        "police1": register_device(client, auth("police1"), "police1"),
    }
    dispatcher_token = register_device(client, d, "dispatcher")
    at = f.IN_GRID_A

    inc = client.post(
        "/api/v1/incidents",
        headers=d,
        json=f.incident(at=at, type="hazmat_leak", level=2, title="化工品泄漏 chemical leak"),
    )
    committed = time.perf_counter()
    assert inc.status_code == 201, inc.text
    incident_id = inc.json()["id"]

    # Each responder's device gets a data message within one second of the commit.
    got = _wait_tokens(standin, set(tokens.values()), committed + 1.0)
    assert set(got) == set(tokens.values()), f"late or missing pushes: {sorted(got)}"

    tasks = tasks_of(client, d, incident_id)
    by_kind = {t["template_key"]: t for t in tasks}
    assert set(by_kind) == {"fire", "ems", "police"}
    locations = unit_locations(client, d)
    for kind, task in by_kind.items():
        assert unit_key(task["assignee_unit_id"]) == nearest(kind, at, locations)[0], kind
        assert task["status"] == "assigned" and task["accept_by"] is not None
    for user, token in tokens.items():
        data = got[token].message["data"]
        assert data["kind"] == "task.assigned"
        assert data["task_id"] == by_kind[user.rstrip("1")]["id"]
        assert data["event_id"].startswith("task.assigned:")
        assert "notification" not in got[token].message  # data-only: the app decides how to ring

    # The fire responder works the task with GPS at every step.
    fire, fire_task = auth("fire1"), by_kind["fire"]["id"]
    for i, step in enumerate(("accepted", "en_route", "on_scene", "completed")):
        body: dict[str, Any] = {
            "to_status": step,
            "device_id": "phone-fire1",
            "location": f.point(121.4800 + i * 0.001, 31.2300 + i * 0.002),
            "accuracy_m": 6.0,
        }
        if step == "completed":
            body["note"] = "leak plugged, area diluted"
        r = client.post(f"/api/v1/tasks/{fire_task}/transitions", headers=fire, json=body)
        assert r.status_code == 201, r.text
        assert r.json()["location"]["coordinates"] == body["location"]["coordinates"]
    timeline = client.get(f"/api/v1/incidents/{incident_id}/timeline", headers=d).json()
    fire_steps = [e["to_status"] for e in timeline if e["task_id"] == fire_task]
    assert fire_steps == ["assigned", "accepted", "en_route", "on_scene", "completed"]
    assert all(e["location"] for e in timeline if e["task_id"] == fire_task and e["from_status"])

    # An illegal jump is refused.
    ems_task = by_kind["ems"]["id"]
    jump = client.post(
        f"/api/v1/tasks/{ems_task}/transitions",
        headers=auth("ems1"),
        json={"to_status": "completed"},
    )
    assert jump.status_code == 409 and jump.json()["code"] == "illegal_transition"

    # The dispatcher sees the fire responder's last position and task.
    units = client.get("/api/v1/units/positions", headers=d).json()
    fire_unit = next(u for u in units if u["unit_id"] == str(did("org:fire")))
    me = next(r for r in fire_unit["responders"] if r["user_id"] == str(did("user:fire1")))
    assert me["location"]["coordinates"] == [121.483, 31.236]

    # Nobody accepts the police task: three minutes later it escalates, and dispatch is told.
    police_task = by_kind["police"]["id"]
    later = utcnow() + timedelta(minutes=3, seconds=1)
    flagged = in_db(database_url, lambda s: escalate_due(s, later))
    assert police_task in {str(t) for t in flagged}
    assert in_db(database_url, lambda s: escalate_due(s, later)) == []  # wins once
    r = client.get(f"/api/v1/tasks/{police_task}", headers=d).json()
    assert r["escalated_at"] is not None and r["status"] == "assigned"
    client.post("/api/v1/tasks", headers=d, json=f.task())  # any commit wakes the worker
    got = _wait_tokens(standin, {dispatcher_token}, time.perf_counter() + 3.0)
    assert got[dispatcher_token].message["data"]["kind"] == "task.escalated"

    # The statistics show the response times.
    stats = client.get("/api/v1/stats/response-times", headers=d).json()
    fire_row = next(row for row in stats if row["unit_kind"] == "fire")
    assert fire_row["accepted"] >= 1 and fire_row["accept_p50_s"] is not None
    assert fire_row["on_scene_p90_s"] is not None
    escalated = client.get("/api/v1/stats/escalated-tasks", headers=d).json()
    assert police_task in {t["task_id"] for t in escalated}


def test_dead_token_is_pruned_at_once(
    push_client: TestClient[Any], auth: Sessions, standin: FcmStandIn, database_url: str
) -> None:
    power = auth("power1")
    token = register_device(push_client, power, "power1-dead")
    standin.always(token, UNREGISTERED)
    r = push_client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task(unit="power"))
    assert r.status_code == 201

    async def registered(session: AsyncSession) -> int:
        rows = await session.execute(select(Device.id).where(Device.token == token))
        return len(rows.all())

    deadline = time.monotonic() + 5
    while in_db(database_url, registered) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_db(database_url, registered) == 0

    async def pruned(session: AsyncSession) -> int:
        rows = await session.execute(select(AuditLog.id).where(AuditLog.action == "prune_push"))
        return len(rows.all())

    assert in_db(database_url, pruned) >= 1


def test_retry_after_429_is_honoured(
    push_client: TestClient[Any], auth: Sessions, standin: FcmStandIn
) -> None:
    gas = auth("gas1")
    token = register_device(push_client, gas, "gas1-429")
    standin.script(token, quota_exceeded(retry_after="2"))
    start = time.perf_counter()
    r = push_client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task(unit="gas"))
    assert r.status_code == 201
    got = _wait_tokens(standin, {token}, start + 8.0)
    assert token in got, "never delivered after the 429"
    # Refused once with Retry-After: 2; the worker waited at least that long before retrying.
    assert time.perf_counter() - start >= 2.0


def test_reassign_pushes_to_the_new_assignee_and_cancel_tells_them(
    push_client: TestClient[Any], auth: Sessions, standin: FcmStandIn
) -> None:
    d = auth("dispatcher")
    token = register_device(push_client, auth("gas1"), "gas1-reassign")
    task = push_client.post("/api/v1/tasks", headers=d, json=f.task(unit="power")).json()
    start = time.perf_counter()
    r = push_client.patch(
        f"/api/v1/tasks/{task['id']}", headers=d, json={"assignee_unit_id": str(did("org:gas"))}
    )
    assert r.status_code == 200, r.text
    got = _wait_tokens(standin, {token}, start + 2.0)
    assert got[token].message["data"]["task_id"] == task["id"]
    timeline = push_client.get(f"/api/v1/tasks/{task['id']}/timeline", headers=d).json()
    assert [e["to_status"] for e in timeline] == ["assigned", "assigned"]
    assert timeline[1]["note"] == "reassigned by dispatch"

    cancel = push_client.post(
        f"/api/v1/tasks/{task['id']}/transitions", headers=d, json={"to_status": "cancelled"}
    )
    assert cancel.status_code == 201
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline:
        kinds = [m.message["data"]["kind"] for m in standin.messages() if m.token == token]
        if "task.cancelled" in kinds:
            break
        time.sleep(0.01)
    assert "task.cancelled" in kinds
    refused = push_client.patch(
        f"/api/v1/tasks/{task['id']}", headers=d, json={"assignee_unit_id": str(did("org:fire"))}
    )
    assert refused.status_code == 409


# ---- the SQL outbox store under crashes and concurrent claimers (a scratch database, driven by an
# injected clock, so the app's worker above never sees these jobs) ------------------------------


@pytest.fixture(scope="module")
def scratch_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_database(backend, tmp_path_factory.mktemp("outbox"), scratch="liandong_outbox")


def _jobs(n: int, at: datetime) -> list[dict[str, Any]]:
    body = msgspec.json.encode(PushMessage(data={"kind": "task.assigned"})).decode()
    tag = uuid.uuid4().hex[:8]
    return [
        {
            "id": uuid.uuid4(),
            "event_id": f"ev-{tag}-{i}",
            "device_id": f"dev-{tag}-{i}",
            "channel": "fcm",
            "address": f"tok-{tag}-{i}",
            "message": body,
            "state": "pending",
            "attempts": 0,
            "not_before": at,
            "created_at": at,
        }
        for i in range(n)
    ]


def test_one_event_is_never_delivered_twice_across_a_worker_crash(
    scratch_url: str, standin: FcmStandIn
) -> None:
    t0 = datetime(2031, 1, 1, tzinfo=UTC)
    rows = _jobs(1, t0)
    token = rows[0]["address"]

    async def scenario(app: firebase_admin.App) -> None:
        engine = make_engine(scratch_url)
        sessions = make_sessionmaker(engine)
        async with sessions() as s, s.begin():
            await s.execute(insert(PushJobRow.__table__).values(rows))
        sender = FcmSender(app, endpoint=standin.base_url)
        store = SqlOutboxStore(sessions)
        try:
            # Worker A sends and records the delivery, then dies before closing the job.
            [job] = await store.claim_due(now=t0, limit=10, lease_for=timedelta(seconds=60))
            assert isinstance(await sender.send(job.address, job.message), Delivered)
            assert await store.record_delivery(job, at=t0, provider_id="x")
            assert not await store.record_delivery(job, at=t0, provider_id="x")  # insert-if-absent
            # While A's lease is live nobody else gets the job.
            assert await store.claim_due(now=t0, limit=10, lease_for=timedelta(seconds=60)) == []
            # Worker B after the lease ran out: finds the delivery record, closes without sending.
            later = t0 + timedelta(seconds=61)
            worker = OutboxWorker(store, {Channel.FCM: sender}, clock=lambda: later)
            report = await worker.run_once()
            assert (report.claimed, report.skipped_duplicates, report.delivered) == (1, 1, 0)
            # A wakes up: its lease is gone, so it changes nothing.
            assert not await store.mark_delivered(job, at=later)
            async with sessions() as s:
                state = await s.scalar(
                    select(PushJobRow.state).where(PushJobRow.id == rows[0]["id"])
                )
            assert state == "delivered"
        finally:
            await engine.dispose()

    app = firebase_app(PROJECT, name=f"crash-{uuid.uuid4().hex[:6]}", http_timeout=5)
    try:
        asyncio.run(scenario(app))
    finally:
        firebase_admin.delete_app(app)  # outside the loop: the SDK closes with asyncio.run
    assert [m.token for m in standin.messages()].count(token) == 1


def test_concurrent_claimers_never_share_a_job(scratch_url: str) -> None:
    t0 = datetime(2032, 1, 1, tzinfo=UTC)
    rows = _jobs(60, t0)
    mine = {str(r["id"]) for r in rows}

    async def scenario() -> list[list[str]]:
        engine = make_engine(scratch_url)
        sessions = make_sessionmaker(engine)
        async with sessions() as s, s.begin():
            await s.execute(insert(PushJobRow.__table__).values(rows))
        stores = [SqlOutboxStore(sessions) for _ in range(4)]
        try:
            claims = await asyncio.gather(
                *(st.claim_due(now=t0, limit=20, lease_for=timedelta(seconds=30)) for st in stores)
            )
        finally:
            await engine.dispose()
        return [[j.job_id for j in c if j.job_id in mine] for c in claims]

    claims = asyncio.run(scenario())
    flat = [j for c in claims for j in c]
    assert len(flat) == len(set(flat))  # nobody got a job twice
    assert set(flat) == mine  # 4 x 20 >= 60: every due job was claimed by someone
