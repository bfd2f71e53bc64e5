"""Engines for both backends: SQLite + SpatiaLite (embedded default) and PostgreSQL + PostGIS."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

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


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite every new connection loads SpatiaLite first."""
    if is_sqlite(url):
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # aiosqlite runs sqlite3 in its own thread: reach the raw connection there.
            dbapi_connection.run_async(lambda raw: raw._execute(_prepare_sqlite, raw._conn))

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Take the write lock at BEGIN so two writers queue instead of failing mid-way.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_async_engine(url, **kwargs)


def dialect_of(session: AsyncSession | Session) -> str:
    """The backend's dialect name ('sqlite' or 'postgresql') of a bound session."""
    bind = session.bind
    if bind is None:
        raise RuntimeError("session is not bound to an engine")
    return bind.dialect.name


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that do not expire objects on commit (responses are built after commit)."""
    return async_sessionmaker(engine, expire_on_commit=False)
