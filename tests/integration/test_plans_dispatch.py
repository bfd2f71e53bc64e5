"""Emergency plans that act: matching, nearest units, idempotent runs, level raises, declines,
positions and who may do what. On SpatiaLite and on PostGIS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from schemas.common import Point, Role
from schemas.dispatch import PositionReport
from server.auth.principal import Principal
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.dispatch.services import record_position
from server.models import ResponderPosition
from tests import factories as f
from tests.conftest import DEMO_PASSWORD, Sessions
from tests.integration.dispatch_helpers import nearest, tasks_of, unit_key, unit_locations


def _hazmat(client: TestClient[Any], d: dict[str, str], **kw: Any) -> dict[str, Any]:
    r = client.post(
        "/api/v1/incidents", headers=d, json=f.incident(type="hazmat_leak", level=2, **kw)
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def _template(key: str, kind: str, **kw: Any) -> dict[str, Any]:
    return {"key": key, "unit_kind": kind, "title": f"{kind} task", **kw}


@pytest.fixture
def flood_plans(client: TestClient[Any], auth: Sessions) -> Iterator[tuple[str, str]]:
    """A level-IV flood plan (police) and a level-II one (2 fire + EMS); retired afterwards."""
    admin = auth("admin")
    tag = uuid.uuid4().hex[:6]
    low = client.post(
        "/api/v1/plans",
        headers=admin,
        json={
            "code": f"flood-iv-{tag}",
            "name": "Flood IV",
            "incident_type": "flood",
            "min_level": 4,
            "templates": [_template("police", "police")],
        },
    )
    high = client.post(
        "/api/v1/plans",
        headers=admin,
        json={
            "code": f"flood-ii-{tag}",
            "name": "Flood II",
            "incident_type": "flood",
            "min_level": 2,
            "templates": [
                _template("fire", "fire", required_count=2),
                _template("ems", "ems", reassign_on_decline=False),
            ],
        },
    )
    assert low.status_code == 201 and high.status_code == 201, (low.text, high.text)
    yield low.json()["id"], high.json()["id"]
    for plan in (low, high):
        client.delete(f"/api/v1/plans/{plan.json()['id']}", headers=admin)


def test_plan_crud_is_versioned_and_admin_only(client: TestClient[Any], auth: Sessions) -> None:
    admin, d = auth("admin"), auth("dispatcher")
    body = {
        "code": f"gas-{uuid.uuid4().hex[:6]}",
        "name": "Gas leak",
        "incident_type": "gas_leak",
        "min_level": 3,
        "templates": [_template("gas", "gas", accept_window_s=120)],
    }
    for who in ("dispatcher", "fire1"):
        assert client.post("/api/v1/plans", headers=auth(who), json=body).status_code == 403
    created = client.post("/api/v1/plans", headers=admin, json=body)
    assert created.status_code == 201, created.text
    v1 = created.json()
    assert v1["version"] == 1 and v1["templates"][0]["priority"] == "high"
    assert client.post("/api/v1/plans", headers=admin, json=body).status_code == 409
    dup_keys = {**body, "code": "dup-keys", "templates": [_template("a", "gas")] * 2}
    assert client.post("/api/v1/plans", headers=admin, json=dup_keys).status_code == 409

    v2 = client.put(f"/api/v1/plans/{v1['id']}", headers=admin, json={"min_level": 2})
    assert v2.status_code == 200, v2.text
    assert v2.json()["version"] == 2 and v2.json()["min_level"] == 2
    assert v2.json()["templates"] == v1["templates"]
    stale = client.put(f"/api/v1/plans/{v1['id']}", headers=admin, json={"min_level": 1})
    assert stale.status_code == 409

    listed = client.get("/api/v1/plans", headers=d).json()
    codes = [(p["code"], p["version"]) for p in listed]
    assert (body["code"], 2) in codes and (body["code"], 1) not in codes
    every = client.get("/api/v1/plans", headers=d, params={"all_versions": True}).json()
    assert (body["code"], 1) in [(p["code"], p["version"]) for p in every]
    assert client.get("/api/v1/plans", headers=auth("fire1")).status_code == 403
    assert client.put(f"/api/v1/plans/{v1['id']}", headers=d, json={}).status_code == 403

    assert client.delete(f"/api/v1/plans/{v2.json()['id']}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/plans/{v2.json()['id']}", headers=d).status_code == 404


def test_demo_plan_dispatches_nearest_units_and_never_twice(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    at = (121.4980, 31.2080)  # south-east: the Dapuqiao fire station is nearer than the main one
    inc = _hazmat(client, d, location=f.point(*at))
    tasks = tasks_of(client, d, inc["id"])
    locations = unit_locations(client, d)
    assert sorted(t["template_key"] for t in tasks) == ["ems", "fire", "police"]
    for task in tasks:
        expected = nearest(task["template_key"], at, locations)[0]
        assert unit_key(task["assignee_unit_id"]) == expected
    assert unit_key(next(t for t in tasks if t["template_key"] == "fire")["assignee_unit_id"]) == (
        "org:fire2"
    )

    again = client.post(f"/api/v1/incidents/{inc['id']}/plan-runs", headers=d)
    assert again.status_code == 201 and again.json() == []
    assert len(tasks_of(client, d, inc["id"])) == 3
    runs = client.get(f"/api/v1/incidents/{inc['id']}/plan-runs", headers=d).json()
    assert len(runs) == 3 and all(r["plan_code"] == "hazmat-leak-ii" for r in runs)

    # Level III does not match the level-II plan.
    low = client.post(
        "/api/v1/incidents", headers=d, json=f.incident(type="hazmat_leak", level=3)
    ).json()
    assert tasks_of(client, d, low["id"]) == []


def test_raising_the_level_adds_only_new_tasks(
    client: TestClient[Any], auth: Sessions, flood_plans: tuple[str, str]
) -> None:
    d = auth("dispatcher")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident(type="flood", level=3)).json()
    first = tasks_of(client, d, inc["id"])
    assert [t["template_key"] for t in first] == ["police"]

    raised = client.patch(f"/api/v1/incidents/{inc['id']}", headers=d, json={"level": 2})
    assert raised.status_code == 200, raised.text
    second = tasks_of(client, d, inc["id"])
    assert sorted(t["template_key"] for t in second) == ["ems", "fire", "fire", "police"]
    fire_units = {unit_key(t["assignee_unit_id"]) for t in second if t["template_key"] == "fire"}
    assert fire_units == {"org:fire", "org:fire2"}  # two slots, two different units

    for level in (1, 3):
        assert (
            client.patch(
                f"/api/v1/incidents/{inc['id']}", headers=d, json={"level": level}
            ).status_code
            == 200
        )
    assert len(tasks_of(client, d, inc["id"])) == 4


def test_decline_passes_the_task_to_the_next_nearest_unit(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    at = f.IN_GRID_A
    inc = _hazmat(client, d, location=f.point(*at))
    tasks = {t["template_key"]: t for t in tasks_of(client, d, inc["id"])}
    ems_task = tasks["ems"]
    order = nearest("ems", at, unit_locations(client, d))
    assert unit_key(ems_task["assignee_unit_id"]) == order[0]
    first, second = (auth("ems1"), auth("ems2"))
    if order[0] == "org:ems2":
        first, second = second, first

    url = f"/api/v1/tasks/{ems_task['id']}/transitions"
    no_reason = client.post(url, headers=first, json={"to_status": "declined"})
    assert no_reason.status_code == 422
    r = client.post(url, headers=first, json={"to_status": "declined", "note": "crew busy"})
    assert r.status_code == 201, r.text
    moved = client.get(f"/api/v1/tasks/{ems_task['id']}", headers=d).json()
    assert unit_key(moved["assignee_unit_id"]) == order[1]
    assert moved["status"] == "assigned"
    steps = [
        e["to_status"]
        for e in client.get(f"/api/v1/tasks/{ems_task['id']}/timeline", headers=d).json()
    ]
    assert steps == ["assigned", "declined", "assigned"]
    assert client.get(f"/api/v1/tasks/{ems_task['id']}", headers=first).status_code == 404

    # The last EMS unit declines too: nobody is left, the task stays declined for dispatch.
    r = client.post(url, headers=second, json={"to_status": "declined", "note": "no ambulance"})
    assert r.status_code == 201
    assert client.get(f"/api/v1/tasks/{ems_task['id']}", headers=d).json()["status"] == "declined"
    audit = client.get(
        "/api/v1/audit",
        headers=auth("admin"),
        params={"entity": "task", "entity_id": ems_task["id"], "limit": 200},
    )
    assert audit.status_code == 200, audit.text
    actions = {(a["action"], a["entity_id"]) for a in audit.json()}
    assert ("decline_unfilled", ems_task["id"]) in actions


def test_denials(client: TestClient[Any], auth: Sessions) -> None:
    d, fire, police = auth("dispatcher"), auth("fire1"), auth("police1")
    assert client.post("/api/v1/incidents", headers=fire, json=f.incident()).status_code == 403
    inc = _hazmat(client, d)
    tasks = {t["template_key"]: t for t in tasks_of(client, d, inc["id"])}
    fire_task = tasks["fire"]["id"]
    assert client.get(f"/api/v1/tasks/{fire_task}", headers=police).status_code == 404
    police_view = client.get(f"/api/v1/incidents/{inc['id']}/timeline", headers=police)
    assert police_view.status_code == 200
    assert {e["task_id"] for e in police_view.json()} == {tasks["police"]["id"]}
    assert client.get("/api/v1/units/positions", headers=fire).status_code == 403
    assert client.get("/api/v1/stats/incidents", headers=fire).status_code == 403
    assert client.post(f"/api/v1/incidents/{inc['id']}/plan-runs", headers=fire).status_code in (
        403,
        404,
    )

    # A dispatcher of another area (Yuyuan street) cannot act or see in Nanjing Rd E.
    admin = auth("admin")
    body = f.user("dispatcher", area_id=str(did("area:yuyuan")))
    assert client.post("/api/v1/users", headers=admin, json=body).status_code == 201
    other = auth(body["username"], body["password"])
    outside = client.post("/api/v1/incidents", headers=other, json=f.incident(type="hazmat_leak"))
    assert outside.status_code == 403
    assert client.get(f"/api/v1/incidents/{inc['id']}/timeline", headers=other).status_code == 404
    assert client.get(f"/api/v1/tasks/{fire_task}", headers=other).status_code == 404
    counts = client.get("/api/v1/stats/incidents", headers=other).json()
    assert all(c["type"] != "hazmat_leak" for c in counts)
    assert DEMO_PASSWORD  # demo users keep the shared password


def test_positions_keep_the_newest_fix(client: TestClient[Any], auth: Sessions) -> None:
    ems2, d = auth("ems2"), auth("dispatcher")
    newer = {"location": f.point(121.47, 31.24), "accuracy_m": 4.0, "at": "2030-01-01T08:00:00Z"}
    older = {"location": f.point(121.40, 31.10), "at": "2029-12-31T08:00:00Z"}
    assert client.post("/api/v1/positions", headers=ems2, json=newer).status_code == 204
    assert client.post("/api/v1/positions", headers=ems2, json=older).status_code == 204
    assert client.post("/api/v1/positions", headers=d, json=newer).status_code == 403
    units = client.get("/api/v1/units/positions", headers=d).json()
    unit = next(u for u in units if u["unit_id"] == str(did("org:ems2")))
    me = next(r for r in unit["responders"] if r["user_id"] == str(did("user:ems2")))
    assert me["location"]["coordinates"] == [121.47, 31.24] and me["accuracy_m"] == 4.0


def test_a_fix_without_a_task_keeps_the_task_and_an_older_fix_changes_nothing(
    database_url: str,
) -> None:
    """The one-statement upsert (`record_position`) keeps the stored row's rules: the task of
    the last task step stays until a fix names another, and a late, older fix is ignored."""
    user = did("user:ems2")
    ems2 = Principal(
        user_id=user,
        username="ems2",
        role=Role.RESPONDER,
        org_id=did("org:ems2"),
        area_id=None,
        session_id=uuid.uuid4(),
        device_id="phone",
    )
    task, other = uuid.uuid4(), uuid.uuid4()

    def fix(lon: float, at: str) -> PositionReport:
        return PositionReport(
            location=Point(coordinates=(lon, 31.2)), at=datetime.fromisoformat(at)
        )

    async def run() -> tuple[Any, ...]:
        engine = make_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as db, db.begin():
                await record_position(db, ems2, fix(121.41, "2031-01-01T08:00:00+00:00"), task)
                await record_position(db, ems2, fix(121.42, "2031-01-01T09:00:00+00:00"))
                await record_position(db, ems2, fix(121.43, "2031-01-01T07:00:00+00:00"), other)
            async with engine.connect() as conn:
                row = await conn.execute(
                    select(ResponderPosition.task_id, ResponderPosition.at).where(
                        ResponderPosition.user_id == user
                    )
                )
                return tuple(row.one())
        finally:
            await engine.dispose()

    task_id, at = asyncio.run(run())
    assert task_id == task
    assert at == datetime.fromisoformat("2031-01-01T09:00:00+00:00")
