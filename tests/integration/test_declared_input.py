"""Input is refused where the OpenAPI document says it is, and OPTIONS names every method.

The schemathesis suite finds these by chance; these tests pin them down.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import Sessions


@pytest.mark.parametrize("query", ["until=0.5", "since=1700000000", "until=2026-11-28"])
def test_query_times_are_rfc3339_text_not_numbers(
    client: TestClient[Any], auth: Sessions, query: str
) -> None:
    r = client.get(f"/api/v1/stats/incidents?{query}", headers=auth("admin"))
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == query.split("=", maxsplit=1)[0]
    ok = client.get("/api/v1/stats/incidents?until=2026-11-28T08:00:00Z", headers=auth("admin"))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("near=abc&radius_m=5", 400),  # the declared pattern
        ("near=1e5,2&radius_m=5", 400),
        ("bbox=1,2,3", 400),
        ("near=121.47,31.23&radius_m=500", 200),
        ("bbox=121,31,122,32", 200),
        ("near=200,0&radius_m=5", 422),  # matches the pattern, out of range: semantics
    ],
)
def test_spatial_filters_follow_their_declared_pattern(
    client: TestClient[Any], auth: Sessions, query: str, status: int
) -> None:
    r = client.get(f"/api/v1/incidents?{query}", headers=auth("admin"))
    assert r.status_code == status, r.text


def test_options_allow_lists_every_method_of_the_path(
    client: TestClient[Any], auth: Sessions
) -> None:
    """Litestar's automatic OPTIONS answered from the path's first route only."""
    assert client.options("/api/v1/users").headers["allow"] == "GET, OPTIONS, POST"
    hazard = client.options("/api/v1/hazards/e3e70682-c209-1cac-a29f-6fbed82c07cd")
    assert hazard.headers["allow"] == "DELETE, GET, OPTIONS, PATCH"


@pytest.mark.parametrize("query", ["record_id=null", "resolved=null", "entity=null&record_id=null"])
def test_null_is_no_value_of_a_typed_query_parameter(
    client: TestClient[Any], auth: Sessions, query: str
) -> None:
    """Litestar took the text `null` as "absent"; the document says a uuid or a boolean."""
    r = client.get(f"/api/v1/sync/conflicts?{query}", headers=auth("admin"))
    if query.startswith("entity"):  # `entity` is text: `null` is a name like any other
        assert r.json()["errors"][0]["field"] == "record_id"
    assert r.status_code == 400, r.text


def test_an_integral_number_is_an_integer_however_it_is_written(
    client: TestClient[Any], auth: Sessions
) -> None:
    """JSON has one number type: `4.0` is the integer 4 (JSON Schema agrees); `"4"` is text."""
    body = {
        "code": "flood-float",
        "name": "Flood",
        "incident_type": "flood",
        "min_level": 4.0,
        "templates": [
            {"key": "p", "unit_kind": "police", "title": "Police", "required_count": 2.0}
        ],
    }
    created = client.post("/api/v1/plans", headers=auth("admin"), json=body)
    assert created.status_code == 201, created.text
    assert (
        created.json()["min_level"] == 4 and created.json()["templates"][0]["required_count"] == 2
    )
    text = client.post(
        "/api/v1/plans", headers=auth("admin"), json={**body, "code": "f2", "min_level": "4"}
    )
    assert text.status_code == 400, text.text
    fraction = client.post(
        "/api/v1/plans", headers=auth("admin"), json={**body, "code": "f3", "min_level": 4.5}
    )
    assert fraction.status_code == 400, fraction.text


def test_a_sync_body_in_an_unknown_coding_is_a_415(client: TestClient[Any], auth: Sessions) -> None:
    """RFC 9110: a content coding the server does not speak is refused, not read as plain."""
    headers = {**auth("admin"), "Content-Type": "application/json", "Content-Encoding": "br"}
    r = client.post("/api/v1/sync/pull", headers=headers, content=b"{}")
    assert r.status_code == 415, r.text


def test_an_enterprise_address_fits_its_column(client: TestClient[Any], auth: Sessions) -> None:
    """A 401-character address was a 500 on PostgreSQL (a 400-character column) though the
    document allowed 4,000; now both say 400 and it is a 400 naming the field."""
    long = "x" * 401
    patch = client.patch(
        "/api/v1/enterprises/e3e70682-c209-1cac-a29f-6fbed82c07cd",
        headers=auth("admin"),
        json={"address": long},
    )
    assert patch.status_code == 400, patch.text
    assert "address" in patch.json()["detail"]
