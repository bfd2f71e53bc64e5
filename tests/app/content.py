"""Realistic demo content for the app, made the way dispatch's console makes it (REST): an
incident with tasks for firefighter 1, hazards in grid A, and public warnings; the
benchmark's thousands of hazards as a phone sends them (sync pushes, `many_hazards`)."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from schemas.sync import (
    SCHEMA_VERSION,
    AckStatus,
    Mutation,
    Op,
    PushRequest,
    msgpack_encoder,
    push_reply_msgpack,
)
from server.demo import did
from tests.app.harness import login

CENTRE = (121.4855, 31.2375)


def _post(base: str, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> Any:
    r = httpx.post(f"{base}{path}", headers=headers, json=body, timeout=30)
    assert r.status_code in (200, 201), f"{path}: {r.status_code} {r.text}"
    return r.json()


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def box(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def dispatch_fire(base: str) -> dict[str, Any]:
    """A warehouse fire (level II) with two tasks for firefighter 1."""
    d = login(base, "dispatcher")
    incident = _post(
        base,
        "/api/v1/incidents",
        d,
        {
            "type": "fire",
            "level": 2,
            "title": "南京东路仓库火灾",
            "description": "三层仓库起火，有浓烟，可能有人员被困。",
            "location": point(121.4842, 31.2381),
        },
    )
    fire1 = str(did("user:fire1"))
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    tasks = [
        _post(
            base,
            "/api/v1/tasks",
            d,
            {
                "title": "灭火救援：九江路仓库",
                "description": "携带破拆工具，从北侧进入。",
                "incident_id": incident["id"],
                "location": point(121.4842, 31.2381),
                "priority": "urgent",
                "deadline": due,
                "assignee_user_id": fire1,
            },
        ),
        _post(
            base,
            "/api/v1/tasks",
            d,
            {
                "title": "疏散周边商铺人员",
                "incident_id": incident["id"],
                "location": point(121.4861, 31.2369),
                "deadline": due,
                "assignee_user_id": fire1,
            },
        ),
    ]
    return {"incident": incident, "tasks": tasks}


def report_hazards(base: str, n: int = 3) -> list[dict[str, Any]]:
    """Hazards in grid A, reported by its inspector over REST."""
    h = login(base, "inspector1")
    samples = [
        ("electrical", "high", "配电箱门损坏，电线裸露，雨天有触电风险。"),
        ("fire", "medium", "商场消防通道堆放纸箱，堵塞疏散通道。"),
        ("structural", "low", "广告牌支架锈蚀，螺栓松动。"),
        ("gas", "critical", "餐馆燃气管道接口有异味，疑似泄漏。"),
    ]
    out = []
    for i in range(n):
        category, severity, text = samples[i % len(samples)]
        lon, lat = 121.478 + 0.002 * i, 31.236 + 0.001 * i
        body: dict[str, Any] = {
            "category": category,
            "severity": severity,
            "description": text,
            "location": point(lon, lat),
            "accuracy_m": 6.0,
        }
        if i % 2:  # at the demo enterprise (the mall): its officer's phone holds these
            body["enterprise_id"] = str(did("enterprise:bund-mall"))
        out.append(_post(base, "/api/v1/hazards", h, body))
    return out


def assign_to_enterprise(base: str, hazard_id: str) -> None:
    """Dispatch verifies a hazard and assigns its rectification to the demo enterprise."""
    d = login(base, "dispatcher")
    path = f"/api/v1/hazards/{hazard_id}/transitions"
    _post(base, path, d, {"to_status": "verified"})
    _post(
        base,
        path,
        d,
        {
            "to_status": "rectification_assigned",
            "assignee_enterprise_id": str(did("enterprise:bund-mall")),
            "deadline": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
            "note": "三日内整改完毕并拍照上传。",
        },
    )


def publish_warnings(base: str) -> list[dict[str, Any]]:
    """A rainstorm warning (yellow) raised to orange by an Update, which the duty chief
    approves; besides the demo's own gale warning."""
    d, chief = login(base, "dispatcher"), login(base, "chief")
    area = box(121.46, 31.21, 121.51, 31.25)
    expires = (datetime.now(UTC) + timedelta(hours=12)).isoformat()
    first = _post(
        base,
        "/api/v1/alerts",
        d,
        {
            "color": "yellow",
            "category": ["Met"],
            "event": "暴雨",
            "headline": "黄浦区暴雨黄色预警",
            "description": "预计未来6小时降雨量将达50毫米以上。",
            "instruction": "减少户外活动，远离低洼地带和地下空间。",
            "area_desc": "黄浦区全境",
            "area": area,
            "expires": expires,
            "en": {
                "event": "Rainstorm",
                "headline": "Yellow rainstorm warning for Huangpu",
                "description": "More than 50 mm of rain expected within 6 hours.",
                "instruction": "Stay indoors; keep away from low-lying and underground places.",
                "area_desc": "All of Huangpu District",
            },
        },
    )
    _post(base, f"/api/v1/alerts/{first['id']}/publish", d, None)
    raised = _post(
        base,
        "/api/v1/alerts",
        d,
        {
            "msg_type": "Update",
            "references": [first["id"]],
            "color": "orange",
            "headline": "黄浦区暴雨橙色预警（升级）",
            "instruction": "停止户外作业，转移低洼地带人员。",
            "en": {
                "event": "Rainstorm",
                "headline": "Rainstorm warning raised to orange",
                "description": "More than 50 mm of rain expected within 3 hours.",
                "instruction": "Stop outdoor work; move people out of low-lying areas.",
                "area_desc": "All of Huangpu District",
            },
        },
    )
    _post(base, f"/api/v1/alerts/{raised['id']}/publish", chief, None)
    return [first, raised]


