"""Request bodies for tests: plain functions with sensible defaults (points inside Huangpu)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from server.demo import did
from server.domain.checks.schedule import week_of, week_offset
from server.models import utcnow

__all__ = ["did"]

_seq = itertools.count(1)

# Inside demo grid A (Nanjing Rd E) and grid B (Yuyuan).
IN_GRID_A = (121.4855, 31.2375)
IN_GRID_B = (121.4900, 31.2200)
OUTSIDE_DISTRICT = (121.60, 31.30)  # in Shanghai, outside Huangpu


def week(offset: int = 0) -> str:
    """The ISO week `offset` weeks from this one (Shanghai): self-checks accept this week and
    the one before (the default grace)."""
    return week_offset(week_of(utcnow()), offset)


def point(lon: float, lat: float) -> dict[str, Any]:
    """A GeoJSON point."""
    return {"type": "Point", "coordinates": [lon, lat]}


def square(lon: float, lat: float, d: float = 0.002) -> dict[str, Any]:
    """A small closed square polygon around a point."""
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def incident(at: tuple[float, float] = IN_GRID_A, **kw: Any) -> dict[str, Any]:
    """An incident body."""
    body = {"type": "fire", "level": 2, "title": f"incident {next(_seq)}", "location": point(*at)}
    body.update(kw)
    return body


def task(at: tuple[float, float] = IN_GRID_A, unit: str = "fire", **kw: Any) -> dict[str, Any]:
    """A task body assigned to a demo unit."""
    body = {
        "title": f"task {next(_seq)}",
        "location": point(*at),
        "assignee_unit_id": str(did(f"org:{unit}")),
    }
    body.update(kw)
    return body


def hazard(at: tuple[float, float] = IN_GRID_A, **kw: Any) -> dict[str, Any]:
    """A hazard body."""
    body = {
        "category": "fire",
        "severity": "high",
        "description": f"blocked fire exit {next(_seq)}",
        "location": point(*at),
        "accuracy_m": 8.5,
    }
    body.update(kw)
    return body


def in_hours(hours: float) -> str:
    """An RFC 3339 UTC time `hours` from now."""
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def alert(at: tuple[float, float] = IN_GRID_A, **kw: Any) -> dict[str, Any]:
    """A draft warning body (yellow: its drafter may publish it alone)."""
    n = next(_seq)
    body = {
        "color": "yellow",
        "category": ["Met"],
        "event": "暴雨",
        "headline": f"暴雨黄色预警 {n}",
        "description": "预计未来6小时内降雨量将达50毫米以上。",
        "instruction": "注意防范城市内涝，避免前往低洼地带。",  # noqa: RUF001
        "area_desc": "黄浦区南京东路街道",
        "response_type": ["Prepare"],
        "expires": in_hours(6),
        "area": square(*at),
        "en": {
            "event": "Rainstorm",
            "headline": f"Yellow rainstorm warning {n}",
            "description": "More than 50 mm of rain expected within 6 hours.",
        },
    }
    body.update(kw)
    return body


def resource(at: tuple[float, float] = IN_GRID_A, **kw: Any) -> dict[str, Any]:
    """A resource body."""
    body = {"kind": "shelter", "name": f"shelter {next(_seq)}", "location": point(*at)}
    body.update(kw)
    return body


def user(role: str, org: str | None = None, **kw: Any) -> dict[str, Any]:
    """A user body with a unique name."""
    n = next(_seq)
    body: dict[str, Any] = {
        "username": f"{role[:8]}{n}x{uuid.uuid4().hex[:6]}",
        "display_name": f"{role} {n}",
        "password": "correct horse battery",
        "role": role,
    }
    if org:
        body["org_id"] = str(did(f"org:{org}"))
    body.update(kw)
    return body
