"""Every role against every resource: who may list, read and create what, allowed and denied.

Known records are created once per backend (an incident with a fire task in grid A, a hazard
reported by inspector1 for the demo enterprise, an alert), then each cell of the matrix checks
the HTTP status and, for lists and reads, whether that record is visible.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from server.demo import did
from tests import factories as f
from tests.conftest import Sessions
from tests.snapshots import DatabaseState

ROLES = ["admin", "dispatcher", "fire1", "police1", "inspector1", "inspector2", "enterprise1"]
ALL = set(ROLES)
DISPATCH = {"admin", "dispatcher"}


@pytest.fixture(scope="module")
def known(
    client: TestClient[Any], auth: Sessions, database_state: DatabaseState
) -> Iterator[dict[str, str]]:
    d = auth("dispatcher")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()["id"]
    task = client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=inc)).json()["id"]
    hz = client.post(
        "/api/v1/hazards",
        headers=auth("inspector1"),
        json=f.hazard(enterprise_id=str(did("enterprise:bund-mall"))),
    )
    assert hz.status_code == 201, hz.text
    alert = client.post("/api/v1/alerts", headers=d, json=f.alert()).json()["id"]
    assert client.post(f"/api/v1/alerts/{alert}/publish", headers=d).status_code == 200
    ids = {
        "incidents": inc,
        "tasks": task,
        "hazards": hz.json()["id"],
        "alerts": alert,
        "grids": str(did("grid:A")),
        "resources": str(did("shelter:peoples-square")),
        "enterprises": str(did("enterprise:bund-mall")),
        "users": str(did("user:fire1")),
    }
    with database_state.kept():  # each test restores to these records, not to the demo seed
        yield ids


# resource -> (roles that may list (others: 403), roles that see the known record)
READ = {
    "incidents": (DISPATCH | {"fire1", "police1"}, DISPATCH | {"fire1"}),
    "tasks": (DISPATCH | {"fire1", "police1", "inspector1", "inspector2"}, DISPATCH | {"fire1"}),
    "hazards": (ALL, ALL - {"inspector2"}),
    "alerts": (ALL, ALL),
    "resources": (ALL, ALL),
    "grids": (ALL, ALL - {"inspector2"}),
    "enterprises": (ALL, ALL - {"inspector2"}),
    "users": ({"admin"}, {"admin"}),
    "audit": (DISPATCH, {"admin"}),  # dispatchers: their area's entries (test_admin.py)
    "organisations": (ALL, ALL),
    "areas": (ALL, ALL),
}
HAS_GET = {"incidents", "tasks", "hazards", "alerts", "resources", "grids"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", sorted(READ))
def test_list_and_read(
    client: TestClient[Any], auth: Sessions, known: dict[str, str], resource: str, role: str
) -> None:
    may_list, sees = READ[resource]
    r = client.get(f"/api/v1/{resource}", headers=auth(role), params={"limit": 500})
    if role not in may_list:
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        return
    assert r.status_code == 200, r.text
    if resource in known:
        body = r.json()
        ids = {i["id"] for i in (body if isinstance(body, list) else body["items"])}
        assert (known[resource] in ids) == (role in sees), (resource, role)
    if resource in HAS_GET:
        one = client.get(f"/api/v1/{resource}/{known[resource]}", headers=auth(role))
        assert one.status_code == (200 if role in sees else 404), (resource, role, one.text)


CREATE = {
    "incidents": (DISPATCH, f.incident),
    "tasks": (DISPATCH, f.task),
    "hazards": (ALL, f.hazard),
    "alerts": (DISPATCH, lambda: f.alert(authority_id=str(did("org:command")))),
    "resources": (DISPATCH, f.resource),
    "grids": (
        {"admin"},
        lambda: {
            "name": "g",
            "code": f.user("x")["username"][:30],
            "boundary": f.square(121.48, 31.24, 0.001),
        },
    ),
    "users": ({"admin"}, lambda: f.user("responder", org="ems")),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", sorted(CREATE))
def test_create(client: TestClient[Any], auth: Sessions, resource: str, role: str) -> None:
    allowed, body = CREATE[resource]
    r = client.post(f"/api/v1/{resource}", headers=auth(role), json=body())
    assert r.status_code == (201 if role in allowed else 403), (resource, role, r.text)


@pytest.mark.parametrize("role", ROLES)
def test_task_transitions_only_by_assignee(
    client: TestClient[Any], auth: Sessions, role: str
) -> None:
    task = client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task()).json()["id"]
    r = client.post(
        f"/api/v1/tasks/{task}/transitions", headers=auth(role), json={"to_status": "accepted"}
    )
    expected = {"fire1": 201, "admin": 403, "dispatcher": 403}.get(role, 404)
    if role in {"enterprise1"}:
        expected = 403  # no access to tasks at all
    assert r.status_code == expected, (role, r.text)


def test_dispatcher_cannot_act_outside_their_area(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    r = client.post("/api/v1/incidents", headers=d, json=f.incident(at=f.OUTSIDE_DISTRICT))
    assert r.status_code == 403
    assert "outside your command area" in r.json()["detail"]
    # The administrator may.
    assert (
        client.post(
            "/api/v1/incidents", headers=auth("admin"), json=f.incident(at=f.OUTSIDE_DISTRICT)
        ).status_code
        == 201
    )


def test_a_dispatcher_cannot_attach_a_task_to_another_areas_incident(
    client: TestClient[Any], auth: Sessions
) -> None:
    far = client.post(
        "/api/v1/incidents", headers=auth("admin"), json=f.incident(at=f.OUTSIDE_DISTRICT)
    )
    assert far.status_code == 201, far.text
    d = auth("dispatcher")
    # The task itself is in the dispatcher's area; its incident is not.
    r = client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=far.json()["id"]))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "incident_id"
    assert "no such incident" in r.json()["detail"]
    # Their own incident they may.
    mine = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()
    ok = client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=mine["id"]))
    assert ok.status_code == 201, ok.text


def test_every_private_route_needs_a_token(client: TestClient[Any]) -> None:
    schema = client.get("/schema/openapi.json").json()
    public = {"/healthz", "/readyz", "/api/v1/auth/login", "/api/v1/auth/refresh"}
    # The public prefix, public on purpose, holds exactly these (docs/alerts.md: warnings;
    # docs/api.md: residents' subscriptions and page), nothing else.
    warnings = {p for p in schema["paths"] if p.startswith("/api/v1/public/")}
    assert warnings == {
        "/api/v1/public/alerts",
        "/api/v1/public/alerts.geojson",
        "/api/v1/public/alerts.atom",
        "/api/v1/public/alerts/stream",
        "/api/v1/public/cap/{alert_id}",
        "/api/v1/public/areas",
        "/api/v1/public/shelters",
        "/api/v1/public/push-key",
        "/api/v1/public/texts/{lang}",
        "/api/v1/public/subscriptions",
        "/api/v1/public/subscriptions/{sub_id}",
        "/api/v1/public/subscriptions/{sub_id}/confirm",
    }
    checked = 0
    for path, ops in schema["paths"].items():
        if path in public or path in warnings:
            continue
        concrete = path.replace("{device_id}", "x")
        # Every other `{..._id}` path parameter is a UUID.
        concrete = re.sub(r"\{[a-z_]+_id\}", "01900000-0000-7000-8000-000000000000", concrete)
        for method in ops:
            r = client.request(method.upper(), concrete, json={})
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["content-type"].startswith("application/problem+json")
            checked += 1
    assert checked >= 30


# Administration (issue 12): every route answers only administrators; the others get 403
# before anything is looked up (a made-up id would otherwise be a 404).
_NOBODY = "01900000-0000-7000-8000-000000000001"
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PATCH", f"/api/v1/organisations/{did('org:fire2')}", {"phone": "110"}),
    ("POST", f"/api/v1/organisations/{did('org:fire2')}/deactivate", None),
    ("POST", f"/api/v1/organisations/{did('org:fire2')}/reactivate", None),
    ("GET", f"/api/v1/organisations/{did('org:fire2')}/members", None),
    ("PUT", f"/api/v1/organisations/{did('org:fire2')}/members/{did('user:fire1')}", {}),
    ("DELETE", f"/api/v1/organisations/{did('org:fire2')}/members/{did('user:fire1')}", None),
    ("PATCH", f"/api/v1/enterprises/{did('enterprise:bund-mall')}", {"address": "中山东一路"}),
    ("POST", f"/api/v1/enterprises/{did('enterprise:bund-mall')}/deactivate", None),
    ("POST", f"/api/v1/enterprises/{did('enterprise:bund-mall')}/reactivate", None),
    ("POST", f"/api/v1/grids/{did('grid:B')}/deactivate", None),
    ("POST", f"/api/v1/grids/{did('grid:B')}/reactivate", None),
    ("POST", f"/api/v1/users/{did('user:fire2')}/enable", None),
    ("PATCH", f"/api/v1/users/{did('user:fire2')}", {"display_name": "消防员 2"}),
    ("POST", f"/api/v1/users/{did('user:fire2')}/password", {"password": "another secret"}),
    ("POST", f"/api/v1/plans/{did('plan:hazmat-leak-ii')}/retire", None),
    ("PATCH", f"/api/v1/organisations/{_NOBODY}", {"phone": "110"}),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "url", "body"), ADMIN_ROUTES)
def test_admin_routes(
    client: TestClient[Any],
    auth: Sessions,
    role: str,
    method: str,
    url: str,
    body: dict[str, Any] | None,
) -> None:
    r = client.request(method, url, headers=auth(role), json=body)
    if role != "admin":
        assert r.status_code == 403, (method, url, role, r.text)
        assert r.json()["code"] == "forbidden"
        return
    # The administrator gets through to the action (its own refusals, such as reactivating
    # what is active or an unknown id, are 404/409, never 403).
    assert r.status_code in (200, 201, 204, 404, 409), (method, url, r.text)
    assert r.status_code != 404 or _NOBODY in url or "members" in url


REPORTS = ["/api/v1/stats/hazards", "/api/v1/stats/response-times", "/api/v1/audit"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", REPORTS)
def test_reports_and_audit(client: TestClient[Any], auth: Sessions, role: str, url: str) -> None:
    r = client.get(url, headers=auth(role), params={"format": "csv"})
    assert r.status_code == (200 if role in DISPATCH else 403), (url, role, r.text)


def test_a_task_is_not_dispatched_to_a_deactivated_unit(
    client: TestClient[Any], auth: Sessions
) -> None:
    unit = str(f.did("org:gas"))
    off = client.post(f"/api/v1/organisations/{unit}/deactivate", headers=auth("admin"))
    assert off.status_code == 200, off.text
    r = client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task(unit="gas"))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "assignee_unit_id"
