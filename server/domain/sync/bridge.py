"""REST writes enter the change log in the same transaction, without touching the services.

Sessions made by the app's sessionmaker are `SyncedSession`s (`install`). Their events:

- `after_flush`: remember every new, changed or deleted row of a synced table (and new
  timeline rows), except rows that sync itself wrote (`storage.SKIP`).
- `before_commit`: flush, then turn the remembered rows into server writes
  (`SyncServer.server_write`, a server HLC) in the same transaction: the REST write and its
  change commit together or not at all.
- `before_commit` also sends `NOTIFY liandong_sync` with those scopes on PostgreSQL, so other
  processes' brokers hear of the commit (see `events.py`).
- `after_commit`: publish the scopes that changed to the SSE broker ("pull now").

The same events run for background jobs using the app's sessionmaker. Writes made by other
sessions (the CLI's `seed-demo`, a script) are picked up by `backfill` at the next start.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, func, inspect, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from schemas.sync import Op
from server.db import dialect_of
from server.domain.sync.events import CHANNEL, Broker, notify_payloads
from server.domain.sync.mapping import (
    BY_ENTITY,
    BY_MODEL,
    MAPPED,
    fields_of,
    hazard_event_item,
    task_event_item,
)
from server.domain.sync.storage import SKIP, TOUCHED, SqlStorage, SqlTx, drive
from server.models import (
    CheckItem,
    Hazard,
    HazardEvent,
    HazardMedia,
    Record,
    SyncRecord,
    TaskEvent,
)
from sync.hlc import HLC, SystemClock
from sync.server import SyncServer

PENDING = "sync_pending"
HAZARD_SCOPE_COLUMNS = ("grid_id", "enterprise_id", "reporter_id", "area_id")
"""The hazard columns its sync scopes come from (`mapping.hazard_scopes`)."""
RUNTIME = "sync"


@dataclass
class SyncRuntime:
    """Per-process sync state shared by every session: the HLC and the SSE broker."""

    hlc: HLC = field(default_factory=lambda: HLC(SystemClock()))
    broker: Broker = field(default_factory=Broker)
    min_schema_version: int = 1

    def server(self, session: Session, *, lock: Any = None) -> SyncServer:
        """A `SyncServer` on `session`'s transaction with the server's policy."""
        from server.domain.sync.policy import ServerPolicy

        return SyncServer(
            SqlStorage(session, lock),
            ServerPolicy(session),
            hlc=self.hlc,
            min_schema_version=self.min_schema_version,
        )


class SyncedSession(Session):
    """A session whose REST writes become sync changes (see the module docstring)."""


def runtime_of(session: Session) -> SyncRuntime | None:
    """The runtime a session was configured with, if any."""
    rt = session.info.get(RUNTIME)
    return rt if isinstance(rt, SyncRuntime) else None


def install(sessionmaker: async_sessionmaker[Any], runtime: SyncRuntime) -> None:
    """Make `sessionmaker`'s sessions synced sessions bound to `runtime`."""
    sessionmaker.configure(sync_session_class=SyncedSession, info={RUNTIME: runtime})


@event.listens_for(SyncedSession, "after_flush")
def _after_flush(session: Session, _ctx: Any) -> None:
    skip: set[tuple[type[Any], Any]] = session.info.get(SKIP, set())
    pending: dict[tuple[str, uuid.UUID], dict[str, Any]] = session.info.setdefault(PENDING, {})
    for obj in (*session.new, *session.dirty, *session.deleted):
        cls = type(obj)
        if (cls, getattr(obj, "id", None)) in skip:
            continue
        if cls in BY_MODEL:
            if obj in session.dirty and not session.is_modified(obj):
                continue
            entry = pending.setdefault((BY_MODEL[cls].entity, obj.id), {"items": []})
            entry["row"] = obj
            entry["gone"] = obj in session.deleted
            if cls is Hazard and obj in session.dirty:
                state = inspect(obj)
                if any(state.attrs[c].history.has_changes() for c in HAZARD_SCOPE_COLUMNS):
                    entry["rescope"] = True  # its photos must follow (see _follow_hazards)
        elif cls is TaskEvent and obj in session.new:
            entry = pending.setdefault(("task", obj.task_id), {"items": []})
            entry["items"].append(task_event_item(obj))
        elif cls is HazardEvent and obj in session.new:
            entry = pending.setdefault(("hazard", obj.hazard_id), {"items": []})
            entry["items"].append(hazard_event_item(obj))
        elif cls is HazardMedia and obj in session.new:
            # A photo attached to a hazard now travels with it: re-write the photo's record.
            pending.setdefault(("media", obj.media_id), {"items": []})
        elif cls is CheckItem:
            # A template's items are part of its record: re-write the template.
            pending.setdefault(("check_template", obj.template_id), {"items": []})


