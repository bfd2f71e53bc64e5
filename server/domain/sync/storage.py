"""`sync.storage.SyncStorage` on SQLAlchemy, for SpatiaLite and PostGIS.

The engine's storage Protocol is async; SQLAlchemy's ORM events (the commit hook) are not. So
the methods here are `async def` but never suspend: they run plain (synchronous) `Session`
calls, which work inside SQLAlchemy's greenlet (`AsyncSession.run_sync`, or any session event
fired under an `AsyncSession`). `drive()` runs such a coroutine to completion on the spot. One
implementation therefore serves the HTTP endpoints, the commit hook that turns recorded writes into
changes, the CLI and the benchmarks.

Ordering promise (`next_seqs`): the writer takes the lock on the single `sync_counter` row
(`UPDATE ... RETURNING`) and holds it to commit, so transactions commit in seq order on
PostgreSQL; on SQLite every write transaction already holds the database write lock (BEGIN
IMMEDIATE). Pulls on PostgreSQL run under REPEATABLE READ (see services.pull), so one pull sees
one snapshot.

`SqlTx` does not commit: the session's owner (the request, a job, the CLI) does.
"""

from __future__ import annotations

import functools
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from sqlalchemy import (
    TextClause,
    and_,
    bindparam,
    case,
    delete,
    func,
    null,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schemas.sync import Ack, Conflict
from server.db import dialect_of
from server.models import (
    SyncChecksum,
    SyncCommit,
    SyncConflict,
    SyncCounter,
    SyncMember,
    SyncMutation,
    SyncRecord,
)
from sync.merge import RecordState
from sync.storage import Outcome, ScopeItem

T = TypeVar("T")

TOUCHED = "sync_touched"
"""`session.info` key: scopes changed in this transaction (published after commit)."""

SKIP = "sync_skip"
"""`session.info` key: (model, id) of domain rows the engine stored itself (the hook skips them)."""


def mark_skip(session: Session, row: Any) -> None:
    """Tell the commit hook that the engine already stored `row`'s values with a device write."""
    session.info.setdefault(SKIP, set()).add((type(row), row.id))


_state_enc = msgspec.msgpack.Encoder()
_state_dec = msgspec.msgpack.Decoder(RecordState)
_ack_dec = msgspec.msgpack.Decoder(Ack)
_conflict_json = msgspec.json.Encoder()
_conflict_dec = msgspec.json.Decoder(Conflict)
_CHUNK = 500

Lock = Callable[[Session, str, Sequence[UUID]], None]


class SuspendedError(RuntimeError):
    """A coroutine given to `drive` tried to wait for the event loop."""


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (sync storage under the greenlet) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise SuspendedError("sync storage code must not await the event loop")


def _insert(session: Session, table: Any) -> Any:
    dialect = dialect_of(session)
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def encode_state(rec: RecordState) -> bytes:
    """A record's merge state as stored."""
    return _state_enc.encode(rec)


def decode_state(blob: bytes) -> RecordState:
    """Inverse of `encode_state`."""
    return _state_dec.decode(blob)


_BOUNDS = select(SyncCounter.horizon, SyncCounter.seq).where(SyncCounter.id == 1)
_CHECKSUMS = select(SyncChecksum.scope, SyncChecksum.checksum).where(
    SyncChecksum.scope.in_(bindparam("scopes", expanding=True))
)


@functools.cache
def _news_probe(n: int, *, counter: bool) -> TextClause:
    """The counter's row (NULL, horizon, seq) (with `counter`) and `n` index probes (scope,
    seq), each a row (scope, 0, 0) if its scope has a member after `c{i}`: a pull's first
    question in one statement, built once per `n` (a text statement: building it with the ORM
    cost more than running it)."""
    table = SyncCounter.__tablename__
    parts = [f"SELECT NULL AS scope, horizon, seq FROM {table} WHERE id = 1"] if counter else []  # noqa: S608
    parts += [
        f"SELECT scope, 0, 0 FROM (SELECT scope FROM {SyncMember.__tablename__}"  # noqa: S608
        f" WHERE scope = :s{i} AND seq > :c{i} LIMIT 1) AS q{i}"
        for i in range(n)
    ]
    return text(" UNION ALL ".join(parts))


class SqlTx:
    """One transaction's worth of sync storage over a (synchronous) `Session`."""

    def __init__(self, session: Session, lock: Lock | None = None) -> None:
        self.s = session
        self.pg = dialect_of(session) == "postgresql"
        self._lock = lock
        # Scopes each record held when loaded here: save_records needs them for evictions.
        self._scopes: dict[tuple[str, UUID], frozenset[str]] = {}

    def _touch(self, scopes: set[str]) -> None:
        self.s.info.setdefault(TOUCHED, set()).update(scopes)

    async def mutation_outcomes(self, device_id: str, seqs: Sequence[int]) -> dict[int, Outcome]:
        """Stored acks; on PostgreSQL the device is locked first so a concurrent retry of the
        same batch waits and then sees these outcomes instead of applying twice."""
        if self.pg:
            self.s.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:d))"), {"d": f"sync:{device_id}"}
            )
        out: dict[int, Outcome] = {}
        for part in _chunks(list(seqs)):
            rows = self.s.execute(
                select(SyncMutation.seq, SyncMutation.ack, SyncMutation.fingerprint).where(
                    SyncMutation.device_id == device_id, SyncMutation.seq.in_(part)
                )
            )
            for seq, blob, fp in rows:
                out[seq] = Outcome(_ack_dec.decode(blob), fp)
        return out

    async def save_mutation_outcomes(self, device_id: str, outcomes: Sequence[Outcome]) -> None:
        """Insert outcomes (a retried batch never reaches here for known seqs)."""
        if not outcomes:
            return
        now = _now_ms()
        self.s.execute(
            _insert(self.s, SyncMutation).on_conflict_do_nothing(),
            [
                {
                    "device_id": device_id,
                    "seq": o.ack.seq,
                    "ack": _state_enc.encode(o.ack),
                    "fingerprint": o.fingerprint,
                    "at_ms": now,
                }
                for o in outcomes
            ],
        )

    async def get_records(self, entity: str, ids: Sequence[UUID]) -> dict[UUID, RecordState]:
        """Records by id, locked FOR UPDATE on PostgreSQL (domain rows first, see `lock`)."""
        out: dict[UUID, RecordState] = {}
        if not ids:
            return out
        if self._lock is not None:
            self._lock(self.s, entity, ids)
        for part in _chunks(list(dict.fromkeys(ids))):
            stmt = select(SyncRecord.record_id, SyncRecord.state).where(
                SyncRecord.entity == entity, SyncRecord.record_id.in_(part)
            )
            if self.pg:
                stmt = stmt.with_for_update()
            for rid, blob in self.s.execute(stmt):
                rec = decode_state(blob)
                out[rid] = rec
                self._scopes[(entity, rid)] = rec.scopes
        for rid in ids:
            # No record, no membership (both are written, and purged, together): a new
            # record's save need not read its scopes.
            self._scopes.setdefault((entity, rid), frozenset())
        return out

    async def next_seqs(self, n: int) -> list[int]:
        """Fresh seqs from the locked counter row (held until commit)."""
        top = self.s.execute(
            update(SyncCounter)
            .where(SyncCounter.id == 1)
            .values(seq=SyncCounter.seq + n)
            .returning(SyncCounter.seq)
        ).scalar_one()
        return list(range(top - n + 1, top + 1))

    async def save_records(self, records: Sequence[RecordState], at_ms: int) -> None:
        """Upsert records, their memberships and eviction markers; log the commit time."""
        if not records:
            return
        unknown = [(r.entity, r.id) for r in records if (r.entity, r.id) not in self._scopes]
        if unknown:
            self._load_scopes(unknown)
        rec_rows = [
            {
                "entity": r.entity,
                "record_id": r.id,
                "version": r.version,
                "deleted": r.deleted,
                "state": encode_state(r),
                "changed_ms": at_ms,
            }
            for r in records
        ]
        ins = _insert(self.s, SyncRecord)
        self.s.execute(
            ins.on_conflict_do_update(
                index_elements=["entity", "record_id"],
                set_={
                    "version": ins.excluded.version,
                    "deleted": ins.excluded.deleted,
                    "state": ins.excluded.state,
                    "changed_ms": ins.excluded.changed_ms,
                },
            ),
            rec_rows,
        )
        members: list[dict[str, Any]] = []
        evictions: list[dict[str, Any]] = []
        touched: set[str] = set()
        for r in records:
            before = self._scopes.get((r.entity, r.id), frozenset())
            for scope in r.scopes:
                members.append(
                    {
                        "scope": scope,
                        "entity": r.entity,
                        "record_id": r.id,
                        "seq": r.version,
                        "since": r.version,
                        "left_ms": None,
                    }
                )
            for scope in before - r.scopes:
                evictions.append(
                    {"s": scope, "e": r.entity, "i": r.id, "v": r.version, "ms": at_ms}
                )
            touched |= r.scopes | before
            self._scopes[(r.entity, r.id)] = r.scopes
        if members:
            mins = _insert(self.s, SyncMember)
            table = SyncMember.__table__
            self.s.execute(
                mins.on_conflict_do_update(
                    index_elements=["scope", "entity", "record_id"],
                    set_={
                        "seq": mins.excluded.seq,
                        # Still a member: keep the entry seq; coming back: enters now.
                        "since": case(
                            (table.c.left_ms.is_(None), table.c.since), else_=mins.excluded.since
                        ),
                        "left_ms": None,
                    },
                ),
                members,
            )
        if evictions:
            self.s.execute(_EVICT, evictions)
        top = max(r.version for r in records)
        self.s.execute(
            _insert(self.s, SyncCommit).on_conflict_do_nothing(), [{"seq": top, "at_ms": at_ms}]
        )
        self._touch(touched)

    def _load_scopes(self, keys: Sequence[tuple[str, UUID]]) -> None:
        by_entity: dict[str, list[UUID]] = {}
        for entity, rid in keys:
            by_entity.setdefault(entity, []).append(rid)
            self._scopes.setdefault((entity, rid), frozenset())
        for entity, rids in by_entity.items():
            for part in _chunks(rids):
                rows = self.s.execute(
                    select(SyncMember.record_id, SyncMember.scope).where(
                        SyncMember.entity == entity,
                        SyncMember.record_id.in_(part),
                        SyncMember.left_ms.is_(None),
                    )
                )
                for rid, scope in rows:
                    self._scopes[(entity, rid)] = self._scopes[(entity, rid)] | {scope}

    async def xor_checksums(self, deltas: Mapping[str, int]) -> None:
        """checksum ^= delta per scope; XOR written as (a | b) - (a & b), which both backends
        evaluate (values are non-negative 63-bit)."""
        if not deltas:
            return
        ins = _insert(self.s, SyncChecksum)
        cur = SyncChecksum.__table__.c.checksum
        new = ins.excluded.checksum
        self.s.execute(
            ins.on_conflict_do_update(
                index_elements=["scope"],
                set_={"checksum": cur.op("|")(new) - cur.op("&")(new)},
            ),
            [{"scope": s, "checksum": d} for s, d in deltas.items()],
        )

    async def save_conflicts(self, conflicts: Sequence[Conflict]) -> None:
        """Insert conflicts; an id seen before is left as it is."""
        if not conflicts:
            return
        now = _now_ms()
        self.s.execute(
            _insert(self.s, SyncConflict).on_conflict_do_nothing(),
            [
                {
                    "id": c.id,
                    "entity": c.entity,
                    "record_id": c.record_id,
                    "field": c.field,
                    "resolved": c.resolved,
                    "data": _conflict_json.encode(c).decode(),
                    "created_ms": now,
                }
                for c in conflicts
            ],
        )

    async def feed_news(self, cursors: Mapping[str, int]) -> tuple[int, int, set[str]]:
        """The counter's (horizon, last seq) and the scopes with a member after their cursor,
        in one statement (`_news_probe`): the first thing every pull asks."""
        out: set[str] = set()
        connection = self.s.connection()
        bounds: tuple[int, int] | None = None
        for part in _chunks(list(cursors.items())) or [()]:
            params: dict[str, Any] = {}
            for i, (scope, cursor) in enumerate(part):
                params[f"s{i}"], params[f"c{i}"] = scope, cursor
            for scope, horizon, last in connection.execute(
                _news_probe(len(part), counter=bounds is None), params
            ):
                if scope is None:
                    bounds = int(horizon), int(last)
                else:
                    out.add(scope)
        if bounds is None:
            raise RuntimeError("the sync counter row is missing")
        return bounds[0], bounds[1], out

    async def changes_since(
        self, scope: str, cursor: int, limit: int
    ) -> tuple[list[ScopeItem], bool]:
        """Feed items after `cursor` (a snapshot at 0: live members only)."""
        stmt = _SNAPSHOT if cursor == 0 else _FEED
        params = {"scope": scope, "cursor": cursor, "limit": limit + 1}
        # Core execution: plain rows, without the ORM's per-row loading (a fifth of a
        # 5,000-item page's server time went there).
        return _page_of(self.s.connection().execute(stmt, params), limit)

    async def changes_and_checksums(
        self, asks: Sequence[tuple[str, int]], limit: int
    ) -> tuple[dict[str, tuple[list[ScopeItem], bool]], dict[str, int]]:
        """`changes_since(scope, cursor, limit)` for each (scope, cursor) of `asks` and the
        asked scopes' checksums (0 when unknown), in one statement (`_feeds`): a caught-up
        phone's pull finds a little news in several scopes."""
        out: dict[str, tuple[list[ScopeItem], bool]] = {}
        sums: dict[str, int] = {}
        connection = self.s.connection()
        for part in _chunks(list(asks)):
            params: dict[str, Any] = {"limit": limit + 1}
            for i, (scope, cursor) in enumerate(part):
                params[f"scope_{i}"], params[f"cursor_{i}"] = scope, cursor
                sums[scope] = 0
            rows: dict[str, list[Any]] = {scope: [] for scope, _ in part}
            snapshots = tuple(cursor == 0 for _, cursor in part)
            for row in connection.execute(_feeds(snapshots), params):
                if row[1] is None:  # no entity: a checksum's row, the value where seq goes
                    sums[row[0]] = int(row[3] or 0)
                else:
                    rows[row[0]].append(row[1:])
            for scope, found in rows.items():
                found.sort(key=lambda r: r[2])  # by seq: a union keeps no order
                out[scope] = _page_of(found, limit)
        return out, sums

    async def scope_checksums(self, scopes: Collection[str]) -> dict[str, int]:
        """Each scope's checksum (0 when unknown)."""
        out = dict.fromkeys(scopes, 0)
        connection = self.s.connection()
        for part in _chunks(list(out)):
            rows = connection.execute(_CHECKSUMS, {"scopes": part})
            out.update({scope: int(value or 0) for scope, value in rows})
        return out

    async def last_seq(self) -> int:
        """The highest committed seq."""
        return int(self.s.execute(select(SyncCounter.seq).where(SyncCounter.id == 1)).scalar_one())

    async def tombstone_horizon(self) -> int:
        """Seq up to which tombstones and eviction markers may be gone."""
        value = self.s.execute(select(SyncCounter.horizon).where(SyncCounter.id == 1))
        return int(value.scalar_one())

    async def purge_tombstones(self, before_ms: int) -> int:
        """Delete tombstones and eviction markers older than `before_ms`; return the horizon."""
        old = await self.tombstone_horizon()
        newest = self.s.execute(
            select(func.max(SyncCommit.seq)).where(SyncCommit.at_ms < before_ms)
        ).scalar_one_or_none()
        horizon = max(old, int(newest or 0))
        dead = select(SyncRecord.entity, SyncRecord.record_id).where(
            SyncRecord.deleted.is_(True), SyncRecord.changed_ms < before_ms
        )
        self.s.execute(
            delete(SyncMember).where(tuple_(SyncMember.entity, SyncMember.record_id).in_(dead))
        )
        self.s.execute(
            delete(SyncRecord).where(
                SyncRecord.deleted.is_(True), SyncRecord.changed_ms < before_ms
            )
        )
        self.s.execute(
            delete(SyncMember).where(
                SyncMember.left_ms.is_not(None), SyncMember.left_ms < before_ms
            )
        )
        self.s.execute(delete(SyncCommit).where(SyncCommit.at_ms < before_ms))
        self.s.execute(update(SyncCounter).where(SyncCounter.id == 1).values(horizon=horizon))
        return horizon

    async def get_conflict(
        self, conflict_id: UUID, scopes: Collection[str] | None = None
    ) -> Conflict | None:
        """One conflict (with `scopes`: only if its record is a member of one of them)."""
        stmt = select(SyncConflict.data).where(SyncConflict.id == conflict_id)
        if scopes is not None:
            stmt = stmt.where(_in_scopes(SyncConflict.entity, SyncConflict.record_id, scopes))
        data = self.s.execute(stmt).scalar_one_or_none()
        return _conflict_dec.decode(data) if data is not None else None

    async def list_conflicts(
        self,
        *,
        entity: str | None = None,
        record_id: UUID | None = None,
        resolved: bool = False,
        scopes: Collection[str] | None = None,
    ) -> list[Conflict]:
        """Matching conflicts, oldest first; with `scopes`, only those of records that are
        members of one of them (what that user's devices hold)."""
        stmt = select(SyncConflict.data).where(SyncConflict.resolved.is_(resolved))
        if scopes is not None:
            stmt = stmt.where(_in_scopes(SyncConflict.entity, SyncConflict.record_id, scopes))
        if entity is not None:
            stmt = stmt.where(SyncConflict.entity == entity)
        if record_id is not None:
            stmt = stmt.where(SyncConflict.record_id == record_id)
        stmt = stmt.order_by(SyncConflict.created_ms, SyncConflict.id)
        return [_conflict_dec.decode(d) for d in self.s.execute(stmt).scalars()]

    async def save_conflict_resolution(self, conflict: Conflict) -> None:
        """Store `resolved` and `resolution`."""
        self.s.execute(
            update(SyncConflict)
            .where(SyncConflict.id == conflict.id)
            .values(resolved=conflict.resolved, data=_conflict_json.encode(conflict).decode())
        )


