"""Bad input gets a clear RFC 9457 answer naming the field, and nothing is half-applied."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import TestClient

from tests import factories as f
from tests.conftest import Sessions


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"]
    return body


@pytest.mark.parametrize(
    ("coords", "field"),
    [
        ([181.0, 31.0], "location.coordinates[0]"),
        ([121.0, -90.5], "location.coordinates[1]"),
        ([121.0], "location.coordinates"),
        (["east", 31.0], "location.coordinates[0]"),
    ],
)
def test_coordinates_out_of_range_name_the_field(
    client: TestClient[Any], auth: Sessions, coords: list[Any], field: str
) -> None:
    body = f.incident()
    body["location"]["coordinates"] = coords
    problem = _problem(client.post("/api/v1/incidents", headers=auth("dispatcher"), json=body), 400)
    assert problem["errors"][0]["field"] == field


def test_unknown_fields_are_refused(client: TestClient[Any], auth: Sessions) -> None:
    body = {**f.hazard(), "colour": "red"}
    problem = _problem(client.post("/api/v1/hazards", headers=auth("inspector1"), json=body), 400)
    assert "colour" in problem["detail"]


def test_self_intersecting_polygon_is_refused(client: TestClient[Any], auth: Sessions) -> None:
    bow = {
        "type": "Polygon",
        "coordinates": [
            [[121.47, 31.23], [121.48, 31.24], [121.48, 31.23], [121.47, 31.24], [121.47, 31.23]]
        ],
    }
    body = {"name": "bow tie", "code": "BOW-1", "boundary": bow}
    problem = _problem(client.post("/api/v1/grids", headers=auth("admin"), json=body), 422)
    assert problem["errors"][0]["field"] == "boundary"
    assert "Self-intersection" in problem["detail"]
    assert all(
        g["code"] != "BOW-1"
        for g in client.get("/api/v1/grids", headers=auth("admin")).json()["items"]
    )


def test_unclosed_ring_is_refused(client: TestClient[Any], auth: Sessions) -> None:
    ring = [[121.47, 31.23], [121.48, 31.23], [121.48, 31.24], [121.47, 31.24]]
    alert = f.alert(area={"type": "Polygon", "coordinates": [ring]})
    problem = _problem(client.post("/api/v1/alerts", headers=auth("dispatcher"), json=alert), 422)
    assert "closed" in problem["detail"]


def test_oversize_body_is_refused(client: TestClient[Any], auth: Sessions) -> None:
    body = f.hazard(description="x" * 10)
    payload = json.dumps(body) + " " * (3 * 1024 * 1024)
    r = client.post(
        "/api/v1/hazards",
        headers={**auth("inspector1"), "Content-Type": "application/json"},
        content=payload,
    )
    _problem(r, 413)


def test_malformed_json_and_bad_query_parameters(client: TestClient[Any], auth: Sessions) -> None:
    h = {**auth("dispatcher"), "Content-Type": "application/json"}
    _problem(client.post("/api/v1/incidents", headers=h, content="{not json"), 400)
    for params in (
        {"near": "121.48"},
        {"near": "121.48,31.23"},
        {"near": "121.48,31.23", "radius_m": "900000"},
        {"bbox": "121.5,31.2,121.4,31.3"},
        {"cursor": "!!!"},
        {"within": '{"type":"Point","coordinates":[1,2]}'},
        {"limit": "0"},
    ):
        r = client.get("/api/v1/tasks", headers=auth("dispatcher"), params=params)
        assert r.status_code in (400, 422), (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_illegal_status_change_and_unknown_ids(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()["id"]
    assert (
        client.patch(f"/api/v1/incidents/{inc}", headers=d, json={"status": "closed"}).status_code
        == 200
    )
    problem = _problem(
        client.patch(f"/api/v1/incidents/{inc}", headers=d, json={"status": "open"}), 409
    )
    assert problem["errors"][0]["field"] == "status"
    _problem(client.get("/api/v1/incidents/0190f7a2-0000-7000-8000-000000000000", headers=d), 404)
    bad_task = f.task(incident_id="0190f7a2-0000-7000-8000-000000000000")
    _problem(client.post("/api/v1/tasks", headers=d, json=bad_task), 422)
    no_assignee = f.task()
    no_assignee.pop("assignee_unit_id")
    _problem(client.post("/api/v1/tasks", headers=d, json=no_assignee), 422)


def test_a_refused_patch_applies_nothing(client: TestClient[Any], auth: Sessions) -> None:
    """Title and level are set before the status check fails: the rollback undoes them."""
    d = auth("dispatcher")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident(title="before")).json()
    assert (
        client.patch(
            f"/api/v1/incidents/{inc['id']}", headers=d, json={"status": "closed"}
        ).status_code
        == 200
    )
    audit_before = client.get("/api/v1/audit", headers=auth("admin"), params={"limit": 1}).json()
    r = client.patch(
        f"/api/v1/incidents/{inc['id']}",
        headers=d,
        json={"title": "after", "level": 1, "status": "responding"},
    )
    _problem(r, 409)
    now = client.get(f"/api/v1/incidents/{inc['id']}", headers=d).json()
    assert (now["title"], now["level"], now["status"]) == ("before", 2, "closed")
    audit_after = client.get("/api/v1/audit", headers=auth("admin"), params={"limit": 1}).json()
    assert audit_after[0]["id"] == audit_before[0]["id"]


def test_duplicate_unique_value_is_a_conflict_not_a_crash(
    client: TestClient[Any], auth: Sessions
) -> None:
    body = {"name": "dup", "code": "DUP-1", "boundary": f.square(121.478, 31.236, 0.001)}
    assert client.post("/api/v1/grids", headers=auth("admin"), json=body).status_code == 201
    problem = _problem(client.post("/api/v1/grids", headers=auth("admin"), json=body), 409)
    assert problem["code"] == "conflict"


def test_client_chosen_id_that_is_taken_is_a_conflict(
    client: TestClient[Any], auth: Sessions
) -> None:
    taken = str(f.did("area:huangpu"))
    body = {"name": "x", "code": "X-CLASH", "level": "street", "parent_id": taken, "id": taken}
    problem = _problem(client.post("/api/v1/areas", headers=auth("admin"), json=body), 409)
    assert problem["errors"][0]["field"] == "id"
    shelter = f.resource(id=str(f.did("shelter:peoples-square")))
    _problem(client.post("/api/v1/resources", headers=auth("admin"), json=shelter), 409)


def test_times_without_a_zone_are_refused_at_decode(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    task = client.post("/api/v1/tasks", headers=d, json=f.task()).json()
    naive = "2026-12-01T08:00:00"
    for method, url, body, field in (
        ("PATCH", f"/api/v1/tasks/{task['id']}", {"deadline": naive}, "deadline"),
        ("POST", "/api/v1/tasks", f.task(deadline=naive), "deadline"),
        ("POST", "/api/v1/alerts", f.alert(expires=naive), "expires"),
        (
            "POST",
            f"/api/v1/tasks/{task['id']}/transitions",
            {"to_status": "cancelled", "at": naive},
            "at",
        ),
    ):
        problem = _problem(client.request(method, url, headers=d, json=body), 400)
        assert problem["errors"][0]["field"] == field, (url, problem)
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=d).json()["deadline"] is None


def test_an_audit_page_cursor_past_64_bits_is_a_400_not_a_500(
    client: TestClient[Any], auth: Sessions
) -> None:
    admin = auth("admin")
    for bad in (2**63, -(2**63) - 1, 0):
        r = client.get("/api/v1/audit", headers=admin, params={"before_id": bad})
        assert r.status_code == 400, (bad, r.text)
    top = client.get("/api/v1/audit", headers=admin, params={"before_id": 2**63 - 1})
    assert top.status_code == 200, top.text
