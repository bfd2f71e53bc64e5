"""Helpers shared by the dispatch, push and statistics suites (not a conftest: explicit imports)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import make_engine, make_sessionmaker
from server.demo import did

T = TypeVar("T")

# Demo units that have a responder (the only ones the nearest-unit rule may pick).
DEMO_UNITS = {
    "fire": ("org:fire", "org:fire2"),
    "ems": ("org:ems", "org:ems2"),
    "police": ("org:police",),
}
UNIT_USER = {
    "org:fire": "fire1",
    "org:fire2": "fire2",
    "org:ems": "ems1",
    "org:ems2": "ems2",
    "org:police": "police1",
}


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres (good to ~0.5 %, plenty to tell units kilometres apart)."""
    (lon1, lat1), (lon2, lat2) = a, b
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def unit_locations(
    client: TestClient[Any], headers: dict[str, str]
) -> dict[str, tuple[float, float]]:
    """Demo unit key -> (lon, lat), read back from the API."""
    r = client.get("/api/v1/organisations", headers=headers, params={"limit": 500})
    assert r.status_code == 200, r.text
    by_id = {o["id"]: o for o in r.json()["items"]}
    out: dict[str, tuple[float, float]] = {}
    for keys in DEMO_UNITS.values():
        for key in keys:
            lon, lat = by_id[str(did(key))]["location"]["coordinates"]
            out[key] = (lon, lat)
    return out


def nearest(
    kind: str, at: tuple[float, float], locations: dict[str, tuple[float, float]]
) -> list[str]:
    """Demo units of `kind`, nearest first, by distances computed here (not by the server)."""
    return sorted(DEMO_UNITS[kind], key=lambda key: haversine_m(at, locations[key]))


def register_device(client: TestClient[Any], headers: dict[str, str], tag: str) -> str:
    """Register a fresh FCM device for the user; returns its token."""
    token = f"tok-{tag}-{uuid.uuid4().hex[:12]}"
    r = client.post(
        "/api/v1/devices",
        headers=headers,
        json={"device_id": f"phone-{tag}-{uuid.uuid4().hex[:6]}", "channel": "fcm", "token": token},
    )
    assert r.status_code == 200, r.text
    return token


def in_db(url: str, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `fn` in one committed transaction on its own engine (tests only)."""

    async def run() -> T:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await fn(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def tasks_of(
    client: TestClient[Any], headers: dict[str, str], incident_id: str
) -> list[dict[str, Any]]:
    """Every task of an incident, as the dispatcher sees them."""
    r = client.get(
        "/api/v1/tasks", headers=headers, params={"incident_id": incident_id, "limit": 500}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def unit_key(unit_id: str) -> str:
    """Demo unit key for an id."""
    for keys in DEMO_UNITS.values():
        for key in keys:
            if str(did(key)) == unit_id:
                return key
    raise KeyError(unit_id)
