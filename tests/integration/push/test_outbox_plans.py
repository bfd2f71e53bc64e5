"""The SQL outbox's plans when its statistics predate a fan-out (PostgreSQL; SQLite's dedup check).

A warning queues 100,000 jobs in one transaction; autovacuum analyses the tables up to a minute
later, and `push_deliveries` grows from nothing during the fan-out. The plans the worker's
statements got under such statistics re-read every record of the event at each claim and scanned
every pending job at each group commit (docs/push.md, "The first full-scale run" and what
followed). These tests build that state (both tables analysed while empty, then thousands of
pending jobs and delivery records of one event), run the store's own statements, and read their
plans with EXPLAIN: each job and each record is reached by its primary key.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from push.outbox import Delivery
from server.db import make_engine, make_sessionmaker
from server.outbox import SqlOutboxStore
from tests.conftest import fresh_database, require_postgres

JOBS = 20_000
RECORDED = 2_000  # of them already have their delivery record,
FIRST_RECORDED = 201  # from the 201st on: a claim of the first 400 has both kinds


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    require_postgres()
    return fresh_database("postgis", tmp_path_factory.mktemp("plans"), scratch="liandong_plans")


async def _stale_fanout(engine: AsyncEngine, event_id: str, at: datetime) -> None:
    """Analyse both tables empty, then queue JOBS jobs of one event, RECORDED of them with
    their delivery record (devices `r:<n>`, recorded from n = FIRST_RECORDED on)."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE push_jobs"))
        await conn.execute(text("ANALYZE push_deliveries"))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO push_jobs (id, event_id, device_id, channel, address, message,"
                " state, attempts, not_before, created_at) SELECT gen_random_uuid(), :event,"
                " 'r:' || g, 'webpush', 'https://push.example/' || g, '{\"data\":{}}',"
                " 'pending', 0, :at, :at FROM generate_series(1, :n) g"
            ),
            {"event": event_id, "at": at, "n": JOBS},
        )
        await conn.execute(
            text(
                "INSERT INTO push_deliveries (event_id, device_id, job_id, at)"
                " SELECT :event, 'r:' || g, gen_random_uuid(), :at"
                " FROM generate_series(CAST(:first AS int), CAST(:last AS int)) g"
            ),
            {
                "event": event_id,
                "at": at,
                "first": FIRST_RECORDED,
                "last": FIRST_RECORDED + RECORDED - 1,
            },
        )


class Statements:
    """Every statement an engine runs (text and parameters), in order."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seen: list[tuple[str, Any]] = []

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _seen(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
            self.seen.append((statement, params))

    def take(self) -> list[tuple[str, Any]]:
        seen, self.seen = self.seen, []
        return seen


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(engine: AsyncEngine, statement: str, params: Any) -> list[dict[str, Any]]:
    """The plan nodes PostgreSQL chooses for `statement` with these parameters."""
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", params)
        [[doc]] = result.all()
        await conn.rollback()
    plan = doc if isinstance(doc, list) else json.loads(doc)
    return list(_nodes(plan[0]["Plan"]))


def _reads(nodes: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [n for n in nodes if n.get("Relation Name") == table]


def test_claims_and_group_commits_reach_jobs_and_records_by_primary_key(pg_url: str) -> None:
    at = datetime(2035, 1, 1, tzinfo=UTC)
    event_id = f"alert:{uuid.uuid4()}"

    async def scenario() -> None:
        engine = make_engine(pg_url)
        try:
            await _stale_fanout(engine, event_id, at)
            store = SqlOutboxStore(make_sessionmaker(engine))
            statements = Statements(engine)
            jobs = await store.claim_due(now=at, limit=400, lease_for=timedelta(seconds=60))
            assert len(jobs) == 400

            # The dedup check: one primary-key lookup per pair, not the event's every record.
            statements.take()
            found = await store.delivered_keys([j.key for j in jobs])
            recorded = {j.key for j in jobs if int(j.device_id[2:]) >= FIRST_RECORDED}
            assert found == recorded and 0 < len(found) < len(jobs)
            [query] = [s for s in statements.take() if "push_deliveries" in s[0]]
            reads = _reads(await _plan(engine, *query), "push_deliveries")
            assert reads, "the dedup check reads push_deliveries"
            for node in reads:
                assert node["Node Type"] != "Seq Scan", node
                assert "event_id" in node.get("Index Cond", ""), node
                assert "device_id" in node.get("Index Cond", ""), node

            # A group commit: planned for its values (a generic plan kept from when the
            # tables were small is what made it scan), each job found by its id.
            group = [j for j in jobs if j.key not in found][:32]
            assert len(group) == 32
            statements.take()
            closed = await store.commit_deliveries([Delivery(j, at, None) for j in group])
            assert closed == {j.job_id for j in group}
            ran = statements.take()
            assert ran[0][0] == "SET LOCAL plan_cache_mode = force_custom_plan"
            [close] = [s for s in ran if s[0].startswith("UPDATE push_jobs")]
            nodes = await _plan(engine, *close)
            assert all(n["Node Type"] != "Seq Scan" for n in _reads(nodes, "push_jobs"))
            indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
            assert "pk_push_jobs" in indexes and "ix_push_jobs_due" not in indexes, indexes
            for node in _reads(nodes, "push_deliveries"):
                assert node["Node Type"] != "Seq Scan", node
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_the_dedup_check_looks_records_up_by_primary_key_on_sqlite(tmp_path: Path) -> None:
    """SQLite scanned the whole primary-key index for a row-value `IN` list at every claim."""
    url = fresh_database("sqlite", tmp_path)
    at = datetime(2035, 1, 1, tzinfo=UTC)

    async def scenario() -> None:
        engine = make_engine(url)
        try:
            store = SqlOutboxStore(make_sessionmaker(engine))
            statements = Statements(engine)
            keys = [("alert:a", f"r:{n}") for n in range(50)] + [("alert:b", "r:1")]
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO push_deliveries (event_id, device_id, job_id, at)"
                        " VALUES (:e, :d, :j, :at)"
                    ),
                    [{"e": e, "d": d, "j": uuid.uuid4().hex, "at": at} for e, d in keys[::2]],
                )
            statements.take()
            assert await store.delivered_keys(keys) == set(keys[::2])
            queries = [s for s in statements.take() if "push_deliveries" in s[0]]
            for statement, params in queries:
                async with engine.connect() as conn:
                    plan = (
                        await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
                    ).all()
                details = [row[-1] for row in plan]
                assert any(
                    "SEARCH push_deliveries" in d and "(event_id=? AND device_id=?)" in d
                    for d in details
                ), details
                assert not any(d.startswith("SCAN push_deliveries") for d in details), details
            assert len(queries) == 2  # one per event
        finally:
            await engine.dispose()

    asyncio.run(scenario())