def _feed_statement(snapshot: bool, suffix: str = "", limit: Any = None) -> Any:
    """A scope's feed after a cursor (`scope`, `cursor`, `limit` bound at execution, each
    name followed by `suffix`; with `suffix` each row is led by its scope). Built once: a pull
    reads several scopes, and building the statement and its cache key each time cost more
    than PostgreSQL's work (py-spy, surge hold of 29 November)."""
    m, r = SyncMember, SyncRecord
    lead = [m.scope] if suffix else []
    stmt = (
        select(*lead, m.entity, m.record_id, m.seq, m.since, m.left_ms, r.state)
        .outerjoin(r, and_(r.entity == m.entity, r.record_id == m.record_id))
        .where(m.scope == bindparam(f"scope{suffix}"), m.seq > bindparam(f"cursor{suffix}"))
        .order_by(m.seq)
        .limit(limit if limit is not None else bindparam(f"limit{suffix}"))
    )
    if snapshot:
        stmt = stmt.where(m.left_ms.is_(None), r.deleted.is_(False))
    return stmt


_FEED = _feed_statement(snapshot=False)
_SNAPSHOT = _feed_statement(snapshot=True)


@functools.lru_cache(maxsize=256)
def _feeds(snapshots: tuple[bool, ...]) -> Any:
    """Scopes' feeds after their cursors (`scope_i`, `cursor_i`; one `limit`; a snapshot for
    each True of `snapshots`, whose cursor is 0) in one statement, each row led by its scope;
    then a row (scope, NULL, NULL, checksum, NULL, NULL, NULL) for each of those scopes that
    has a checksum. Built once per pattern (a caught-up phone's is the same from pull to
    pull)."""
    limit: Any = bindparam("limit")
    parts: list[Any] = [
        select(_feed_statement(snapshot, f"_{i}", limit).subquery(f"f{i}"))
        for i, snapshot in enumerate(snapshots)
    ]
    c = SyncChecksum
    scopes: list[Any] = [bindparam(f"scope_{i}") for i in range(len(snapshots))]
    nothing = [null()] * 3
    parts.append(select(c.scope, null(), null(), c.checksum, *nothing).where(c.scope.in_(scopes)))
    return union_all(*parts)