def rectify_over_rest(base: str, hazard_id: str) -> None:
    """The enterprise reports a hazard rectified with a declared after-photo (REST)."""
    e = login(base, "enterprise1")
    sha = hashlib.sha256(f"after-photo {hazard_id}".encode()).hexdigest()
    _post(base, "/api/v1/media", e, {"sha256": sha, "content_type": "image/jpeg"})
    _post(
        base,
        f"/api/v1/hazards/{hazard_id}/transitions",
        e,
        {"to_status": "rectified", "photo_sha256": [sha], "note": "已更换配电箱门并整理线路。"},
    )


def get(base: str, path: str, user: str) -> Any:
    r = httpx.get(f"{base}{path}", headers=login(base, user), timeout=30)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
    return r.json()


#: hazards per seeding push: a push is one transaction, and a shorter one leaves the server's
#: own jobs (the escalation pass) their turn at SQLite's write lock, with a pause after each
#: (SQLite's busy handler polls: pushes back to back starved it, "database is locked")
SEED_BATCH = 100
SEED_PAUSE_S = 0.2


def many_hazards(base: str, n: int) -> None:
    """`n` hazards in grid A reported by its inspector from a second phone of theirs that was
    offline: batches of creates through the sync push (`/api/v1/sync/push`, each one through
    `hazards.create_hazard` as a REST report is), on one kept-alive connection: ~30 ms a
    hazard (the domain action's own cost), against ~80 ms over REST with a connection each.
    A shed push (503 overloaded) is sent again after its Retry-After; the same seqs make a
    repeated push idempotent."""
    cats = ("fire", "electrical", "gas", "structural", "road", "other")
    sev = ("low", "medium", "high", "critical")
    device = f"seed-{uuid.uuid4().hex[:12]}"
    hlc = int(time.time() * 1000) << 16
    mutations = [
        Mutation(
            seq=i + 1,
            entity="hazard",
            id=uuid.uuid4(),
            hlc=hlc + i,
            op=Op.CREATE,
            fields={
                "category": cats[i % len(cats)],
                "severity": sev[i % len(sev)],
                "description": f"巡查发现隐患第 {i} 号：消防器材过期，需要更换。",
                "location": point(121.4755 + (i % 97) * 0.00014, 31.2325 + (i % 89) * 0.00012),
                "accuracy_m": 5.0,
            },
        )
        for i in range(n)
    ]
    headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
    with httpx.Client(base_url=base, timeout=120) as c:
        for lo in range(0, n, SEED_BATCH):
            batch = mutations[lo : lo + SEED_BATCH]
            body = msgpack_encoder.encode(
                PushRequest(schema_version=SCHEMA_VERSION, device_id=device, mutations=batch)
            )
            r = httpx.Response(503)
            for _attempt in range(30):
                r = c.post(
                    "/api/v1/sync/push", content=body, headers=login(base, "inspector1") | headers
                )
                if r.status_code == 401:  # a run longer than the access token's life
                    login.cache_clear()
                    continue
                if r.status_code != 503:
                    break
                time.sleep(float(r.headers.get("retry-after", "1")))
            assert r.status_code == 200, r.text
            acks = push_reply_msgpack.decode(r.content).acks
            refused = [a for a in acks if a.status is AckStatus.REFUSED]
            assert not refused and len(acks) == len(batch), refused[:3]
            time.sleep(SEED_PAUSE_S)
