"""Safety self-check templates and weekly submissions; enterprise registration."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from server.demo import did
from tests import factories as f
from tests.conftest import Sessions


def _weekly(client: TestClient[Any], auth: Sessions) -> dict[str, Any]:
    r = client.get(f"/api/v1/check-templates/{did('check:weekly')}", headers=auth("enterprise1"))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_enterprise_staff_submit_their_week_once(client: TestClient[Any], auth: Sessions) -> None:
    tpl = _weekly(client, auth)
    assert [i["position"] for i in tpl["items"]] == [1, 2, 3, 4, 5]
    results = [{"item_id": i["id"], "result": "pass"} for i in tpl["items"]]
    results[2] = {"item_id": tpl["items"][2]["id"], "result": "fail", "note": "私拉电线"}
    body = {"template_id": tpl["id"], "week": f.week(), "results": results}
    r = client.post("/api/v1/check-submissions", headers=auth("enterprise1"), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["enterprise_id"] == str(did("enterprise:bund-mall"))
    again = client.post("/api/v1/check-submissions", headers=auth("enterprise1"), json=body)
    assert again.status_code == 409

    # Supervisors of that place see it; others do not.
    for who, sees in (
        ("admin", True),
        ("dispatcher", True),
        ("inspector1", True),
        ("inspector2", False),
        ("enterprise1", True),
    ):
        listed = client.get("/api/v1/check-submissions", headers=auth(who)).json()
        assert (r.json()["id"] in {x["id"] for x in listed}) is sees, who
    assert client.get("/api/v1/check-submissions", headers=auth("fire1")).status_code == 403


def test_submission_must_answer_every_item_once(client: TestClient[Any], auth: Sessions) -> None:
    tpl = _weekly(client, auth)
    partial = [{"item_id": i["id"], "result": "pass"} for i in tpl["items"][:-1]]
    body = {"template_id": tpl["id"], "week": f.week(-1), "results": partial}
    r = client.post("/api/v1/check-submissions", headers=auth("enterprise1"), json=body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "results"
    bad_week = {**body, "week": "2026-47"}
    assert (
        client.post(
            "/api/v1/check-submissions", headers=auth("enterprise1"), json=bad_week
        ).status_code
        == 400
    )
    full = [{"item_id": i["id"], "result": "na"} for i in tpl["items"]]
    as_inspector = {"template_id": tpl["id"], "week": f.week(), "results": full}
    assert (
        client.post(
            "/api/v1/check-submissions", headers=auth("inspector1"), json=as_inspector
        ).status_code
        == 403
    )


def test_new_template_version_replaces_the_old(client: TestClient[Any], auth: Sessions) -> None:
    body = {"code": "night-check", "name": "夜间检查", "items": [{"text": "门窗关闭"}]}
    v1 = client.post("/api/v1/check-templates", headers=auth("admin"), json=body).json()
    v2 = client.post("/api/v1/check-templates", headers=auth("admin"), json=body).json()
    assert (v1["version"], v2["version"]) == (1, 2)
    active = {t["id"] for t in client.get("/api/v1/check-templates", headers=auth("fire1")).json()}
    assert v2["id"] in active and v1["id"] not in active
    assert (
        client.post("/api/v1/check-templates", headers=auth("dispatcher"), json=body).status_code
        == 403
    )


def test_enterprise_registration_derives_grid(client: TestClient[Any], auth: Sessions) -> None:
    body = {"name": "豫园商铺", "location": f.point(*f.IN_GRID_B)}
    r = client.post("/api/v1/enterprises", headers=auth("admin"), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["grid_id"] == str(did("grid:B"))
    assert (
        client.get(f"/api/v1/enterprises/{r.json()['id']}", headers=auth("inspector2")).status_code
        == 200
    )
    assert (
        client.get(f"/api/v1/enterprises/{r.json()['id']}", headers=auth("inspector1")).status_code
        == 404
    )
    assert (
        client.post("/api/v1/enterprises", headers=auth("dispatcher"), json=body).status_code == 403
    )
    wrong_org = {**body, "org_id": str(did("org:fire"))}
    assert (
        client.post("/api/v1/enterprises", headers=auth("admin"), json=wrong_org).status_code == 422
    )


def test_an_organisation_with_two_enterprises_names_the_one_it_acts_for(
    client: TestClient[Any], auth: Sessions
) -> None:
    org = str(did("org:enterprise"))
    body = {"name": "外滩二店", "location": f.point(*f.IN_GRID_A), "org_id": org}
    second = client.post("/api/v1/enterprises", headers=auth("admin"), json=body)
    assert second.status_code == 201, second.text
    staff = auth("enterprise1")
    # Naming none is ambiguous now: a clear 422, not a 500 (nor an arbitrary pick).
    r = client.post("/api/v1/hazards", headers=staff, json=f.hazard())
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "enterprise_id"
    tpl = _weekly(client, auth)
    results = [{"item_id": i["id"], "result": "pass"} for i in tpl["items"]]
    sub = {"template_id": tpl["id"], "week": f.week(), "results": results}
    r = client.post("/api/v1/check-submissions", headers=staff, json=sub)
    assert r.status_code == 422, r.text
    # Naming one of theirs works; another organisation's is refused.
    sid = second.json()["id"]
    r = client.post("/api/v1/hazards", headers=staff, json=f.hazard(enterprise_id=sid))
    assert r.status_code == 201, r.text
    assert r.json()["enterprise_id"] == sid
    r = client.post("/api/v1/check-submissions", headers=staff, json={**sub, "enterprise_id": sid})
    assert r.status_code == 201, r.text
    assert r.json()["enterprise_id"] == sid
    # A deactivated enterprise no longer counts: the one left is theirs again.
    off = client.post(f"/api/v1/enterprises/{sid}/deactivate", headers=auth("admin"))
    assert off.status_code == 200, off.text
    r = client.post("/api/v1/hazards", headers=staff, json=f.hazard())
    assert r.status_code == 201, r.text
    assert r.json()["enterprise_id"] == str(did("enterprise:bund-mall"))


def test_a_new_version_published_mid_week_does_not_open_a_second_submission(
    client: TestClient[Any], auth: Sessions
) -> None:
    v1 = _weekly(client, auth)
    staff = auth("enterprise1")
    fail_one = [{"item_id": i["id"], "result": "fail", "note": "x"} for i in v1["items"][:1]]
    results = fail_one + [{"item_id": i["id"], "result": "pass"} for i in v1["items"][1:]]
    body = {"template_id": v1["id"], "week": f.week(), "results": results}
    assert client.post("/api/v1/check-submissions", headers=staff, json=body).status_code == 201
    new = {"code": v1["code"], "name": v1["name"], "items": [{"text": "消防通道畅通"}]}
    v2 = client.post("/api/v1/check-templates", headers=auth("admin"), json=new)
    assert v2.status_code == 201, v2.text
    item = v2.json()["items"][0]["id"]
    again = {
        "template_id": v2.json()["id"],
        "week": f.week(),
        "results": [{"item_id": item, "result": "fail", "note": "堵塞"}],
    }
    r = client.post("/api/v1/check-submissions", headers=staff, json=again)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "week_taken"
    # The week's check stays done once, by the first submission.
    due = client.get("/api/v1/check-dues", headers=staff).json()
    assert [d["status"] for d in due if d["week"] == f.week()] == ["done"]
