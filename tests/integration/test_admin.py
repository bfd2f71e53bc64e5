"""Administration through the API: organisations, units and members, enterprises, grids, users,
plans; every action audited; the audit log read by area and exported.

Denials of each route for every other role are in `test_authz_matrix.py` (ADMIN_ROUTES).
"""

from __future__ import annotations

import codecs
import csv
import io
import uuid
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from litestar.testing import TestClient

from server.cli import main as cli
from server.config import Settings
from tests import factories as f
from tests.conftest import Sessions

A = "/api/v1"


def _audit(client: TestClient[Any], auth: Sessions, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"{A}/audit", headers=auth("admin"), params=params)
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()
    return entries


def test_edit_deactivate_and_reactivate_a_unit(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    unit = str(f.did("org:fire2"))
    r = client.patch(f"{A}/organisations/{unit}", headers=admin, json={"phone": "021-119"})
    assert r.status_code == 200 and r.json()["phone"] == "021-119"
    # A linked unit keeps its kind.
    r = client.patch(f"{A}/organisations/{unit}", headers=admin, json={"unit_kind": None})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "unit_kind"

    assert client.post(f"{A}/organisations/{unit}/deactivate", headers=admin).status_code == 200
    listed = client.get(f"{A}/organisations", headers=admin, params={"limit": 500}).json()
    assert unit not in {o["id"] for o in listed["items"]}
    again = client.post(f"{A}/organisations/{unit}/deactivate", headers=admin)
    assert again.status_code == 409 and again.json()["code"] == "already_inactive"
    assert client.post(f"{A}/organisations/{unit}/reactivate", headers=admin).status_code == 200
    listed = client.get(f"{A}/organisations", headers=admin, params={"limit": 500}).json()
    assert unit in {o["id"] for o in listed["items"]}
    actions = [e["action"] for e in _audit(client, auth, entity="organisation", entity_id=unit)]
    assert actions[:3] == ["reactivate", "deactivate", "update"]


def test_a_deactivated_unit_gets_no_plan_task(client: TestClient[Any], auth: Sessions) -> None:
    from tests.integration.dispatch_helpers import tasks_of

    admin, d = auth("admin"), auth("dispatcher")
    for org in ("org:fire", "org:fire2"):
        assert (
            client.post(f"{A}/organisations/{f.did(org)}/deactivate", headers=admin).status_code
            == 200
        )
    inc = client.post(f"{A}/incidents", headers=d, json=f.incident(type="hazmat_leak", level=1))
    assert inc.status_code == 201, inc.text
    units = {t["assignee_unit_id"] for t in tasks_of(client, d, inc.json()["id"])}
    assert str(f.did("org:fire")) not in units and str(f.did("org:fire2")) not in units


def test_unit_members(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    unit = f.did("org:ems2")
    url = f"{A}/organisations/{unit}/members"
    home = {m["username"] for m in client.get(url, headers=admin).json() if m["home"]}
    assert "ems2" in home
    ems1 = f.did("user:ems1")
    added = client.put(f"{url}/{ems1}", headers=admin, json={"role": "leader"})
    assert added.status_code == 201, added.text
    row = next(m for m in added.json() if m["user_id"] == str(ems1))
    assert (row["home"], row["member_role"]) == (False, "leader")
    assert client.put(f"{url}/{ems1}", headers=admin, json={}).status_code == 200
    # Their home unit is not a membership.
    home_user = f.did("user:ems2")
    refused = client.put(f"{url}/{home_user}", headers=admin, json={})
    assert refused.status_code == 409 and refused.json()["code"] == "home_organisation"
    assert client.delete(f"{url}/{ems1}", headers=admin).status_code == 204
    assert client.delete(f"{url}/{ems1}", headers=admin).status_code == 404
    assert str(ems1) not in {m["user_id"] for m in client.get(url, headers=admin).json()}
    assert client.put(f"{url}/{uuid.uuid4()}", headers=admin, json={}).status_code == 404
    actions = [e["action"] for e in _audit(client, auth, entity="organisation", entity_id=unit)]
    assert actions[:3] == ["remove_member", "add_member", "add_member"]


def test_edit_and_deactivate_an_enterprise(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    ent = f.did("enterprise:bund-mall")
    moved = client.patch(
        f"{A}/enterprises/{ent}",
        headers=admin,
        json={"name": "外滩商场", "location": f.point(*f.IN_GRID_B)},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["grid_id"] == str(f.did("grid:B")) and moved.json()["name"] == "外滩商场"
    bad = client.patch(f"{A}/enterprises/{ent}", headers=admin, json={"org_id": str(uuid.uuid4())})
    assert bad.status_code == 422
    assert client.post(f"{A}/enterprises/{ent}/deactivate", headers=admin).status_code == 200
    assert client.get(f"{A}/enterprises/{ent}", headers=admin).status_code == 404
    assert client.post(f"{A}/enterprises/{ent}/reactivate", headers=admin).status_code == 200
    assert client.get(f"{A}/enterprises/{ent}", headers=admin).status_code == 200


def test_deactivate_a_grid(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    grid = f.did("grid:B")
    assert client.post(f"{A}/grids/{grid}/deactivate", headers=admin).status_code == 200
    # A hazard reported there now takes no grid.
    hz = client.post(f"{A}/hazards", headers=auth("dispatcher"), json=f.hazard(at=f.IN_GRID_B))
    assert hz.status_code == 201 and hz.json()["grid_id"] is None
    assert client.post(f"{A}/grids/{grid}/reactivate", headers=admin).status_code == 200
    assert client.post(f"{A}/grids/{uuid.uuid4()}/reactivate", headers=admin).status_code == 404


def _login(client: TestClient[Any], username: str, password: str) -> Any:
    return client.post(
        f"{A}/auth/login",
        json={"username": username, "password": password, "device_id": "admin-test"},
    )


def test_reenable_a_user(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    body = f.user("responder", org="ems")
    uid = client.post(f"{A}/users", headers=admin, json=body).json()["id"]
    assert client.post(f"{A}/users/{uid}/enable", headers=admin).status_code == 409
    assert client.post(f"{A}/users/{uid}/disable", headers=admin).status_code == 200
    assert _login(client, body["username"], body["password"]).status_code == 401
    enabled = client.post(f"{A}/users/{uid}/enable", headers=admin)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert _login(client, body["username"], body["password"]).status_code == 200
    actions = [e["action"] for e in _audit(client, auth, entity="user", entity_id=uid)]
    assert [a for a in actions if a in ("enable", "disable")][:2] == ["enable", "disable"]


def test_reset_password_signs_the_user_out_everywhere(
    client: TestClient[Any], auth: Sessions
) -> None:
    admin = auth("admin")
    body = f.user("responder", org="ems")
    uid = client.post(f"{A}/users", headers=admin, json=body).json()["id"]
    pairs = [_login(client, body["username"], body["password"]).json() for _ in range(2)]
    for pair in pairs:
        me = client.get(f"{A}/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 200
    short = client.post(f"{A}/users/{uid}/password", headers=admin, json={"password": "short"})
    assert short.status_code == 400
    r = client.post(f"{A}/users/{uid}/password", headers=admin, json={"password": "new secret 42"})
    assert r.status_code == 200, r.text
    for pair in pairs:
        me = client.get(f"{A}/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 401  # the live session ended, not only the refresh token
        again = client.post(
            f"{A}/auth/refresh",
            json={"refresh_token": pair["refresh_token"], "device_id": "admin-test"},
        )
        assert again.status_code == 401
    assert _login(client, body["username"], body["password"]).status_code == 401
    assert _login(client, body["username"], "new secret 42").status_code == 200
    entry = _audit(client, auth, entity="user", entity_id=uid, action="reset_password")[0]
    assert "password" not in str(entry["detail"]).lower()


def test_retire_a_plan(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    plan = f.did("plan:hazmat-leak-ii")
    r = client.post(f"{A}/plans/{plan}/retire", headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.post(f"{A}/plans/{plan}/retire", headers=admin).status_code == 409
    active = client.get(f"{A}/plans", headers=admin).json()
    assert str(plan) not in {p["id"] for p in active}
    every = client.get(f"{A}/plans", headers=admin, params={"all_versions": True}).json()
    assert str(plan) in {p["id"] for p in every}
    # A retired plan dispatches nothing.
    inc = client.post(
        f"{A}/incidents", headers=auth("dispatcher"), json=f.incident(type="hazmat_leak", level=1)
    ).json()
    runs = client.get(f"{A}/incidents/{inc['id']}/plan-runs", headers=auth("dispatcher")).json()
    assert runs == []


def test_change_a_users_role_area_and_organisation(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    body = f.user("responder", org="ems")
    uid = client.post(f"{A}/users", headers=admin, json=body).json()["id"]
    token = _login(client, body["username"], body["password"]).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"{A}/stats/hazards", headers=headers).status_code == 403
    area = str(f.did("area:huangpu"))
    r = client.patch(
        f"{A}/users/{uid}", headers=admin, json={"role": "dispatcher", "area_id": area}
    )
    assert r.status_code == 200 and (r.json()["role"], r.json()["area_id"]) == ("dispatcher", area)
    # The same session has the new role at its next request.
    assert client.get(f"{A}/stats/hazards", headers=headers).status_code == 200
    refused = client.patch(
        f"{A}/users/{uid}", headers=admin, json={"role": "responder", "org_id": None}
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "org_id"
    bad_area = client.patch(f"{A}/users/{uid}", headers=admin, json={"area_id": str(uuid.uuid4())})
    assert bad_area.status_code == 422
    entry = _audit(client, auth, entity="user", entity_id=uid, action="update")[0]
    assert entry["detail"]["role"] == "dispatcher"


def test_dispatchers_read_their_own_areas_audit(client: TestClient[Any], auth: Sessions) -> None:
    admin, d = auth("admin"), auth("dispatcher")
    inside = client.post(f"{A}/incidents", headers=admin, json=f.incident()).json()["id"]
    outside = client.post(
        f"{A}/incidents", headers=admin, json=f.incident(at=f.OUTSIDE_DISTRICT)
    ).json()["id"]
    mine = client.post(f"{A}/incidents", headers=d, json=f.incident()).json()["id"]
    seen = {
        e["entity_id"]
        for e in client.get(f"{A}/audit", headers=d, params={"entity": "incident"}).json()
    }
    assert inside in seen and mine in seen and outside not in seen
    every = {e["entity_id"] for e in _audit(client, auth, entity="incident")}
    assert {inside, outside, mine} <= every
    for role in ("fire1", "inspector1", "enterprise1"):
        assert client.get(f"{A}/audit", headers=auth(role)).status_code == 403


def test_audit_export_as_csv(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    client.post(f"{A}/incidents", headers=admin, json=f.incident())
    r = client.get(
        f"{A}/audit",
        headers={**admin, "Accept-Language": "zh-CN"},
        params={"format": "csv", "entity": "incident"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="audit.csv"'
    assert r.content.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == ["编号", "时间", "操作人", "操作", "记录类型", "记录", "区域", "详情"]
    assert rows[1][3] == "create" and rows[1][4] == "incident"  # values are not translated
    english = client.get(
        f"{A}/audit", headers={**admin, "Accept-Language": "en"}, params={"format": "csv"}
    )
    assert english.content.decode("utf-8-sig").startswith("Id,Time,Actor,Action,")


def test_the_cli_scripts_what_an_operator_does(
    client: TestClient[Any], auth: Sessions, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    env = {
        "LIANDONG_DATABASE_URL": database_url,
        "LIANDONG_VAR_DIR": str(tmp_path),
        "LIANDONG_SECRET_KEY": settings.secret_key,
    }
    body = f.user("responder", org="ems")
    client.post(f"{A}/users", headers=auth("admin"), json=body)
    name = body["username"]

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env)

    assert run("user", "disable", name).exit_code == 0
    assert _login(client, name, body["password"]).status_code == 401
    assert run("user", "enable", name).exit_code == 0
    again = run("user", "enable", name)
    assert again.exit_code != 0 and "already active" in again.output
    pair = _login(client, name, body["password"]).json()
    reset = run("user", "reset-password", name, "--password", "cli secret 99")
    assert reset.exit_code == 0, reset.output
    me = client.get(f"{A}/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 401
    assert _login(client, name, "cli secret 99").status_code == 200
    moved = run("user", "set", name, "--role", "inspector", "--org-id", "none")
    assert moved.exit_code == 0, moved.output
    refused = run("user", "set", name, "--role", "responder")
    assert refused.exit_code != 0 and "organisation" in refused.output
    unit = str(f.did("org:ems2"))
    assert run("org", "add-member", unit, name, "--leader").exit_code == 0
    members = client.get(f"{A}/organisations/{unit}/members", headers=auth("admin")).json()
    assert any(m["username"] == name and m["member_role"] == "leader" for m in members)
    assert run("org", "remove-member", unit, name).exit_code == 0
    assert run("org", "deactivate", unit).exit_code == 0
    assert run("org", "reactivate", unit).exit_code == 0
    assert run("user", "enable", "nobody-here").exit_code != 0
    actions = [
        e["action"] for e in _audit(client, auth, entity="user", entity_id=_uid(client, auth, name))
    ]
    assert {"disable", "enable", "reset_password", "update"} <= set(actions)


def _uid(client: TestClient[Any], auth: Sessions, username: str) -> str:
    users = client.get(f"{A}/users", headers=auth("admin"), params={"limit": 1000}).json()
    return str(next(u["id"] for u in users if u["username"] == username))
