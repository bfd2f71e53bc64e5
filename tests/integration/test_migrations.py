"""One Alembic history serves both databases: it matches the models and it runs both ways."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.db import make_engine
from server.migrate import alembic_config, downgrade, upgrade
from tests.conftest import fresh_database


def _scalar(url: str, sql: str) -> object:
    async def run() -> object:
        engine = make_engine(url)
        async with engine.connect() as conn:
            value = (await conn.execute(text(sql))).scalar()
        await engine.dispose()
        return value

    return asyncio.run(run())


VERSIONS = Path(__file__).parents[2] / "server" / "migrations" / "versions"
OURS = ("server", "sync", "schemas", "push", "media", "mobile", "i18n")


def test_migrations_are_frozen() -> None:
    """A migration imports none of the project's code (at module level or inside a function):
    a later change to that code would change what an old migration does on a database that
    runs it later. What one needs is copied into it."""
    found = []
    for path in sorted(VERSIONS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in OURS or n[0] == "."]
    assert found == []


def test_models_and_migrations_agree(database_url: str) -> None:
    # Raises when autogenerate would find a difference between the models and the database.
    command.check(alembic_config(database_url))


def test_spatial_indexes_exist(database_url: str, backend: str) -> None:
    if backend == "sqlite":
        n = _scalar(
            database_url, "SELECT count(*) FROM geometry_columns WHERE spatial_index_enabled = 1"
        )
    else:
        n = _scalar(
            database_url, "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%USING gist%'"
        )
    assert isinstance(n, int) and n >= 11


def test_audit_log_is_append_only(database_url: str) -> None:
    count = "SELECT count(*) FROM audit_log"
    before = _scalar(database_url, count)
    assert isinstance(before, int) and before > 0  # the demo data wrote entries

    async def run() -> None:
        engine = make_engine(database_url)
        for stmt in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
            async with engine.begin() as conn:
                with pytest.raises(DBAPIError, match="append-only"):
                    await conn.execute(text(stmt))
        await engine.dispose()

    asyncio.run(run())
    assert _scalar(database_url, count) >= before  # nothing was deleted


def test_downgrade_to_base_and_up_again(backend: str, tmp_path: Path) -> None:
    url = fresh_database(backend, tmp_path, scratch="liandong_test_migrations")
    downgrade(url, "base")
    tables = (
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tasks'"
        if backend == "sqlite"
        else "SELECT count(*) FROM information_schema.tables WHERE table_name='tasks'"
    )
    assert _scalar(url, tables) == 0
    upgrade(url)
    assert _scalar(url, tables) == 1
