"""Statistics: counts by period, response times per unit kind, overdue and escalated, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from schemas.stats import Period
from server.domain.stats.services import percentile, period_start
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import tasks_of


def test_percentile_and_periods_are_portable_python() -> None:
    assert percentile([], 50) is None
    assert percentile([10.0], 90) == 10.0
    sample = [float(x) for x in range(1, 11)]
    assert percentile(sample, 50) == 5.0 and percentile(sample, 90) == 9.0
    at = datetime(2026, 7, 1, 23, 59, tzinfo=UTC)
    assert period_start(at, Period.DAY) == "2026-07-01"
    assert period_start(at, Period.WEEK) == "2026-W27"
    assert period_start(at, Period.MONTH) == "2026-07"


def test_response_times_follow_the_timeline(client: TestClient[Any], auth: Sessions) -> None:
    d, police = auth("dispatcher"), auth("police1")
    before = {
        r["unit_kind"]: r for r in client.get("/api/v1/stats/response-times", headers=d).json()
    }
    inc = client.post(
        "/api/v1/incidents", headers=d, json=f.incident(type="hazmat_leak", level=1)
    ).json()
    task = next(t for t in tasks_of(client, d, inc["id"]) if t["template_key"] == "police")
    dispatched = datetime.fromisoformat(task["dispatched_at"])
    url = f"/api/v1/tasks/{task['id']}/transitions"
    for step, after_s in (("accepted", 40), ("en_route", 60), ("on_scene", 400)):
        at = (dispatched + timedelta(seconds=after_s)).isoformat()
        assert client.post(url, headers=police, json={"to_status": step, "at": at}).status_code == (
            201
        )
    after = {
        r["unit_kind"]: r for r in client.get("/api/v1/stats/response-times", headers=d).json()
    }
    old = before.get("police", {"tasks": 0, "accepted": 0, "on_scene": 0})
    assert after["police"]["tasks"] == old["tasks"] + 1
    assert after["police"]["accepted"] == old["accepted"] + 1
    assert after["police"]["on_scene"] == old["on_scene"] + 1
    # From this task's dispatch on, it is the only police sample: the percentiles are exact.
    window = client.get(
        "/api/v1/stats/response-times", headers=d, params={"since": task["dispatched_at"]}
    ).json()
    mine = next(r for r in window if r["unit_kind"] == "police")
    assert (mine["tasks"], mine["accept_p50_s"], mine["on_scene_p90_s"]) == (1, 40.0, 400.0)

    text = client.get(
        "/api/v1/stats/response-times",
        headers={**d, "Accept-Language": "en"},
        params={"format": "csv"},
    )
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/csv; charset=utf-8"  # the charset once
    rows = list(csv.DictReader(io.StringIO(text.content.decode("utf-8-sig"))))
    assert "police" in {r["Unit kind"] for r in rows}
    assert set(rows[0]) >= {"Unit kind", "Accept p50 (s)", "Accept p90 (s)", "On scene p90 (s)"}


def test_incident_counts_by_period_as_json_and_csv(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    made = client.post("/api/v1/incidents", headers=d, json=f.incident(type="landslide", level=4))
    assert made.status_code == 201, made.text
    today = datetime.now(UTC).date().isoformat()
    day = client.get("/api/v1/stats/incidents", headers=d, params={"period": "day"}).json()
    assert any(
        c["period_start"] == today and c["type"] == "landslide" and c["level"] == 4 for c in day
    )
    month = client.get("/api/v1/stats/incidents", headers=d, params={"period": "month"}).json()
    assert all(len(c["period_start"]) == 7 for c in month)
    assert any(c["period_start"] == today[:7] and c["type"] == "landslide" for c in month), month
    future = client.get(
        "/api/v1/stats/incidents", headers=d, params={"since": "2099-01-01T00:00:00Z"}
    ).json()
    assert future == []
    naive = client.get("/api/v1/stats/incidents", headers=d, params={"since": "2026-01-01T00:00"})
    assert naive.status_code in (400, 422)
    as_csv = client.get(
        "/api/v1/stats/incidents",
        headers={**d, "Accept": "text/csv", "Accept-Language": "en"},
        params={"period": "week"},
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.content.decode("utf-8-sig").splitlines()[0] == "Period,Type,Level,Count"


def test_overdue_and_escalated_lists_defuse_formulas(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = client.post("/api/v1/tasks", headers=d, json=f.task(title="=HYPERLINK(1)", deadline=past))
    assert r.status_code == 201, r.text
    overdue = client.get("/api/v1/stats/overdue-tasks", headers=d).json()
    assert r.json()["id"] in {t["task_id"] for t in overdue}
    text = client.get("/api/v1/stats/overdue-tasks", headers=d, params={"format": "csv"}).text
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text
    assert client.get("/api/v1/stats/escalated-tasks", headers=auth("fire1")).status_code == 403
