"""What a county emergency office reports upward: hazards by source, category, grid and status
with rectification rates and overdue counts; response times by incident type, unit and period;
each as CSV headed in the reader's language, scoped by role and area."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from schemas.common import Role
from schemas.stats import HazardBy
from server.auth.principal import Principal
from server.config import Settings
from server.domain.stats.services import hazard_counts
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db, tasks_of
from tests.integration.test_hazard_loop import report, step, verified_and_assigned
from tests.integration.test_notify import set_language

S = "/api/v1/stats"


def _rows(client: TestClient[Any], headers: dict[str, str], **params: Any) -> list[Any]:
    r = client.get(f"{S}/hazards", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return list(r.json())


def _csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"  # the charset once
    assert response.content.startswith(codecs.BOM_UTF8)
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def _rectified(client: TestClient[Any], auth: Sessions, hazard_id: str) -> None:
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    r = step(client, auth("enterprise1"), hazard_id, "rectified", photo_sha256=[sha])
    assert r.status_code == 201, r.text


def test_hazards_by_category_grid_and_status(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    made = [report(client, auth, category="gas")["id"] for _ in range(3)]
    report(client, auth, category="electrical", at=f.IN_GRID_B)
    for hazard_id in made[:2]:
        verified_and_assigned(client, auth, hazard_id)
    _rectified(client, auth, made[0])

    by_category = {r["category"]: r for r in _rows(client, d, since=since)}
    gas = by_category["gas"]
    assert (gas["total"], gas["rectification_assigned"], gas["rectified"]) == (3, 2, 1)
    assert gas["rectification_rate"] == 0.5 and gas["overdue"] == 0
    assert by_category["electrical"]["rectification_rate"] is None  # none assigned
    assert gas["grid_id"] is None and gas["status"] is None  # not asked for

    rows = _rows(client, d, since=since, by=["grid", "status"])
    grid_a = str(f.did("grid:A"))
    assert {(r["grid_id"], r["status"], r["total"]) for r in rows if r["grid_id"] == grid_a} == {
        (grid_a, "reported", 1),
        (grid_a, "rectification_assigned", 1),
        (grid_a, "rectified", 1),
    }
    assert all(r["grid_name"] for r in rows if r["grid_id"])
    assert all(r["category"] is None for r in rows)


def test_overdue_counts_at_a_later_time(
    client: TestClient[Any], auth: Sessions, settings: Settings
) -> None:
    hazard = report(client, auth, category="fire")["id"]
    verified_and_assigned(client, auth, hazard)
    admin = Principal(
        user_id=f.did("user:admin"),
        username="admin",
        role=Role.ADMIN,
        org_id=None,
        area_id=None,
        session_id=uuid.uuid4(),
        device_id="test",
    )
    later = datetime.now(UTC) + timedelta(days=4)  # past the 3-day deadline

    def fire(rows: list[Any]) -> Any:
        return next(r for r in rows if r.category == "fire")

    now_rows = in_db(
        settings.database_url,
        lambda s: hazard_counts(s, admin, [HazardBy.CATEGORY], None, None, datetime.now(UTC)),
    )
    late_rows = in_db(
        settings.database_url,
        lambda s: hazard_counts(s, admin, [HazardBy.CATEGORY], None, None, later),
    )
    assert fire(late_rows).overdue == fire(now_rows).overdue + 1


def test_hazard_stats_are_scoped_and_refused(client: TestClient[Any], auth: Sessions) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    outside = client.post(
        "/api/v1/hazards",
        headers=auth("admin"),
        json=f.hazard(category="flood", at=f.OUTSIDE_DISTRICT),
    )
    assert outside.status_code == 201, outside.text
    flood = {
        r["category"]: r["total"]
        for r in _rows(client, auth("admin"), since=since)
        if r["category"] == "flood"
    }
    assert flood == {"flood": 1}
    assert "flood" not in {r["category"] for r in _rows(client, auth("dispatcher"), since=since)}
    for role in ("fire1", "inspector1", "enterprise1"):
        assert client.get(f"{S}/hazards", headers=auth(role)).status_code == 403
    bad = client.get(f"{S}/hazards", headers=auth("admin"), params={"by": "colour"})
    assert bad.status_code == 400


def test_hazard_stats_as_csv_in_both_languages(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    report(client, auth, category="gas")
    params = {"format": "csv", "by": ["category", "status"]}
    zh = _csv(client.get(f"{S}/hazards", headers={**d, "Accept-Language": "zh-CN"}, params=params))
    assert zh[0] == ["类别", "状态", "总数", "已销号", "已交办整改", "已整改", "整改率", "已超期"]
    assert ["gas", "reported"] in [row[:2] for row in zh[1:]]  # values are not translated
    en = _csv(client.get(f"{S}/hazards", headers={**d, "Accept-Language": "en"}, params=params))
    assert en[0][:3] == ["Category", "Status", "Total"]
    # Without Accept-Language (a script, a spreadsheet's web query): the saved language.
    assert _csv(client.get(f"{S}/hazards", headers=d, params=params))[0] == zh[0]
    set_language(client, d, "en")
    assert _csv(client.get(f"{S}/hazards", headers=d, params=params))[0] == en[0]


def test_response_times_by_incident_type_unit_and_period(
    client: TestClient[Any], auth: Sessions
) -> None:
    d, police = auth("dispatcher"), auth("police1")
    inc = client.post(
        "/api/v1/incidents", headers=d, json=f.incident(type="hazmat_leak", level=1)
    ).json()
    task = next(t for t in tasks_of(client, d, inc["id"]) if t["template_key"] == "police")
    dispatched = datetime.fromisoformat(task["dispatched_at"])
    at = (dispatched + timedelta(seconds=30)).isoformat()
    url = f"/api/v1/tasks/{task['id']}/transitions"
    assert client.post(
        url, headers=police, json={"to_status": "accepted", "at": at}
    ).status_code == (201)
    params: dict[str, Any] = {
        "since": task["dispatched_at"],
        "by": ["incident_type", "unit", "period"],
        "period": "day",
    }
    rows = client.get(f"{S}/response-times", headers=d, params=params).json()
    mine = next(r for r in rows if r["unit_id"] == str(f.did("org:police")))
    assert mine["incident_type"] == "hazmat_leak" and mine["unit_name"]
    assert mine["period_start"] == dispatched.date().isoformat()
    assert mine["unit_kind"] is None and mine["accept_p50_s"] == 30.0
    table = _csv(
        client.get(
            f"{S}/response-times",
            headers={**d, "Accept-Language": "zh-CN"},
            params={**params, "format": "csv"},
        )
    )
    assert table[0][:5] == ["事件类型", "单位", "单位名称", "时段", "任务数"]
    # The default grouping is unchanged: per unit kind.
    default = client.get(f"{S}/response-times", headers=d, params={"since": params["since"]})
    assert {r["unit_kind"] for r in default.json()} >= {"police"}


@pytest.mark.parametrize("route", ["hazards", "response-times", "incidents"])
def test_csv_answers_say_their_charset_once(
    client: TestClient[Any], auth: Sessions, route: str
) -> None:
    r = client.get(f"{S}/{route}", headers={**auth("admin"), "Accept": "text/csv"})
    _csv(r)
