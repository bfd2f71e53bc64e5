"""Per-test isolation on the shared integration databases: copies of every table, restored after
each test.

`DatabaseState.capture()` copies the rows of every table in `server.models.Base.metadata` into
tables the database keeps beside them (SQLite: an attached in-memory database; PostgreSQL: temp
tables of one connection), so a restore is one transaction inside the database: delete every
row (children first), copy the saved rows back (parents first), put sequences back. The
append-only guard on `audit_log` (migration 0001) is lifted inside that transaction only. Files
the app wrote under its var directory (media blobs, partial uploads) since the capture go too.

Captures stack: a module-scoped fixture that builds data once for many tests wraps its yield in
`state.kept()`, and tests restore to that data until the module ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import make_url

from server.db import _prepare_sqlite, is_sqlite
from server.models import Base

TABLES = [t.name for t in Base.metadata.sorted_tables]  # parents before children


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The statements, on names from our own metadata (quoted), never on input.
def _count(table: str) -> str:
    return f"SELECT count(*) FROM {table}"  # noqa: S608


def _save(into: str, source: str) -> str:
    return f"CREATE TABLE {into} AS SELECT * FROM {source};"  # noqa: S608


def _delete(table: str) -> str:
    return f"DELETE FROM {table};"  # noqa: S608


def _copy(into: str, source: str, extra: str = "") -> str:
    return f"INSERT INTO {into} {extra}SELECT * FROM {source};"  # noqa: S608


def _files(root: Path) -> set[str]:
    out: set[str] = set()
    for dirpath, _dirs, names in os.walk(root):
        out.update(os.path.join(dirpath, n) for n in names)
    return out


class _Backend:
    """A connection of our own to the database, and the SQL for its backend.

    Guarded tables (the audit log: a trigger refuses DELETE) are left alone unless their row
    count changed; then the guard is lifted inside the restore's transaction only.
    """

    def capture(self, layer: int) -> None:
        raise NotImplementedError

    def restore(self, layer: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SQLite(_Backend):
    GUARD = re.compile(r"\bBEFORE\s+DELETE\b.*\bRAISE\s*\(", re.IGNORECASE | re.DOTALL)

    def __init__(self, url: str) -> None:
        path = make_url(url).database
        assert path, url
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        _prepare_sqlite(self.conn)  # SpatiaLite: inserts maintain the spatial indexes
        self.conn.execute("ATTACH DATABASE ':memory:' AS snap")
        names = {r[0] for r in self.conn.execute("SELECT name FROM main.sqlite_master")}
        # AUTOINCREMENT counters live in a table of their own.
        self.tables = TABLES + (["sqlite_sequence"] if "sqlite_sequence" in names else [])
        # SQLite cannot disable a trigger: a guard is dropped and re-created from its SQL.
        self.guards: dict[str, list[tuple[str, str]]] = {}
        for name, table, sql in self.conn.execute(
            "SELECT name, tbl_name, sql FROM main.sqlite_master WHERE type = 'trigger'"
        ):
            if table in TABLES and self.GUARD.search(sql or ""):
                self.guards.setdefault(table, []).append((name, sql))
        self.counts: dict[int, dict[str, int]] = {}

    def _count(self, table: str) -> int:
        return int(self.conn.execute(_count(f"main.{_q(table)}")).fetchone()[0])

    def capture(self, layer: int) -> None:
        script = ["BEGIN;"]
        for t in self.tables:
            saved = f"snap.{_q(f'{layer}_{t}')}"
            script += [f"DROP TABLE IF EXISTS {saved};", _save(saved, f"main.{_q(t)}")]
        script.append("COMMIT;")
        self.conn.executescript("\n".join(script))
        self.counts[layer] = {t: self._count(t) for t in self.guards}

    def restore(self, layer: int) -> None:
        lifted = [t for t in self.guards if self._count(t) != self.counts[layer][t]]
        tables = [t for t in self.tables if t not in self.guards or t in lifted]
        script = ["BEGIN IMMEDIATE;", "PRAGMA defer_foreign_keys = ON;"]
        script += [f"DROP TRIGGER main.{_q(name)};" for t in lifted for name, _ in self.guards[t]]
        script += [_delete(f"main.{_q(t)}") for t in reversed(tables)]
        script += [_copy(f"main.{_q(t)}", f"snap.{_q(f'{layer}_{t}')}") for t in tables]
        script += [f"{sql};" for t in lifted for _, sql in self.guards[t]]
        script.append("COMMIT;")
        try:
            self.conn.executescript("\n".join(script))
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


class _Postgres(_Backend):
    def __init__(self, url: str) -> None:
        # asyncpg on a loop of our own: fixtures are synchronous, and the saved rows live in
        # temp tables of this one connection.
        self.loop = asyncio.new_event_loop()
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn: Any = self._run(asyncpg.connect(dsn))
        # Triggers of our own (not the internal ones behind foreign keys): the audit log's guard.
        rows = self._run(
            self.conn.fetch(
                "SELECT DISTINCT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
                " WHERE NOT g.tgisinternal AND c.relname = ANY($1::text[])",
                TABLES,
            )
        )
        self.guarded: list[str] = [r[0] for r in rows]
        # Sequences behind serial columns (the audit log's and login failures' ids).
        rows = self._run(
            self.conn.fetch(
                "SELECT s FROM (SELECT pg_get_serial_sequence(quote_ident(table_name), "
                "column_name) AS s FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ANY($1::text[])) q "
                "WHERE s IS NOT NULL",
                TABLES,
            )
        )
        self.sequences: list[str] = [r[0] for r in rows]
        self.setvals: dict[int, str] = {}
        self.counts: dict[int, dict[str, int]] = {}

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _counts(self) -> dict[str, int]:
        return {t: int(await self.conn.fetchval(_count(_q(t)))) for t in self.guarded}

    def capture(self, layer: int) -> None:
        async def run() -> str:
            async with self.conn.transaction():
                await self.conn.execute(
                    "".join(
                        f"DROP TABLE IF EXISTS pg_temp.{_q(f'snap{layer}_{t}')}; "
                        f"CREATE TEMP TABLE {_q(f'snap{layer}_{t}')} AS TABLE {_q(t)};"
                        for t in TABLES
                    )
                )
                self.counts[layer] = await self._counts()
                calls = []
                for seq in self.sequences:
                    row = await self.conn.fetchrow(
                        "SELECT last_value, start_value FROM pg_sequences "
                        "WHERE format('%I.%I', schemaname, sequencename) = $1",
                        seq,
                    )
                    if row["last_value"] is None:  # never used: the next value is the start
                        calls.append(f"setval('{seq}', {int(row['start_value'])}, false)")
                    else:
                        calls.append(f"setval('{seq}', {int(row['last_value'])}, true)")
                return f"SELECT {', '.join(calls)};" if calls else ""

        self.setvals[layer] = self._run(run())

    def restore(self, layer: int) -> None:
        async def run() -> None:
            counts = await self._counts()
            lifted = [t for t in self.guarded if counts[t] != self.counts[layer][t]]
            tables = [t for t in TABLES if t not in self.guarded or t in lifted]
            script = [f"ALTER TABLE {_q(t)} DISABLE TRIGGER USER;" for t in lifted]
            script += [_delete(_q(t)) for t in reversed(tables)]
            script += [
                _copy(_q(t), f"pg_temp.{_q(f'snap{layer}_{t}')}", "OVERRIDING SYSTEM VALUE ")
                for t in tables
            ]
            script += [f"ALTER TABLE {_q(t)} ENABLE TRIGGER USER;" for t in lifted]
            script.append(self.setvals[layer])
            async with self.conn.transaction():
                await self.conn.execute("\n".join(script))

        self._run(run())

    def close(self) -> None:
        self._run(self.conn.close())
        self.loop.close()


class Forgetful(Protocol):
    """Something holding per-state cache entries (the logged-in users' headers)."""

    def cached(self) -> frozenset[str]: ...

    def forget_all_but(self, keep: frozenset[str]) -> None: ...


class DatabaseState:
    """Captured states of one database (and of the app's files), newest on top."""

    def __init__(self, url: str, var_dir: Path, cache: Forgetful) -> None:
        self.backend: _Backend = _SQLite(url) if is_sqlite(url) else _Postgres(url)
        self.var_dir = var_dir
        self.cache = cache
        self.layers: list[tuple[set[str], frozenset[str]]] = []  # files and cache keys

    def capture(self) -> None:
        """Push the database's current rows (and the var directory's files) as a new state."""
        self.backend.capture(len(self.layers))
        self.layers.append((_files(self.var_dir), self.cache.cached()))

    def restore(self) -> None:
        """Put back the newest captured state."""
        self.backend.restore(len(self.layers) - 1)
        files, keys = self.layers[-1]
        for path in _files(self.var_dir) - files:
            os.unlink(path)
        self.cache.forget_all_but(keys)

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Within the block, tests restore to the state as it is now (data a module-scoped
        fixture built); after it, the state before comes back."""
        self.capture()
        try:
            yield
        finally:
            self.layers.pop()
            self.restore()

    def close(self) -> None:
        self.backend.close()
