"""The change log's commit hook: what the write functions recorded becomes sync changes.

Every write function records the synced rows it touches (`server.changes.record`, the way
Zulip's `do_*` functions send their events). Sessions made by the app's sessionmaker are
`SyncedSession`s (`install`), whose events do the rest:

- `before_commit`: flush, then turn the recorded rows into server writes
  (`SyncServer.server_writes`, a server HLC, one batch for the transaction) in the same
  transaction: the write and its change commit together or not at all. Timeline rows become
  items of their task's or hazard's `timeline`; a new photo link re-writes the photo's record;
  a hazard whose scopes changed re-writes its photos' records (they follow it).
- `before_commit` also sends `NOTIFY liandong_sync` with the changed scopes on PostgreSQL, so
  other processes' brokers hear of the commit (see `events.py`).
- `after_commit`: publish the scopes that changed to the SSE broker ("pull now").
- **The guard** (`GUARD`, on for the whole test suite and with `LIANDONG_SYNC_GUARD=1`):
  `after_flush` notes every synced row the session flushed, and `before_commit` fails with
  `UnrecordedChangeError` when one of them was not recorded; a bulk `UPDATE`/`DELETE` of a
  synced table must carry `execution_options(recorded=True)` (it recorded its rows itself).

Rows that the sync engine itself stored (a device's hazard applied through its domain action,
`storage.mark_skip`) are not written twice. Writes made by sessions that are not synced (the
CLI's `seed-demo`, a script) are picked up by `backfill` at the next start.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from schemas.sync import Op
from server import changes
from server.db import dialect_of
from server.domain.dispatch.services import TIMELINE_ORDER
from server.domain.hazards.services import HAZARD_TIMELINE_ORDER
from server.domain.sync.events import CHANNEL, Broker, notify_payloads
from server.domain.sync.mapping import (
    BY_ENTITY,
    BY_MODEL,
    MAPPED,
    fields_of,
    hazard_event_item,
    hazard_scopes,
    task_event_item,
)
from server.domain.sync.policy import ServerPolicy
from server.domain.sync.storage import SKIP, TOUCHED, SqlStorage, SqlTx, drive
from server.models import (
    CheckItem,
    HazardEvent,
    HazardMedia,
    MediaObject,
    Record,
    SyncRecord,
    TaskEvent,
)
from sync.hlc import HLC, SystemClock
from sync.server import SyncServer

RUNTIME = "sync"
FLUSHED = changes.FLUSHED

GUARD = os.environ.get("LIANDONG_SYNC_GUARD", "") == "1"
"""Fail a commit that flushed a synced row without recording it (tests turn it on)."""

# Timeline and link rows: recorded like records, written as part of another record.
_PARTS: tuple[type[Any], ...] = (TaskEvent, HazardEvent, HazardMedia, CheckItem)


class UnrecordedChangeError(RuntimeError):
    """A synced row was written without `server.changes.record` (a write function's bug)."""


@dataclass
class SyncRuntime:
    """Per-process sync state shared by every session: the HLC and the SSE broker."""

    hlc: HLC = field(default_factory=lambda: HLC(SystemClock()))
    broker: Broker = field(default_factory=Broker)
    min_schema_version: int = 2

    def server(self, session: Session, *, lock: Any = None, actions: Any = None) -> SyncServer:
        """A `SyncServer` on `session`'s transaction with the server's policy; `actions` is
        the request's `AsyncSession` when device writes are applied (see `policy`)."""
        return SyncServer(
            SqlStorage(session, lock),
            ServerPolicy(session, actions),
            hlc=self.hlc,
            min_schema_version=self.min_schema_version,
        )


class SyncedSession(Session):
    """A session whose recorded writes become sync changes (see the module docstring)."""


def runtime_of(session: Session) -> SyncRuntime | None:
    """The runtime a session was configured with, if any."""
    rt = session.info.get(RUNTIME)
    return rt if isinstance(rt, SyncRuntime) else None


def install(sessionmaker: async_sessionmaker[Any], runtime: SyncRuntime) -> None:
    """Make `sessionmaker`'s sessions synced sessions bound to `runtime`."""
    sessionmaker.configure(sync_session_class=SyncedSession, info={RUNTIME: runtime})


@event.listens_for(SyncedSession, "after_flush")
def _after_flush(session: Session, _ctx: Any) -> None:
    if not GUARD:
        return
    flushed: set[tuple[type[Any], Any]] = session.info.setdefault(FLUSHED, set())
    for obj in (*session.new, *session.dirty, *session.deleted):
        cls = type(obj)
        if cls in BY_MODEL or cls in _PARTS:
            if obj in session.dirty and not session.is_modified(obj):
                continue
            flushed.add((cls, obj.id))


@event.listens_for(SyncedSession, "do_orm_execute")
def _bulk_guard(state: ORMExecuteState) -> None:
    if not GUARD or not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and (mapper.class_ in BY_MODEL or mapper.class_ in _PARTS):
        if not state.execution_options.get(changes.RECORDED):
            raise UnrecordedChangeError(
                f"bulk {'UPDATE' if state.is_update else 'DELETE'} of {mapper.class_.__name__} "
                "without recorded=True: record its rows (server.changes.record)"
            )


def _check_recorded(session: Session) -> None:
    flushed: set[tuple[type[Any], Any]] = session.info.pop(FLUSHED, set())
    if not flushed:
        return
    done = set(changes.recorded(session)) | session.info.get(SKIP, set())
    missing = sorted(f"{cls.__name__} {ident}" for cls, ident in flushed - done)
    if missing:
        raise UnrecordedChangeError(
            "synced rows written without server.changes.record: " + ", ".join(missing)
        )


@event.listens_for(SyncedSession, "before_commit")
def _before_commit(session: Session) -> None:
    rt = runtime_of(session)
    if rt is None:
        return
    session.flush()
    if GUARD:
        _check_recorded(session)
    _write_pending(session, rt)
    touched: set[str] = session.info.get(TOUCHED, set())
    if touched and dialect_of(session) == "postgresql":
        # Delivered by PostgreSQL when (and only if) this transaction commits.
        for payload in notify_payloads(rt.broker.origin, touched):
            session.execute(select(func.pg_notify(CHANNEL, payload)))


def _targets(session: Session) -> dict[tuple[str, uuid.UUID], list[dict[str, Any]]]:
    """Recorded rows as the records to re-write, each with its new timeline items."""
    skip: set[tuple[type[Any], Any]] = session.info.get(SKIP, set())
    out: dict[tuple[str, uuid.UUID], list[dict[str, Any]]] = {}
    for (cls, ident), entry in changes.recorded(session).items():
        if (cls, ident) in skip:
            continue
        row = entry.row
        if cls in BY_MODEL:
            out.setdefault((BY_MODEL[cls].entity, ident), [])
        elif cls is TaskEvent and row is not None:
            out.setdefault(("task", row.task_id), []).append(task_event_item(row))
        elif cls is HazardEvent and row is not None:
            out.setdefault(("hazard", row.hazard_id), []).append(hazard_event_item(row))
        elif cls is HazardMedia and row is not None:
            # A photo attached to a hazard now travels with it: re-write the photo's record.
            out.setdefault(("media", row.media_id), [])
        elif cls is CheckItem and row is not None:
            # A template's items are part of its record: re-write the template.
            out.setdefault(("check_template", row.template_id), [])
    return out


def _write_pending(session: Session, rt: SyncRuntime) -> None:
    targets = _targets(session)
    session.info.pop(changes.PENDING, None)
    if not targets:
        return
    tx = SqlTx(session)
    hazards = [rid for kind, rid in targets if kind == "hazard"]
    before = drive(tx.get_records("hazard", hazards)) if hazards else {}
    writes: list[tuple[str, uuid.UUID, dict[str, Any], Op]] = []
    moved: list[uuid.UUID] = []
    for (entity, rid), items in sorted(targets.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        row: Record | None = session.get(BY_ENTITY[entity].model, rid)
        if row is None:
            continue
        if row.deleted_at is not None:
            if rid in before or drive(tx.get_records(entity, [rid])):
                writes.append((entity, rid, {}, Op.DELETE))
            continue
        values = fields_of(row)
        if items:
            values["timeline"] = items
        if entity == "hazard":
            old = before.get(rid)
            if old is not None and set(hazard_scopes(values)) != set(hazard_scopes(old.values())):
                moved.append(rid)  # its photos must follow it to its new scopes
        writes.append((entity, rid, values, Op.CREATE))
    if moved:
        known = {(e, r) for e, r, _, _ in writes}
        stmt = (
            select(MediaObject)
            .join(HazardMedia, HazardMedia.media_id == MediaObject.id)
            .where(HazardMedia.hazard_id.in_(moved))
        )
        for media in session.execute(stmt).scalars():
            if ("media", media.id) not in known:
                known.add(("media", media.id))
                writes.append(("media", media.id, fields_of(media), Op.CREATE))
    if writes:
        # One batch for the whole transaction: one read per entity, one save, one seq range.
        drive(rt.server(session).server_writes(tx, writes))


@event.listens_for(SyncedSession, "after_commit")
def _after_commit(session: Session) -> None:
    touched: set[str] = session.info.pop(TOUCHED, set())
    session.info.pop(SKIP, None)
    rt = runtime_of(session)
    if touched and rt is not None:
        rt.broker.publish(touched)


@event.listens_for(SyncedSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    for key in (TOUCHED, SKIP, changes.PENDING, FLUSHED):
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
            select(TaskEvent).where(TaskEvent.task_id.in_(ids)).order_by(*TIMELINE_ORDER)
        ).scalars()
        for ev in evs:
            out.setdefault(ev.task_id, []).append(task_event_item(ev))
    elif entity == "hazard":
        hevs = session.execute(
            select(HazardEvent)
            .where(HazardEvent.hazard_id.in_(ids))
            .order_by(*HAZARD_TIMELINE_ORDER)
        ).scalars()
        for hev in hevs:
            out.setdefault(hev.hazard_id, []).append(hazard_event_item(hev))
    return out
