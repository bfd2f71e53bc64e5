"""Sync work on the request's session: push, pull, conflicts, purge, scopes for events.

Each function runs the engine inside `AsyncSession.run_sync` (see `storage.drive`); the caller's
transaction commits it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from i18n import N_
from schemas.common import Role
from schemas.sync import (
    Conflict,
    ExchangeRequest,
    ExchangeResponse,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    UpgradeRequired,
)
from server import audit
from server.auth.principal import Principal
from server.config import Settings
from server.db import read_snapshot
from server.domain.sync.changelog import SyncRuntime
from server.domain.sync.policy import APPLY_DOMAIN, Actions, ServerPolicy, lock_domain_rows
from server.domain.sync.storage import SqlTx, drive
from server.errors import InvalidInput, NotFound
from sync.server import DAY_MS, ConflictNotFoundError


def device_key(p: Principal, device_id: str) -> str:
    """The device id the server keys outcomes by: namespaced by user, so one user's device id
    can never collide with (or replay against) another user's."""
    return f"{p.user_id}/{device_id}"


async def push(
    db: AsyncSession, rt: SyncRuntime, p: Principal, req: PushRequest, settings: Settings
) -> PushResponse | UpgradeRequired:
    """Apply a device's batch in the request's transaction, each write through its domain
    action (`policy.py`)."""
    req = msgspec.structs.replace(req, device_id=device_key(p, req.device_id))
    actions = Actions(db, settings)

    def run(s: Session) -> PushResponse | UpgradeRequired:
        return drive(rt.server(s, lock=lock_domain_rows, actions=actions).push(p, req))

    return await db.run_sync(run)


async def pull(
    db: AsyncSession, rt: SyncRuntime, p: Principal, req: PullRequest
) -> PullResponse | UpgradeRequired:
    """Answer a pull from one consistent snapshot (it writes nothing)."""
    await read_snapshot(db)

    def run(s: Session) -> PullResponse | UpgradeRequired:
        return drive(rt.server(s).pull(p, req))

    return await db.run_sync(run)


async def exchange(
    db: AsyncSession, rt: SyncRuntime, p: Principal, req: ExchangeRequest, settings: Settings
) -> ExchangeResponse | UpgradeRequired:
    """A push and then a pull for one round trip. The push is committed first (as a push
    request would be), so the pull starts its own snapshot and sees it; a failure in the pull
    leaves the acked push applied, which the device's retry finds as duplicates."""
    pushed = await push(db, rt, p, req.push, settings)
    if isinstance(pushed, UpgradeRequired):
        return pushed
    await db.commit()
    pulled = await pull(db, rt, p, req.pull)
    if isinstance(pulled, UpgradeRequired):
        return pulled
    return ExchangeResponse(push=pushed, pull=pulled)


async def user_scopes(db: AsyncSession, p: Principal) -> frozenset[str]:
    """The scopes `p` reads now."""

    def run(s: Session) -> frozenset[str]:
        return drive(ServerPolicy(s).user_scopes(SqlTx(s), p))

    return await db.run_sync(run)


def _conflict_scopes(s: Session, p: Principal) -> frozenset[str] | None:
    """The scopes whose records' conflicts `p` may see (None: every conflict, administrators);
    a dispatcher sees the conflicts of what their devices would hold: their area subtree."""
    if p.role is Role.ADMIN:
        return None
    return drive(ServerPolicy(s).user_scopes(SqlTx(s), p))


async def list_conflicts(
    db: AsyncSession,
    p: Principal,
    *,
    entity: str | None,
    record_id: uuid.UUID | None,
    resolved: bool,
) -> list[Conflict]:
    """Conflicts of records `p` may see, oldest first."""

    def run(s: Session) -> list[Conflict]:
        return drive(
            SqlTx(s).list_conflicts(
                entity=entity,
                record_id=record_id,
                resolved=resolved,
                scopes=_conflict_scopes(s, p),
            )
        )

    return await db.run_sync(run)


async def resolve_conflict(
    db: AsyncSession,
    rt: SyncRuntime,
    p: Principal,
    conflict_id: uuid.UUID,
    take: Literal["winner", "loser", "value"],
    value: Any,
    settings: Settings,
) -> Conflict:
    """Resolve; a restored value is a server write into the change log and the domain row."""

    def run(s: Session) -> Conflict:
        if drive(SqlTx(s).get_conflict(conflict_id, _conflict_scopes(s, p))) is None:
            raise ConflictNotFoundError(conflict_id)  # absent, or not in the user's area
        s.info[APPLY_DOMAIN] = True
        try:
            server = rt.server(s, actions=Actions(db, settings))
            return drive(
                server.resolve_conflict(SqlTx(s), conflict_id, take=take, value=value, user=p)
            )
        finally:
            s.info.pop(APPLY_DOMAIN, None)

    try:
        out = await db.run_sync(run)
    except ConflictNotFoundError as exc:
        raise NotFound(N_("no such conflict")) from exc
    except ValueError as exc:
        raise InvalidInput(N_("value refused: {reason}"), reason=str(exc), field="value") from exc
    audit.record(db, p, "sync.resolve", out.entity, out.record_id, conflict=conflict_id, take=take)
    return out


def purge(session: Session, horizon_days: float) -> int:
    """Forget tombstones and eviction markers older than the horizon; return the horizon seq."""
    before = time.time_ns() // 1_000_000 - int(horizon_days * DAY_MS)
    return drive(SqlTx(session).purge_tombstones(before))
