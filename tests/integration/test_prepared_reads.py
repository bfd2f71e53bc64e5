"""The reads every request makes, built once (issue 13's server CPU): a statement built for a
shape of principal (`server.scope.for_principal`) reads for each user exactly what the same
rule built for that user reads, and on SQLite neither the authentication's read-only connection
nor a pull queues behind a writer."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from schemas.common import Role
from schemas.sync import SCHEMA_VERSION, PullRequest, PullResponse
from server.auth.principal import Principal
from server.auth.tokens import ACCOUNT
from server.db import make_engine, make_sessionmaker, read_engine
from server.domain.sync import services as sync_services
from server.domain.sync.changelog import SyncRuntime
from server.domain.sync.policy import (
    _enterprises_stmt,
    _home_areas_stmt,
    _inspector_grids_stmt,
    _scope_inputs_stmt,
    _task_facts_stmt,
)
from server.errors import Forbidden
from server.models import User, utcnow
from server.scope import for_principal, principal_params
from tests.conftest import fresh_database

RULES: dict[str, Callable[[Principal], Any]] = {
    "task_facts": _task_facts_stmt,
    "home_areas": _home_areas_stmt,
    "inspector_grids": _inspector_grids_stmt,
    "enterprises": _enterprises_stmt,
    "scope_inputs": _scope_inputs_stmt,  # all of a pull's scope reads in one
}


def _principal(row: Any) -> Principal:
    return Principal(
        user_id=row.id,
        username=row.username,
        role=Role(row.role),
        org_id=row.org_id,
        area_id=row.area_id,
        session_id=uuid.uuid4(),
        device_id="t",
    )


async def _compare(url: str) -> dict[tuple[Role, bool, bool], set[uuid.UUID]]:
    engine = make_engine(url)
    shapes: dict[tuple[Role, bool, bool], set[uuid.UUID]] = {}
    try:
        async with engine.connect() as conn:
            users = (await conn.execute(select(User))).all()
            for p in map(_principal, users):
                shapes.setdefault((p.role, p.org_id is None, p.area_id is None), set()).add(
                    p.user_id
                )
                for name, rule in RULES.items():
                    try:
                        direct = rule(p)
                    except Forbidden:
                        continue
                    built = for_principal(p, rule)
                    want = sorted(map(tuple, (await conn.execute(direct)).all()), key=repr)
                    got = (await conn.execute(built, principal_params(p))).all()
                    assert sorted(map(tuple, got), key=repr) == want, (name, p.username)
    finally:
        await engine.dispose()
    return shapes


def test_a_statement_built_for_a_shape_reads_what_the_rule_reads_for_each_user(
    database_url: str,
) -> None:
    shapes = asyncio.run(_compare(database_url))
    # The comparison means something only if some shape served several users (the second
    # ran the first one's statement with its own parameters).
    assert any(len(users) > 1 for users in shapes.values()), shapes


def test_one_statement_per_shape() -> None:
    a, b = (
        Principal(
            user_id=uuid.uuid4(),
            username=name,
            role=Role.RESPONDER,
            org_id=uuid.uuid4(),
            area_id=None,
            session_id=uuid.uuid4(),
            device_id="t",
        )
        for name in ("a", "b")
    )
    built = for_principal(a, _task_facts_stmt)
    assert for_principal(b, _task_facts_stmt) is built
    no_org = Principal(**{**a.__dict__, "org_id": None})
    assert for_principal(no_org, _task_facts_stmt) is not built
    assert principal_params(b)["p_user"] == b.user_id


async def _read_beside_a_writer(url: str, read: Callable[[Any], Any]) -> Any:
    """`read(engine)` while another connection holds SQLite's write lock."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:  # one account
            await conn.execute(
                insert(User).values(
                    id=USER, username="u", display_name="u", password_hash="x", role="responder"
                )
            )
        path = make_url(url).database
        assert path
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # what every writing transaction takes at its BEGIN
        try:
            # A BEGIN IMMEDIATE in `read` would wait for the writer (busy_timeout 10 s): timeout.
            return await asyncio.wait_for(read(engine), 5)
        finally:
            writer.rollback()
            writer.close()
    finally:
        await engine.dispose()


async def _authenticate(engine: Any) -> Any:
    async with read_engine(engine).connect() as conn:
        params = {"user_id": USER, "session_id": uuid.uuid4(), "now": utcnow()}
        return (await conn.execute(ACCOUNT, params)).one()


async def _pull(engine: Any) -> Any:
    request = PullRequest(schema_version=SCHEMA_VERSION, device_id="t")
    async with read_engine(engine).connect() as conn:
        principal = _principal((await conn.execute(select(User).where(User.id == USER))).one())
    async with make_sessionmaker(engine)() as session:
        reply = await sync_services.pull(session, SyncRuntime(), principal, request)
        await session.commit()  # as the request's session does after the handler
        return reply


USER = uuid.uuid4()


def test_on_sqlite_the_authentication_reads_while_a_writer_holds_the_lock(
    tmp_path: Path,
) -> None:
    """SQLite only (PostgreSQL's reads never wait for a writer's lock): its own file."""
    row = asyncio.run(_read_beside_a_writer(fresh_database("sqlite", tmp_path), _authenticate))
    assert row.live is False and row.disabled is False


def test_on_sqlite_a_pull_reads_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    """A pull writes nothing: it reads its snapshot (`server.db.read_snapshot`) beside a
    writer instead of queueing for the lock with every write of a surge."""
    reply = asyncio.run(_read_beside_a_writer(fresh_database("sqlite", tmp_path), _pull))
    assert isinstance(reply, PullResponse)
    assert {"ref", f"user:{USER}"} <= {p.scope for p in reply.scopes}  # the first pull's pages
