"""The PostgreSQL pool under load (issue 13's surge): a connection in use moments ago goes back
to work without a ping, one that sat idle is pinged and replaced if the database dropped it, the
server keeps a connection per admitted request, and the authentication's lookup runs without a
transaction, on the driver itself. Round trips, not CPU, were what a phone's pull waited for on a
busy event loop."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from litestar.testing import TestClient
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.admission import POOL_RESERVE, POSTGRES_LIMIT
from server.app import create_app
from server.db import make_engine
from tests.conftest import Sessions, make_settings, require_postgres

pytestmark = pytest.mark.postgis

MARK = "SELECT pg_backend_pid(), 'test_db_pool mark'"


async def _last_query(observer: AsyncConnection, pid: int) -> str:
    """What backend `pid` ran last, as PostgreSQL reports it."""
    sql = text("SELECT query FROM pg_stat_activity WHERE pid = :pid")
    return str((await observer.execute(sql, {"pid": pid})).scalar_one())


async def _pid_after_mark(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(MARK))).scalar_one())


def test_only_an_idle_connection_is_pinged() -> None:
    async def run() -> None:
        url = require_postgres()
        # Autocommit: no BEGIN/ROLLBACK around the statements, so the backend's last query
        # is the mark, or the ping's empty statement.
        engine = make_engine(url, ping_idle_s=0.5, isolation_level="AUTOCOMMIT")
        observer = make_engine(url, ping_idle_s=None, isolation_level="AUTOCOMMIT")
        try:
            pid = await _pid_after_mark(engine)
            async with observer.connect() as obs:
                async with engine.connect():  # the same connection, back at once: no ping
                    assert await _last_query(obs, pid) == MARK
                await asyncio.sleep(0.7)
                async with engine.connect():  # idle longer than 0.5 s: pinged first
                    assert await _last_query(obs, pid) == ";"
        finally:
            await engine.dispose()
            await observer.dispose()

    asyncio.run(run())


def test_an_idle_connection_the_database_dropped_is_replaced_before_use() -> None:
    async def run() -> None:
        url = require_postgres()
        engine = make_engine(url, ping_idle_s=0.2, pool_size=1, max_overflow=0)
        observer = make_engine(url, ping_idle_s=None, isolation_level="AUTOCOMMIT")
        try:
            pid = await _pid_after_mark(engine)
            async with observer.connect() as obs:
                await obs.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            await asyncio.sleep(0.4)
            async with engine.connect() as conn:  # no error: the ping found it dead
                again = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            assert again != pid
        finally:
            await engine.dispose()
            await observer.dispose()

    asyncio.run(run())


def test_the_server_keeps_a_connection_per_admitted_request(tmp_path: Path) -> None:
    settings = make_settings(require_postgres(), tmp_path)
    assert create_app(settings).state.engine.pool.size() == POSTGRES_LIMIT + POOL_RESERVE
    small = create_app(replace(settings, admission_limit=3))
    assert small.state.engine.pool.size() == 3 + POOL_RESERVE


def test_the_authentication_lookup_is_one_driver_round_trip_outside_a_transaction(
    client: TestClient[Any], auth: Sessions, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the account lookup of every request goes straight to the pooled
    connection's driver (`server.db.ReadOne`): one statement, no BEGIN/ROLLBACK around it,
    and none of SQLAlchemy's execution for it."""
    if backend != "postgis":
        pytest.skip("SQLite has no round trips to save")
    engine: AsyncEngine = client.app.state.engine
    through_sqlalchemy: list[str] = []
    by_driver: list[tuple[str, bool]] = []
    fetchrow = asyncpg.connection.Connection.fetchrow

    async def noted(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        by_driver.append((query, self.is_in_transaction()))
        return await fetchrow(self, query, *args, **kwargs)

    def note(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        through_sqlalchemy.append(statement)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetchrow", noted)
    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        r = client.get("/api/v1/auth/me", headers=auth("fire1"))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
    assert r.status_code == 200, r.text
    lookups = [busy for sql, busy in by_driver if _is_lookup(sql)]
    assert lookups == [False], by_driver
    assert not [sql for sql in through_sqlalchemy if _is_lookup(sql)], through_sqlalchemy


def _is_lookup(sql: str) -> bool:
    return "FROM users" in sql and "refresh_tokens" in sql


def _backends_of(client: TestClient[Any], path: str, headers: dict[str, str]) -> set[int]:
    """The PostgreSQL backends whose statements SQLAlchemy ran for one request."""
    engine: AsyncEngine = client.app.state.engine
    pids: set[int] = set()

    def note(conn: Any, *_rest: Any) -> None:
        pids.add(conn.connection.driver_connection.get_server_pid())

    event.listen(engine.sync_engine, "after_cursor_execute", note)
    try:
        assert client.get(path, headers=headers).status_code == 200
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", note)
    assert pids
    return pids


def _terminate(pids: set[int]) -> None:
    async def kill() -> None:
        observer = make_engine(require_postgres(), ping_idle_s=None, isolation_level="AUTOCOMMIT")
        try:
            async with observer.connect() as obs:
                for pid in pids:
                    await obs.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        finally:
            await observer.dispose()

    asyncio.run(kill())


def test_a_lookup_on_a_dropped_connection_is_done_again_on_a_live_one(
    client: TestClient[Any], auth: Sessions, backend: str
) -> None:
    """The account lookup is the first to meet a connection PostgreSQL dropped moments after
    its last use: that connection leaves the pool and the lookup is done again on another,
    so the request is served; so are the next ones."""
    if backend != "postgis":
        pytest.skip("SQLite has no connection to lose")
    pids = _backends_of(client, "/api/v1/auth/me", auth("fire1"))
    _terminate(pids)
    for _ in range(3):
        assert client.get("/api/v1/auth/me", headers=auth("fire1")).status_code == 200
    assert not pids & _backends_of(client, "/api/v1/auth/me", auth("fire1"))


def test_a_connection_dropped_moments_after_use_answers_503_then_the_server_recovers(
    client: TestClient[Any], auth: Sessions, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection used moments ago is not pinged: if PostgreSQL dropped it meanwhile (a
    restart, a fail-over, an operator's kill), the request that takes it fails. It must get a
    503 with Retry-After, which the phone honours, not a 500; the next request is served.
    (The account lookup, which would take the dead connection first and do its read again on
    another, runs the ordinary way here, so the request's own transaction meets it.)"""
    if backend != "postgis":
        pytest.skip("SQLite has no connection to lose")
    monkeypatch.setattr(client.app.state.account_read, "sql", None)
    _terminate(_backends_of(client, "/api/v1/auth/me", auth("fire1")))
    lost = client.get("/api/v1/auth/me", headers=auth("fire1"))
    assert lost.status_code == 503, lost.text
    assert lost.headers["content-type"].startswith("application/problem+json")
    assert int(lost.headers["retry-after"]) > 0 and lost.json()["code"] == "overloaded"
    assert client.get("/api/v1/auth/me", headers=auth("fire1")).status_code == 200
