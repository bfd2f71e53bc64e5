"""What the event loop does for `liandong serve` (server/loops.py): uvloop against asyncio.

A real `liandong serve` process (one worker, `LIANDONG_EVENT_LOOP` set per run) on the demo
data plus a few surge responders (tests/bench/surge_fixture.py); one kept-alive connection
sends `REQUESTS` of each of `GET /healthz`, a responder's idle sync pull (msgpack, as
tests/bench/surge_load.py sends it: the request the surge's hold pays for most) and a position
report (its commonest write). Per request:
the server process's CPU (user + system, /proc) and the client's median milliseconds. Runs
alternate between the loops (`ROUNDS` each), so a change in the machine's load hits both.
Not a test and not part of `make bench`; run it under the machine lock:

    flock /tmp/liandong-bench.lock .venv/bin/python -m tests.bench.serve_loop   # SpatiaLite,
    LIANDONG_TEST_PG_URL=... (same)                                   # and PostGIS when set
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from schemas.sync import (
    SCHEMA_VERSION,
    PullRequest,
    PullResponse,
    msgpack_encoder,
    pull_reply_msgpack,
)
from server.loops import EVENT_LOOPS
from tests.bench.bench_surge import SECRET, _server

REQUESTS = int(os.environ.get("LIANDONG_SERVE_LOOP_REQUESTS", "2000"))
ROUNDS = int(os.environ.get("LIANDONG_SERVE_LOOP_ROUNDS", "2"))
WARMUP = 100
JSON = "application/json"


def _requests(
    base: str, proc: psutil.Process, method: str, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, float]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    times: list[float] = []

    def one() -> None:
        t = time.perf_counter()
        conn.request(method, path, body=body or None, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status in (200, 204), r.status
        times.append((time.perf_counter() - t) * 1000)

    for _ in range(WARMUP):
        one()
    times.clear()
    cpu0 = sum(proc.cpu_times()[:2])
    for _ in range(REQUESTS):
        one()
    cpu1 = sum(proc.cpu_times()[:2])
    conn.close()
    return {
        "server_cpu_ms_per_request": round((cpu1 - cpu0) * 1000 / REQUESTS, 3),
        "client_ms_median": round(statistics.median(times), 3),
    }


def _idle_pull(base: str, headers: dict[str, str]) -> bytes:
    """The body of a pull that finds nothing new: catch up first, then ask from there."""
    cursors: dict[str, int] = {}
    while True:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=500)
        body = msgpack_encoder.encode(req)
        r = httpx.post(f"{base}/api/v1/sync/pull", content=body, headers=headers, timeout=60)
        r.raise_for_status()
        reply = pull_reply_msgpack.decode(r.content)
        assert isinstance(reply, PullResponse)
        cursors.update({p.scope: p.cursor for p in reply.scopes})
        if not reply.has_more:
            req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=500)
            return msgpack_encoder.encode(req)


def measure(url: str, work: Path) -> list[dict[str, Any]]:
    """`ROUNDS` alternating runs per loop against the database at `url`."""
    from tests.bench.surge_fixture import populate

    populate(url, SECRET, 4, 2, work / "sessions.jsonl")
    phone = json.loads((work / "sessions.jsonl").read_text().splitlines()[0])
    pull_headers = {
        "Authorization": f"Bearer {phone['access_token']}",
        "Content-Type": "application/msgpack",
        "Accept": "application/msgpack",
    }
    fix = json.dumps({"location": {"type": "Point", "coordinates": [121.47, 31.23]}}).encode()
    fix_headers = {"Authorization": pull_headers["Authorization"], "Content-Type": JSON}
    runs: list[dict[str, Any]] = []
    for k in range(ROUNDS):
        for loop in EVENT_LOOPS if k % 2 == 0 else EVENT_LOOPS[::-1]:
            os.environ["LIANDONG_EVENT_LOOP"] = loop
            with _server(url, work / f"var-{loop}-{k}", 1) as (base, proc):
                body = _idle_pull(base, pull_headers)
                run: dict[str, Any] = {"loop": loop, "load": os.getloadavg()}
                run["healthz"] = _requests(base, proc, "GET", "/healthz", b"", {})
                run["idle_pull"] = _requests(
                    base, proc, "POST", "/api/v1/sync/pull", body, pull_headers
                )
                run["position"] = _requests(
                    base, proc, "POST", "/api/v1/positions", fix, fix_headers
                )
                runs.append(run)
                print(json.dumps(run), flush=True)
    return runs


def main() -> int:
    from tests.conftest import PG_URL, drop_scratch_databases, fresh_database, seed_demo

    report: dict[str, Any] = {"requests": REQUESTS, "rounds": ROUNDS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for backend in ("sqlite", "postgis") if PG_URL else ("sqlite",):
                work = Path(tmp) / backend
                work.mkdir()
                url = fresh_database(backend, work, scratch="liandong_serve_loop")
                seed_demo(url)
                report[backend] = measure(url, work)
    finally:
        drop_scratch_databases()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