@event.listens_for(SyncedSession, "before_commit")
def _before_commit(session: Session) -> None:
    rt = runtime_of(session)
    if rt is None:
        return
    session.flush()
    _write_pending(session, rt)
    touched: set[str] = session.info.get(TOUCHED, set())
    if touched and dialect_of(session) == "postgresql":
        # Delivered by PostgreSQL when (and only if) this transaction commits.
        for payload in notify_payloads(rt.broker.origin, touched):
            session.execute(select(func.pg_notify(CHANNEL, payload)))


def _write_pending(session: Session, rt: SyncRuntime) -> None:
    pending: dict[tuple[str, uuid.UUID], dict[str, Any]] = session.info.pop(PENDING, {})
    if not pending:
        return
    _follow_hazards(session, pending)
    server = rt.server(session)
    tx = SqlTx(session)
    writes: list[tuple[str, uuid.UUID, dict[str, Any], Op]] = []
    for (entity, rid), entry in sorted(pending.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        row: Record | None = entry.get("row")
        if row is None:
            row = session.get(BY_ENTITY[entity].model, rid)
            if row is None:
                continue
        if entry.get("gone") or row.deleted_at is not None:
            if drive(tx.get_records(entity, [rid])):
                writes.append((entity, rid, {}, Op.DELETE))
            continue
        values = fields_of(row)
        if entry["items"]:
            values["timeline"] = entry["items"]
        writes.append((entity, rid, values, Op.CREATE))
    if writes:
        # One batch for the whole transaction: one read per entity, one save, one seq range.
        drive(server.server_writes(tx, writes))


def _follow_hazards(session: Session, pending: dict[tuple[str, uuid.UUID], dict[str, Any]]) -> None:
    """A hazard whose scope columns changed: re-write its photos' records too (after it:
    entities are written in name order), so each photo follows its hazard's scopes. Other
    hazard edits leave the photos' scopes as they are and cost nothing here."""
    hazards = [rid for (kind, rid), e in pending.items() if kind == "hazard" and e.get("rescope")]
    follow_photos(session, hazards)


def follow_photos(session: Session, hazard_ids: list[uuid.UUID]) -> None:
    """Queue the photo records of these hazards for re-writing at commit (their scopes follow
    the hazards'); sync calls it when a device's write moved a hazard to other scopes."""
    if not hazard_ids:
        return
    pending: dict[tuple[str, uuid.UUID], dict[str, Any]] = session.info.setdefault(PENDING, {})
    stmt = select(HazardMedia.media_id).where(HazardMedia.hazard_id.in_(hazard_ids))
    for media_id in session.execute(stmt).scalars():
        pending.setdefault(("media", media_id), {"items": []})


@event.listens_for(SyncedSession, "after_commit")
def _after_commit(session: Session) -> None:
    touched: set[str] = session.info.pop(TOUCHED, set())
    session.info.pop(SKIP, None)
    rt = runtime_of(session)
    if touched and rt is not None:
        rt.broker.publish(touched)


@event.listens_for(SyncedSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    for key in (TOUCHED, SKIP, PENDING):
        session.info.pop(key, None)


def backfill(session: Session, runtime: SyncRuntime, chunk: int = 500) -> int:
    """Enter domain rows the change log lacks (written outside a synced session, e.g. the
    demo seed or rows from before this migration) as server writes, `chunk` rows per batch
    with their timelines read in one query per chunk. Returns how many."""
    server = runtime.server(session)
    tx = SqlTx(session)
    done = 0
    for mapped in MAPPED:
        known = select(SyncRecord.record_id).where(SyncRecord.entity == mapped.entity)
        model: Any = mapped.model
        rows = list(
            session.execute(
                select(model).where(model.deleted_at.is_(None), model.id.not_in(known))
            ).scalars()
        )
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            timelines = _timelines(session, mapped.entity, [r.id for r in part])
            writes: list[tuple[str, uuid.UUID, dict[str, Any], Op]] = []
            for row in part:
                values = fields_of(row)
                if mapped.entity in ("task", "hazard"):
                    values["timeline"] = timelines.get(row.id, [])
                writes.append((mapped.entity, row.id, values, Op.CREATE))
            drive(server.server_writes(tx, writes))
            done += len(part)
    return done


def _timelines(
    session: Session, entity: str, ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Timeline items of tasks or hazards `ids`, oldest first, in one query."""
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    if entity == "task":
        evs = session.execute(
            select(TaskEvent).where(TaskEvent.task_id.in_(ids)).order_by(TaskEvent.at)
        ).scalars()
        for ev in evs:
            out.setdefault(ev.task_id, []).append(task_event_item(ev))
    elif entity == "hazard":
        hevs = session.execute(
            select(HazardEvent).where(HazardEvent.hazard_id.in_(ids)).order_by(HazardEvent.at)
        ).scalars()
        for hev in hevs:
            out.setdefault(hev.hazard_id, []).append(hazard_event_item(hev))
    return out