FEED_STATES_KEPT = 2048
"""Decoded record states a process keeps for the feed (`_feed_state`): about 15 MB at most
with the surge's hazards (2.2 KB stored, a few KB decoded)."""


@functools.lru_cache(maxsize=FEED_STATES_KEPT)
def _feed_state(blob: bytes) -> RecordState:
    """A feed row's stored state, decoded once while it stays among the last `FEED_STATES_KEPT`
    read: a commit's new states are read by every phone that holds the scopes it touched (a
    unit's hundreds of phones pull the same hazard), and decoding them was a third of a pull's
    own CPU in the surge benchmark (docs/capacity.md). Keyed by the stored bytes, so a changed
    record is a new entry. The feed's readers share the object and must not change it."""
    return decode_state(blob)


def _page_of(rows: Iterable[Any], limit: int) -> tuple[list[ScopeItem], bool]:
    """Feed rows (entity, id, seq, since, left_ms, state) as at most `limit` items and whether
    there were more. The items' records are shared (`_feed_state`): read them, never change
    them."""
    items: list[ScopeItem] = []
    for entity, rid, seq, since, left_ms, blob in rows:
        if left_ms is not None or blob is None:
            items.append(ScopeItem(seq=seq, entity=entity, id=rid, record=None))
        else:
            items.append(
                ScopeItem(seq=seq, entity=entity, id=rid, record=_feed_state(blob), since=since)
            )
    if len(items) > limit:
        return items[:limit], True
    return items, False


_M: Any = SyncMember.__table__
_EVICT = (
    update(_M)
    .where(
        _M.c.scope == bindparam("s"),
        _M.c.entity == bindparam("e"),
        _M.c.record_id == bindparam("i"),
        _M.c.left_ms.is_(None),
    )
    .values(seq=bindparam("v"), left_ms=bindparam("ms"))
)


def _in_scopes(entity: Any, record_id: Any, scopes: Collection[str]) -> Any:
    """SQL: the record (entity, record_id) is a live member of one of `scopes`."""
    m = SyncMember
    return (
        select(m.record_id)
        .where(
            m.entity == entity,
            m.record_id == record_id,
            m.left_ms.is_(None),
            m.scope.in_(sorted(scopes)),
        )
        .exists()
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqlStorage:
    """`SyncStorage` over one session: `transaction()` does not commit; the owner does."""

    def __init__(self, session: Session, lock: Lock | None = None) -> None:
        self.session = session
        self.lock = lock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTx]:
        """The session's current transaction, as a `SyncTx`."""
        yield SqlTx(self.session, self.lock)
