"""Realistic demo content for the app, made the way dispatch's console makes it (REST): an
incident with tasks for firefighter 1, hazards in grid A, and public warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from server.demo import did
from tests.app.harness import login

CENTRE = (121.4855, 31.2375)


def _post(base: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
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
        out.append(
            _post(
                base,
                "/api/v1/hazards",
                h,
                {
                    "category": category,
                    "severity": severity,
                    "description": text,
                    "location": point(lon, lat),
                    "accuracy_m": 6.0,
                },
            )
        )
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
    """A rainstorm warning (yellow), then its update to orange, and a heat warning (blue)."""
    d = login(base, "dispatcher")
    area = box(121.46, 31.21, 121.51, 31.25)
    expires = (datetime.now(UTC) + timedelta(hours=12)).isoformat()
    first = _post(
        base,
        "/api/v1/alerts",
        d,
        {
            "event": "暴雨",
            "color": "yellow",
            "urgency": "Expected",
            "certainty": "Likely",
            "headline": "黄浦区暴雨黄色预警",
            "area_desc": "黄浦区",
            "area": area,
            "description": "预计未来6小时降雨量将达50毫米以上。",
            "instruction": "减少户外活动，远离低洼地带和地下空间。",
            "expires": expires,
        },
    )
    update = _post(
        base,
        "/api/v1/alerts",
        d,
        {
            "event": "暴雨",
            "color": "orange",
            "urgency": "Immediate",
            "certainty": "Observed",
            "headline": "黄浦区暴雨橙色预警（升级）",
            "area_desc": "黄浦区",
            "area": area,
            "msg_type": "Update",
            "references": first.get("identifier", first["id"]),
            "description": "3小时内降雨量将达50毫米以上。",
            "instruction": "停止户外作业，转移低洼地带人员。",
            "expires": expires,
        },
    )
    heat = _post(
        base,
        "/api/v1/alerts",
        d,
        {
            "event": "高温",
            "color": "blue",
            "urgency": "Future",
            "certainty": "Possible",
            "headline": "黄浦区高温蓝色预警",
            "area_desc": "黄浦区",
            "area": area,
            "instruction": "注意防暑降温。",
            "expires": expires,
        },
    )
    return [first, update, heat]
