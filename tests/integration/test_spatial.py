"""Spatial filters and GeoJSON on both backends, checked against shapely/haversine in Python."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from tests import factories as f
from tests.conftest import Sessions
from tests.snapshots import DatabaseState

CENTRE = (121.4300, 31.1500)  # a quiet corner of Shanghai, outside the demo district


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


@pytest.fixture(scope="module")
def ring_of_resources(
    client: TestClient[Any], auth: Sessions, database_state: DatabaseState
) -> Iterator[dict[str, tuple[float, float]]]:
    """Resources at known distances (50 m .. 3 km) and bearings around CENTRE, kept for this
    module's tests."""
    placed: dict[str, tuple[float, float]] = {}
    for i, dist in enumerate([50, 150, 400, 900, 1600, 3000]):
        bearing = math.radians(i * 57)
        dlat = dist * math.cos(bearing) / 111_320
        dlon = dist * math.sin(bearing) / (111_320 * math.cos(math.radians(CENTRE[1])))
        at = (CENTRE[0] + dlon, CENTRE[1] + dlat)
        r = client.post(
            "/api/v1/resources", headers=auth("admin"), json=f.resource(at=at, kind="depot")
        )
        assert r.status_code == 201, r.text
        placed[r.json()["id"]] = at
    with database_state.kept():
        yield placed


@pytest.mark.parametrize("radius", [100, 500, 1000, 2000, 5000])
def test_near_matches_geodesic_distance(
    client: TestClient[Any], auth: Sessions, ring_of_resources: dict[str, Any], radius: int
) -> None:
    r = client.get(
        "/api/v1/resources",
        headers=auth("fire1"),
        params={"near": f"{CENTRE[0]},{CENTRE[1]}", "radius_m": radius, "kind": "depot"},
    )
    assert r.status_code == 200
    items = r.json()["items"]
    got = {i["id"] for i in items}
    expected = {k for k, at in ring_of_resources.items() if haversine_m(CENTRE, at) <= radius}
    assert got == expected
    dists = [i["distance_m"] for i in items]
    assert dists == sorted(dists)  # nearest first
    for item in items:
        truth = haversine_m(CENTRE, ring_of_resources[item["id"]])
        assert abs(item["distance_m"] - truth) < max(2.0, truth * 0.005)


def test_pages_cover_everything_once(
    client: TestClient[Any], auth: Sessions, ring_of_resources: dict[str, Any]
) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"near": f"{CENTRE[0]},{CENTRE[1]}", "radius_m": 5000, "limit": 2}
    for _ in range(10):
        body = client.get("/api/v1/resources", headers=auth("admin"), params=params).json()
        seen += [i["id"] for i in body["items"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert sorted(seen) == sorted(ring_of_resources)
    assert len(seen) == len(set(seen))

    newest: list[str] = []
    params = {"limit": 3, "kind": "depot"}
    while True:
        body = client.get("/api/v1/resources", headers=auth("admin"), params=params).json()
        newest += [i["id"] for i in body["items"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert len(newest) == len(set(newest)) and set(ring_of_resources) <= set(newest)


def test_bbox_and_within(
    client: TestClient[Any], auth: Sessions, ring_of_resources: dict[str, Any]
) -> None:
    w, s, e, n = CENTRE[0] - 0.005, CENTRE[1] - 0.005, CENTRE[0] + 0.005, CENTRE[1] + 0.005
    inside = {k for k, (x, y) in ring_of_resources.items() if w <= x <= e and s <= y <= n}
    assert 0 < len(inside) < len(ring_of_resources)
    r = client.get("/api/v1/resources", headers=auth("admin"), params={"bbox": f"{w},{s},{e},{n}"})
    assert {i["id"] for i in r.json()["items"]} == inside
    poly = {
        "type": "Polygon",
        "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
    }
    r = client.get("/api/v1/resources", headers=auth("admin"), params={"within": json.dumps(poly)})
    assert {i["id"] for i in r.json()["items"]} == inside


def test_geojson_feature_collection(client: TestClient[Any], auth: Sessions) -> None:
    r = client.get(
        "/api/v1/grids", headers={**auth("inspector1"), "Accept": "application/geo+json"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["type"] == "FeatureCollection"
    feature = body["features"][0]
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "Polygon"
    assert "boundary" not in feature["properties"]
    assert feature["properties"]["code"] == "HP-NJD-01"


def test_hazard_gets_grid_and_area_from_its_point(client: TestClient[Any], auth: Sessions) -> None:
    r = client.post("/api/v1/hazards", headers=auth("inspector2"), json=f.hazard(at=f.IN_GRID_B))
    assert r.status_code == 201
    assert r.json()["grid_id"] == str(f.did("grid:B"))
    assert r.json()["area_id"] == str(f.did("area:yuyuan"))
    mine = client.get("/api/v1/hazards", headers=auth("inspector2")).json()["items"]
    assert r.json()["id"] in {h["id"] for h in mine}
    theirs = client.get("/api/v1/hazards", headers=auth("inspector1")).json()["items"]
    assert r.json()["id"] not in {h["id"] for h in theirs}
