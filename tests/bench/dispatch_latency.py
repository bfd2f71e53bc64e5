"""Incident commit -> first FCM request, through the real server (uvicorn on loopback), a plan
that dispatches 5 units, the SQL outbox and the worker in the server's lifespan.

Called by bench_push.py, which writes the figure into var/bench/push.json as
`incident_to_first_push_ms`. The clock starts when the POST is *sent*: the figure is an upper
bound on commit -> push that also includes the request, the plan run and the commit itself. The
FCM stand-in runs in this process so both instants come from one `perf_counter`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.models import EmergencyPlan
from tests.conftest import (
    DEMO_PASSWORD,
    drop_scratch_databases,
    fresh_database,
    make_settings,
    seed_demo,
)
from tests.peers.fcm_standin import FcmStandIn
from tests.servers import serve_in_thread

RESPONDERS = ("fire1", "fire2", "ems1", "ems2", "police1")
RUNS = int(os.environ.get("LIANDONG_BENCH_INCIDENTS", "15"))


def _add_plan(url: str) -> None:
    async def run() -> None:
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as session, session.begin():
            session.add(
                EmergencyPlan(
                    code="bench-5-units",
                    version=1,
                    name="Bench: five units",
                    incident_type="earthquake",
                    min_level=4,
                    templates=[
                        {"key": "fire", "unit_kind": "fire", "title": "fire", "required_count": 2},
                        {"key": "ems", "unit_kind": "ems", "title": "ems", "required_count": 2},
                        {"key": "police", "unit_kind": "police", "title": "police"},
                    ],
                    created_by=did("user:admin"),
                )
            )
        await engine.dispose()

    asyncio.run(run())


def _login(http: httpx.Client, user: str) -> dict[str, str]:
    r = http.post(
        "/api/v1/auth/login",
        json={"username": user, "password": DEMO_PASSWORD, "device_id": f"bench-{user}"},
    )
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def measure(backend: str = "sqlite") -> dict[str, Any]:
    """Median and max of `RUNS` incidents, each dispatching 5 units with one device each."""
    tmp = Path(tempfile.mkdtemp(prefix="liandong-bench-"))
    url = fresh_database(backend, tmp, scratch="liandong_bench" if backend == "postgis" else None)
    try:
        return _measure(url, tmp, backend)
    finally:
        if backend == "postgis":
            drop_scratch_databases()


def _measure(url: str, tmp: Path, backend: str) -> dict[str, Any]:
    seed_demo(url)
    _add_plan(url)
    samples: list[float] = []
    with FcmStandIn() as standin:
        settings = make_settings(
            url,
            tmp,
            fcm_project_id="liandong-bench",
            fcm_endpoint=standin.base_url,
            background_jobs=True,
            outbox_poll_s=5.0,  # a wake-up must come from the commit, not from polling
            escalate_poll_s=3600.0,
        )
        with serve_in_thread(create_app(settings)) as base, httpx.Client(base_url=base) as http:
            for user in RESPONDERS:
                http.post(
                    "/api/v1/devices",
                    headers=_login(http, user),
                    json={"device_id": f"phone-{user}", "channel": "fcm", "token": f"t-{user}"},
                ).raise_for_status()
            d = _login(http, "dispatcher")
            for run in range(RUNS + 1):
                time.sleep(0.1)  # the worker is idle, waiting on a notify or its poll
                standin.reset()
                body = {
                    "type": "earthquake",
                    "level": 3,
                    "title": f"bench {run} {uuid.uuid4().hex[:6]}",
                    "location": {"type": "Point", "coordinates": [121.4855, 31.2375]},
                }
                sent = time.perf_counter()
                r = http.post("/api/v1/incidents", headers=d, json=body)
                r.raise_for_status()
                if not standin.wait_for(len(RESPONDERS), 5.0):
                    raise RuntimeError(f"only {standin.accepted_count} pushes arrived")
                assert standin.first_request_at is not None
                if run:  # the first run warms connections and caches
                    samples.append((standin.first_request_at - sent) * 1000)
    return {
        "incident_to_first_push_ms": round(statistics.median(samples), 2),
        "incident_to_first_push_ms_max": round(max(samples), 2),
        "incident_to_first_push_runs": len(samples),
        "incident_to_first_push_backend": backend,
        "target_incident_to_first_push_ms": 1000,
    }


if __name__ == "__main__":
    print(measure())
