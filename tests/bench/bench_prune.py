"""Pruning dead addresses during a fan-out: `SqlOutboxStore.prune_address` among many pending jobs,
with the partial index of pending jobs by address (`ix_push_jobs_pending_address`, migration
0013) and without it (the baseline, measured in the same run on the same rows).

A push service answers 404/410 for a dead subscription; the worker then kills every job still
queued to that address. Without the index each such answer scanned the pending jobs.

Figures (PostGIS; needs LIANDONG_TEST_PG_URL, as `make bench` sets it):
- `prune_ms_indexed` / `prune_ms_baseline`: one `prune_address` call (its transaction: the
  devices, the jobs, the resident subscription), median and p95 over `PRUNES` dead addresses,
  each with one pending job among `JOBS` (LIANDONG_BENCH_PRUNE_JOBS, default 200,000), the
  table analysed after the jobs were queued; `speedup` is the ratio of the medians;
- `update_ms_indexed` / `update_ms_baseline`: the jobs' UPDATE of the same call alone
  (PostgreSQL's execution time, EXPLAIN ANALYZE, rolled back), `update_speedup`;
- `enqueue_s_indexed` / `enqueue_s_baseline`: queuing the `JOBS` jobs in one statement, what
  the index costs a fan-out's enqueue;
- `loadavg_before` / `loadavg_after`: the machine is shared (os.getloadavg()).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from push.base import Channel
from server.db import make_engine, make_sessionmaker
from server.outbox import SqlOutboxStore
from tests.conftest import fresh_database

JOBS = int(os.environ.get("LIANDONG_BENCH_PRUNE_JOBS", "200000"))
PRUNES = int(os.environ.get("LIANDONG_BENCH_PRUNE_PRUNES", "200"))
INDEX = "ix_push_jobs_pending_address"
CREATE_INDEX = f"CREATE INDEX {INDEX} ON push_jobs USING hash (address) WHERE state = 'pending'"
ENQUEUE = (
    "INSERT INTO push_jobs (id, event_id, device_id, channel, address, message, state,"
    " attempts, not_before, created_at) SELECT gen_random_uuid(), 'alert:bench', 'r:' || g,"
    " 'webpush', 'https://push.example/' || g, '{\"data\":{}}', 'pending', 0, :at, :at"
    " FROM generate_series(1, :n) g"
)
# The jobs' statement of `prune_address` (server/outbox.py), for its execution time alone.
PRUNE = (
    "UPDATE push_jobs SET state = 'dead', last_error = 'address pruned: bench',"
    " leased_until = NULL, lease_token = NULL"
    " WHERE state = 'pending' AND address = :address AND channel = 'webpush'"
)


def _address(n: int) -> str:
    return f"https://push.example/{n}"


async def _fanout(engine: AsyncEngine, indexed: bool) -> float:
    """Empty the jobs, set the index as asked, queue JOBS pending jobs; seconds of the queuing."""
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE push_jobs"))
        await conn.execute(text(f"DROP INDEX IF EXISTS {INDEX}"))
        if indexed:
            await conn.execute(text(CREATE_INDEX))
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text(ENQUEUE), {"at": datetime.now(UTC), "n": JOBS})
    took = time.perf_counter() - started
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE push_jobs"))
    return took


async def _prunes(engine: AsyncEngine, first: int) -> list[float]:
    """Milliseconds of each of PRUNES `prune_address` calls, addresses from `first` on (spread
    over the table), each of which kills exactly one job."""
    store = SqlOutboxStore(make_sessionmaker(engine))
    step = max(1, JOBS // PRUNES)
    took = []
    for k in range(PRUNES):
        address = _address(first + k * step)
        started = time.perf_counter()
        killed = await store.prune_address(Channel.WEBPUSH, address, reason="bench")
        took.append((time.perf_counter() - started) * 1000)
        assert killed == 1, (address, killed)
    return took


async def _statements(engine: AsyncEngine, first: int) -> list[float]:
    """PostgreSQL's execution time (EXPLAIN ANALYZE, rolled back) of the jobs' UPDATE of
    `prune_address` alone, for PRUNES addresses from `first` on."""
    step = max(1, JOBS // PRUNES)
    took = []
    for k in range(PRUNES):
        async with engine.connect() as conn:
            result = await conn.execute(
                text(f"EXPLAIN (ANALYZE, FORMAT JSON) {PRUNE}"),
                {"address": _address(first + k * step)},
            )
            [[doc]] = result.all()
            await conn.rollback()
        plan = doc if isinstance(doc, list) else json.loads(doc)
        took.append(float(plan[0]["Execution Time"]))
    return took


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1], 3),
        "max": round(ordered[-1], 3),
    }


async def _run(url: str) -> dict[str, object]:
    engine = make_engine(url)
    try:
        figures: dict[str, object] = {"jobs": JOBS, "prunes": PRUNES}
        figures["loadavg_before"] = os.getloadavg()
        # Baseline first, then indexed; each on freshly queued rows.
        figures["enqueue_s_baseline"] = round(await _fanout(engine, indexed=False), 2)
        baseline = _summary(await _prunes(engine, first=1))
        baseline_statement = _summary(await _statements(engine, first=3))
        figures["enqueue_s_indexed"] = round(await _fanout(engine, indexed=True), 2)
        indexed = _summary(await _prunes(engine, first=2))
        indexed_statement = _summary(await _statements(engine, first=3))
        figures["prune_ms_baseline"] = baseline
        figures["prune_ms_indexed"] = indexed
        figures["speedup"] = round(baseline["median"] / indexed["median"], 1)
        figures["update_ms_baseline"] = baseline_statement
        figures["update_ms_indexed"] = indexed_statement
        figures["update_speedup"] = round(
            baseline_statement["median"] / indexed_statement["median"], 1
        )
        figures["loadavg_after"] = os.getloadavg()
        return figures
    finally:
        await engine.dispose()


def run() -> dict[str, object]:
    if not os.environ.get("LIANDONG_TEST_PG_URL"):
        return {"skipped": "LIANDONG_TEST_PG_URL is not set (PostGIS)"}
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database("postgis", Path(tmp), scratch="liandong_bench_prune")
        return asyncio.run(_run(url))
