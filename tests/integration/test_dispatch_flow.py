"""The foundation's acceptance path, on SpatiaLite and on PostGIS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from server.demo import did
from server.models import TaskEvent
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db


def test_dispatcher_creates_incident_and_task_found_near_and_hidden_from_other_unit(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident(title="化工仓库泄漏"))
    assert inc.status_code == 201, inc.text
    assert inc.json()["area_id"] == str(did("area:guizhoulu"))  # deepest area containing it

    body = f.task(incident_id=inc.json()["id"], unit="fire", priority="urgent")
    created = client.post("/api/v1/tasks", headers=d, json=body)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert created.json()["status"] == "assigned"

    near = client.get(
        "/api/v1/tasks", headers=d, params={"near": "121.4850,31.2370", "radius_m": 200}
    )
    assert near.status_code == 200
    found = {t["id"]: t for t in near.json()["items"]}
    assert task_id in found
    assert 0 < found[task_id]["distance_m"] < 200

    far = client.get("/api/v1/tasks", headers=d, params={"near": "121.50,31.21", "radius_m": 300})
    assert task_id not in {t["id"] for t in far.json()["items"]}

    # The fire unit sees it; police (another unit) does not, in lists or by id.
    assert task_id in {
        t["id"] for t in client.get("/api/v1/tasks", headers=auth("fire1")).json()["items"]
    }
    police = auth("police1")
    assert task_id not in {
        t["id"] for t in client.get("/api/v1/tasks", headers=police).json()["items"]
    }
    assert client.get(f"/api/v1/tasks/{task_id}", headers=police).status_code == 404
    assert client.get(f"/api/v1/incidents/{inc.json()['id']}", headers=police).status_code == 404
    assert (
        client.get(f"/api/v1/incidents/{inc.json()['id']}", headers=auth("fire1")).status_code
        == 200
    )


def test_task_loop_is_stamped_and_illegal_jumps_refused(
    client: TestClient[Any], auth: Sessions
) -> None:
    d, fire = auth("dispatcher"), auth("fire1")
    task_id = client.post("/api/v1/tasks", headers=d, json=f.task()).json()["id"]

    jump = client.post(
        f"/api/v1/tasks/{task_id}/transitions", headers=fire, json={"to_status": "completed"}
    )
    assert jump.status_code == 409
    assert jump.headers["content-type"].startswith("application/problem+json")
    assert jump.json()["code"] == "illegal_transition"

    not_assignee = client.post(
        f"/api/v1/tasks/{task_id}/transitions", headers=d, json={"to_status": "accepted"}
    )
    assert not_assignee.status_code == 403

    for step in ("accepted", "en_route", "on_scene", "completed"):
        r = client.post(
            f"/api/v1/tasks/{task_id}/transitions",
            headers=fire,
            json={
                "to_status": step,
                "device_id": "phone-7",
                "location": f.point(121.4853, 31.2371),
                "accuracy_m": 6.0,
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["device_id"] == "phone-7"
    timeline = client.get(f"/api/v1/tasks/{task_id}/timeline", headers=d).json()
    assert [e["to_status"] for e in timeline] == [
        "assigned",
        "accepted",
        "en_route",
        "on_scene",
        "completed",
    ]
    assert all(e["location"]["coordinates"] == [121.4853, 31.2371] for e in timeline[1:])
    assert client.get(f"/api/v1/tasks/{task_id}", headers=d).json()["status"] == "completed"


def test_retried_create_with_client_id_does_not_duplicate(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    body = f.incident(id="0190f7a2-1111-7abc-8def-0123456789ab")
    first = client.post("/api/v1/incidents", headers=d, json=body)
    again = client.post("/api/v1/incidents", headers=d, json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    listed = client.get("/api/v1/incidents", headers=d, params={"limit": 500}).json()["items"]
    assert sum(1 for i in listed if i["id"] == body["id"]) == 1


def test_every_write_lands_in_the_audit_log(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()
    entries = client.get(
        "/api/v1/audit",
        headers=auth("admin"),
        params={"entity": "incident", "entity_id": inc["id"]},
    ).json()
    assert [(e["action"], e["actor_id"]) for e in entries] == [
        ("create", str(did("user:dispatcher")))
    ]


def test_moving_a_record_moves_its_area_but_not_out_of_the_dispatchers(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    task = client.post("/api/v1/tasks", headers=d, json=f.task(at=f.IN_GRID_A)).json()
    assert task["area_id"] == str(did("area:guizhoulu"))
    moved = client.patch(
        f"/api/v1/tasks/{task['id']}", headers=d, json={"location": f.point(*f.IN_GRID_B)}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["area_id"] == str(did("area:yuyuan"))
    assert moved.json()["location"]["coordinates"] == list(f.IN_GRID_B)
    away = client.patch(
        f"/api/v1/tasks/{task['id']}", headers=d, json={"location": f.point(*f.OUTSIDE_DISTRICT)}
    )
    assert away.status_code == 403
    shelter = str(did("shelter:fuxing-park"))
    r = client.patch(
        f"/api/v1/resources/{shelter}", headers=d, json={"capacity": 9000, "phone": "021-1"}
    )
    assert (r.json()["capacity"], r.json()["phone"], r.json()["name"]) == (
        9000,
        "021-1",
        "复兴公园应急避难场所 Fuxing Park shelter",
    )


def test_patches_store_enum_values(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    task = client.post("/api/v1/tasks", headers=d, json=f.task()).json()
    r = client.patch(f"/api/v1/tasks/{task['id']}", headers=d, json={"priority": "urgent"})
    assert r.status_code == 200 and r.json()["priority"] == "urgent"
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=d).json()["priority"] == "urgent"
    hz = client.post("/api/v1/hazards", headers=auth("inspector1"), json=f.hazard()).json()
    r = client.patch(
        f"/api/v1/hazards/{hz['id']}",
        headers=auth("inspector1"),
        json={"severity": "critical", "category": "electrical"},
    )
    assert r.status_code == 200, r.text
    again = client.get(f"/api/v1/hazards/{hz['id']}", headers=d).json()
    assert (again["severity"], again["category"]) == ("critical", "electrical")


def test_an_incident_links_only_live_hazards_its_dispatcher_may_see(
    client: TestClient[Any], auth: Sessions
) -> None:
    hazard = client.post("/api/v1/hazards", headers=auth("inspector1"), json=f.hazard()).json()
    d = auth("dispatcher")
    linked = client.post("/api/v1/incidents", headers=d, json=f.incident(hazard_ids=[hazard["id"]]))
    assert linked.status_code == 201, linked.text
    assert linked.json()["hazard_ids"] == [hazard["id"]]
    # A dispatcher of another street cannot link (or learn of) a hazard outside their area.
    body = f.user("dispatcher", "command", area_id=str(f.did("area:yuyuan")))
    assert client.post("/api/v1/users", headers=auth("admin"), json=body).status_code == 201
    elsewhere = auth(body["username"], body["password"])
    there = f.incident(at=f.IN_GRID_B, hazard_ids=[hazard["id"]])
    refused = client.post("/api/v1/incidents", headers=elsewhere, json=there)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "hazard_ids"
    # A deleted hazard is no longer linkable.
    gone = client.post("/api/v1/hazards", headers=auth("inspector1"), json=f.hazard()).json()
    assert client.delete(f"/api/v1/hazards/{gone['id']}", headers=d).status_code == 204
    late = client.post("/api/v1/incidents", headers=d, json=f.incident(hazard_ids=[gone["id"]]))
    assert late.status_code == 422, late.text


def test_steps_of_one_instant_read_back_in_the_order_of_the_lifecycle(
    client: TestClient[Any], auth: Sessions
) -> None:
    """Steps tapped offline within one millisecond share their `at`; the server wrote them in
    some order. The timeline shows them as the task lived them (a note after the step into
    its status), whatever the order of their write time and ids (here both reversed)."""
    d, fire = auth("dispatcher"), auth("fire1")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()
    task_id = client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=inc["id"])).json()[
        "id"
    ]
    at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    steps = [  # in the order they happened; ids descending
        ("transitions", {"to_status": "accepted"}),
        ("transitions", {"to_status": "en_route"}),
        ("notes", {"note": "路上堵车"}),
        ("transitions", {"to_status": "on_scene"}),
    ]
    ids = [uuid.UUID(int=(len(steps) - n) << 64) for n in range(len(steps))]
    for (path, body), step_id in zip(steps, ids, strict=True):
        r = client.post(
            f"/api/v1/tasks/{task_id}/{path}",
            headers=fire,
            json={**body, "at": at, "id": str(step_id)},
        )
        assert r.status_code == 201, r.text

    async def write_times_reversed(session: AsyncSession) -> None:
        first = datetime(2030, 1, 1, tzinfo=UTC)
        for n, step_id in enumerate(reversed(ids)):
            await session.execute(
                update(TaskEvent.__table__)
                .where(TaskEvent.__table__.c.id == step_id)
                .values(created_at=first + timedelta(seconds=n))
            )

    in_db(client.app.state.settings.database_url, write_times_reversed)
    lived = ["assigned", "accepted", "en_route", "en_route", "on_scene"]
    timeline = client.get(f"/api/v1/tasks/{task_id}/timeline", headers=d).json()
    assert [(e["to_status"], e["note"]) for e in timeline] == list(
        zip(lived, [None, None, None, "路上堵车", None], strict=True)
    ), timeline
    whole = client.get(f"/api/v1/incidents/{inc['id']}/timeline", headers=d).json()
    assert [e["to_status"] for e in whole] == lived
