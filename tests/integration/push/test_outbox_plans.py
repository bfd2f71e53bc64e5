"""The SQL outbox's plans when its statistics predate a fan-out (PostgreSQL; SQLite's dedup check).

A warning queues 100,000 jobs in one transaction; autovacuum analyses the tables up to a minute
later, and `push_deliveries` grows from nothing during the fan-out. The plans the worker's
statements got under such statistics re-read every record of the event at each claim and scanned
every pending job at each group commit (docs/push.md, "The first full-scale run" and what
followed). These tests build that state (both tables analysed while empty, then thousands of
pending jobs and delivery records of one event), run the store's own statements, and read their
plans with EXPLAIN: each job and each record is reached by its primary key. Pruning a dead
address finds its pending jobs by the partial index of pending jobs by address (a scan of them
all before; docs/push.md, "Outbox semantics").
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from push.base import Channel, PushMessage
from push.outbox import Delivery
from server.db import make_engine, make_sessionmaker
from server.outbox import SqlOutboxStore, enqueue_for_devices
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


async def _plan(
    engine: AsyncEngine, statement: str, params: Any, *, generic: bool = False
) -> list[dict[str, Any]]:
    """The plan nodes PostgreSQL chooses for `statement` with these parameters, or (`generic`)
    the plan it may keep for it as a prepared statement, made for any values."""
    async with engine.connect() as conn:
        if generic:
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql(f"PREPARE planned AS {statement}")
            nulls = ", ".join(["NULL"] * len(params))
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE planned({nulls})")
        else:
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


PRUNED = "https://push.example/7777"  # one of the stale fan-out's addresses


def _long_token() -> str:
    """A device token of the longest accepted length (schemas.devices, 4,096), incompressible:
    longer than a B-tree index entry may be on PostgreSQL (2,704 bytes)."""
    return secrets.token_urlsafe(3072)[:4096]


def test_pruning_a_dead_address_finds_its_pending_jobs_by_index(pg_url: str) -> None:
    """`prune_address` during a fan-out of stale statistics: the jobs queued to the address
    are found through the partial index of pending jobs, with the plan PostgreSQL makes for
    the values (custom) and the one it may keep for a prepared statement (generic)."""
    at = datetime(2035, 1, 2, tzinfo=UTC)
    event_id = f"alert:{uuid.uuid4()}"

    async def scenario() -> None:
        engine = make_engine(pg_url)
        try:
            await _stale_fanout(engine, event_id, at)
            long = _long_token()
            async with make_sessionmaker(engine)() as session, session.begin():
                # A B-tree on the address would refuse this row, and the fan-out with it.
                queued = await enqueue_for_devices(
                    session,
                    [(uuid.uuid4(), uuid.uuid4(), "fcm", long, None)],
                    event_id=event_id,
                    message=PushMessage(data={"kind": "alert"}),
                    now=at,
                )
            assert queued == 1
            async with engine.connect() as conn:
                pending = await conn.scalar(
                    text("SELECT count(*) FROM push_jobs WHERE address = :a AND state = 'pending'"),
                    {"a": PRUNED},
                )
            assert pending  # this test's fan-out, and the other test's if it ran first
            store = SqlOutboxStore(make_sessionmaker(engine))
            statements = Statements(engine)
            assert await store.prune_address(Channel.WEBPUSH, PRUNED, reason="gone") == pending
            [prune] = [s for s in statements.take() if s[0].startswith("UPDATE push_jobs")]
            # As planned for its values, and as a prepared statement's generic plan (which
            # cannot use a partial index whose condition is a parameter).
            custom = await _plan(engine, *prune)
            generic = await _plan(engine, *prune, generic=True)
            for nodes in (custom, generic):
                reads = [n for n in _reads(nodes, "push_jobs") if n["Node Type"] != "ModifyTable"]
                names = {n.get("Index Name") for n in reads}
                assert names == {"ix_push_jobs_pending_address"}, reads
            assert await store.prune_address(Channel.FCM, long, reason="gone") == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_pruning_a_dead_address_finds_its_pending_jobs_by_index_on_sqlite(tmp_path: Path) -> None:
    url = fresh_database("sqlite", tmp_path)
    at = datetime(2035, 1, 2, tzinfo=UTC)

    async def scenario() -> None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                devices = [
                    (uuid.uuid4(), uuid.uuid4(), "webpush", f"https://push.example/{n}", None)
                    for n in range(1_000)
                ]
                devices.append((uuid.uuid4(), uuid.uuid4(), "fcm", _long_token(), None))
                await enqueue_for_devices(
                    session,
                    devices,
                    event_id="alert:a",
                    message=PushMessage(data={"kind": "alert"}),
                    now=at,
                )
            store = SqlOutboxStore(make_sessionmaker(engine))
            statements = Statements(engine)
            dead = "https://push.example/777"
            assert await store.prune_address(Channel.WEBPUSH, dead, reason="gone") == 1
            [(statement, params)] = [
                s for s in statements.take() if s[0].startswith("UPDATE push_jobs")
            ]
            async with engine.connect() as conn:
                plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)).all()
            details = [row[-1] for row in plan]
            assert details == [
                "SEARCH push_jobs USING INDEX ix_push_jobs_pending_address (address=?)"
            ], details
            assert await store.prune_address(Channel.FCM, devices[-1][3], reason="gone") == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())
