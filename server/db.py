"""Engines for both backends: SQLite + SpatiaLite (embedded default) and PostgreSQL + PostGIS."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import greenlet_spawn

SPATIALITE = os.environ.get("SPATIALITE_LIBRARY_PATH", "mod_spatialite")


class SpatiaLiteMissing(RuntimeError):
    """SpatiaLite cannot be loaded into SQLite on this machine."""


def _prepare_sqlite(conn: sqlite3.Connection) -> None:
    try:
        conn.enable_load_extension(True)
        conn.load_extension(SPATIALITE)
        conn.enable_load_extension(False)
    except (AttributeError, sqlite3.OperationalError) as exc:
        raise SpatiaLiteMissing(
            "cannot load SpatiaLite: install libsqlite3-mod-spatialite and use a Python whose "
            f"sqlite3 can load extensions (Debian's python3) ({exc})"
        ) from exc
    # Transactions are begun by SQLAlchemy's "begin" listener below, not by sqlite3 itself.
    conn.isolation_level = None
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    # InitSpatialMetaData once per database file; 'WGS84' keeps the file small.
    if conn.execute("SELECT CheckSpatialMetaData()").fetchone()[0] < 1:
        conn.execute("SELECT InitSpatialMetaData(1, 'WGS84')")
        conn.commit()


def is_sqlite(url: str) -> bool:
    """True for the embedded backend."""
    return url.startswith("sqlite")


PING_IDLE_S = 10.0
"""A pooled PostgreSQL connection is pinged before use only when it has sat idle this long."""

POOL_SIZE = 10
"""Connections a PostgreSQL engine keeps open (the server sizes its own from its admission
limit, `server.admission.pool_size`)."""

_IDLE_SINCE = "liandong_idle_since"


def ping_idle_connections(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a connection as it leaves the pool only if it sat there `idle_s` or more.

    SQLAlchemy's `pool_pre_ping` pings at every checkout, and with asyncpg a ping is three
    round trips (BEGIN, an empty statement, ROLLBACK): in the surge of 29 November they were 6
    of the 16 round trips of a phone's pull (the authentication's session and the request's
    each took a connection), each one a turn of a busy event loop. A connection in use moments
    ago is alive; the ping matters for one that sat idle while the database restarted or a
    firewall dropped it. One that fails its ping is replaced before anyone uses it (the pool
    retries the checkout on `DisconnectionError`). The cost: a connection the database drops
    less than `idle_s` after its last use fails the next transaction on it (a 500, which a
    ping would have spared); SQLAlchemy then replaces every connection of the pool older than
    the failure, so a database restart under traffic fails about the requests then at work."""

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < idle_s:
            return  # just made, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # any failure: take another connection
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error


def make_engine(
    url: str,
    *,
    ping_idle_s: float | None = PING_IDLE_S,
    pool_size: int = POOL_SIZE,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine; on SQLite every new connection loads SpatiaLite first. On PostgreSQL
    the pool keeps `pool_size` connections, hands out its most recently used one first
    (`pool_use_lifo`) and pings only connections idle `ping_idle_s` or more
    (`ping_idle_connections`; None: never)."""
    if is_sqlite(url):
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # aiosqlite runs sqlite3 in its own thread: reach the raw connection there.
            dbapi_connection.run_async(lambda raw: raw._execute(_prepare_sqlite, raw._conn))

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Take the write lock at BEGIN so two writers queue instead of failing mid-way;
            # a read-only connection (`read_engine`) reads its snapshot without it.
            read_only = conn.get_execution_options().get(_READ_ONLY)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_use_lifo", True)
    engine = create_async_engine(url, pool_size=pool_size, **kwargs)
    if ping_idle_s is not None and not kwargs.get("pool_pre_ping"):
        ping_idle_connections(engine, ping_idle_s)
    return engine


_READ_ONLY = "liandong_read_only"


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for reads that write nothing (the authentication's lookup on every
    request): on PostgreSQL in autocommit, so one statement costs one round trip rather than
    three with its BEGIN and ROLLBACK; on SQLite in a plain (deferred) transaction, which
    reads a snapshot without taking the write lock that every other transaction takes at its
    BEGIN. A write through it fails on SQLite when the database is busy and is not atomic on
    PostgreSQL: read only."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine.execution_options(**{_READ_ONLY: True})


class ReadOne:
    """A read of at most one row by a statement built once, run outside a transaction on
    every request (the authentication's account lookup).

    On PostgreSQL it runs straight on the pooled connection's asyncpg driver: the same pool,
    ping and statement (compiled once), without SQLAlchemy's execution and result machinery,
    which cost about 0.2 ms of CPU per lookup (0.30 against 0.08 ms measured in a loop) for
    one round trip that PostgreSQL answers the same. A connection that fails it is dropped
    from the pool and the read is done once more the ordinary way, which also brings a lost
    connection's usual error (`server.errors.database_error_handler`). Elsewhere (SQLite) it
    is the ordinary way: `read_engine(engine)`."""

    def __init__(self, engine: AsyncEngine, statement: Any) -> None:
        self.engine = engine
        self.statement = statement
        self.read = read_engine(engine)
        self.sql: str | None = None
        self.order: tuple[str, ...] = ()
        if engine.dialect.name == "postgresql":
            compiled = statement.compile(dialect=engine.dialect)
            self.sql, self.order = compiled.string, tuple(compiled.positiontup or ())

    async def __call__(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The row (a tuple in the statement's column order), or None."""
        if self.sql is not None:
            raw = await self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                record = await driver.fetchrow(self.sql, *(params[k] for k in self.order))
            except Exception:  # the connection broke (or the statement failed): not reused,
                await greenlet_spawn(raw.invalidate)  # and the read is done the ordinary way
            except BaseException:  # cancelled mid-statement: not reused either
                await greenlet_spawn(raw.invalidate)
                raise
            else:
                await greenlet_spawn(raw.close)  # back to the pool
                return tuple(record) if record is not None else None
        async with self.read.connect() as conn:
            found = (await conn.execute(self.statement, params)).one_or_none()
        return tuple(found) if found is not None else None


async def read_snapshot(session: AsyncSession) -> None:
    """Begin `session`'s transaction as one consistent snapshot that writes nothing: on
    PostgreSQL REPEATABLE READ (in its BEGIN, no statement of its own; the pool resets the level
    when the connection goes back); on SQLite a deferred BEGIN, which reads the WAL snapshot of
    its first read without queueing for the write lock that every other transaction takes at
    BEGIN (a pull used to wait behind every write, in SQLite's busy handler's sleeps of up to
    100 ms). Call it before the session's first statement; a write in it fails on SQLite when
    another transaction writes."""
    if dialect_of(session) == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        await session.connection(execution_options={_READ_ONLY: True})


def dialect_of(session: AsyncSession | Session) -> str:
    """The backend's dialect name ('sqlite' or 'postgresql') of a bound session."""
    bind = session.bind
    if bind is None:
        raise RuntimeError("session is not bound to an engine")
    return bind.dialect.name


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that do not expire objects on commit (responses are built after commit)."""
    return async_sessionmaker(engine, expire_on_commit=False)
