"""The phone's local store on SQLite (standard library): records, outbox, cursors, logs.

Crash safety comes from transactions, not care: every public method that changes anything is
one SQLite transaction. A local write and its outbox entry commit together; a pulled response
and the cursors it carries commit together; acks and the outbox rows they settle commit
together. Killing the process at any point leaves the store as it was before or after the
method, never in between.

What the app sees (`get`, `all`) is the server-confirmed state (`data`) with the device's own
outbox mutations replayed on top (`local`), so an edit shows at once and survives any pull.
Outbox rows stay until the server answers; accepted ones stay (marked acked) until a complete
pull has brought the server's version, so an accepted edit never flickers away.

Tables: `records(n, entity, id, version, data, local)`, `members(rec, scope, version, stale)`
(`rec` is the record's `n`), `scopes(scope, cursor, base, checksum)`, `outbox(seq, entity, id,
op, hlc, base, fields, state, ack_version)`, `log(kind, entity, id, seq, code, message, detail,
at)`, `aside(entity, id, view, at)` (unsynced edits of records that left the device),
`meta(k, v)`. `PRAGMA user_version` holds the layout (`_LAYOUT`); older files are upgraded
when opened.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from schemas.merge import REGISTRY, Registry
from schemas.sync import (
    DEVICE_REUSED,
    Ack,
    AckStatus,
    Mutation,
    Op,
    PullResponse,
    Reason,
    Refusal,
    ScopePage,
)
from sync.checksum import record_hash
from sync.hlc import HLC, Clock, SystemClock
from sync.merge import apply_local, validate
from sync.replica import Snapshot

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
_NULL = b"null"
_CHUNK = 500  # bound on SQL variables per IN (...) query

# The store's layout version (`PRAGMA user_version`); `ClientStore._migrate` upgrades older
# files in place. Layout 1: a record has a number `n` (its rowid, given in arrival order) and a
# membership is keyed by (record number, scope) in a WITHOUT ROWID table with only a partial
# index on stale rows. Pulled records get increasing numbers, so their memberships are appended
# to one B-tree; layout 0 keyed them by (scope, entity, id) with an index on the random UUID,
# three B-tree inserts at random places per membership, the largest cost of an initial pull.
# What asks by scope alone (dropping or resetting a scope, a resync) scans the table; rare.
_LAYOUT = 1

_TABLES = (
    """CREATE TABLE IF NOT EXISTS records(
    n INTEGER PRIMARY KEY, entity TEXT NOT NULL, id BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 0, data BLOB, local BLOB, UNIQUE(entity, id))""",
    """CREATE TABLE IF NOT EXISTS members(
    rec INTEGER NOT NULL, scope TEXT NOT NULL, version INTEGER NOT NULL,
    stale INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(rec, scope)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS members_stale ON members(scope) WHERE stale=1",
)
_SCHEMA = (
    ";\n".join(_TABLES)
    + """;
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scopes(
    scope TEXT PRIMARY KEY, cursor INTEGER NOT NULL, base INTEGER NOT NULL DEFAULT 0,
    checksum INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY, entity TEXT NOT NULL, id BLOB NOT NULL, op TEXT NOT NULL,
    hlc INTEGER NOT NULL, base INTEGER NOT NULL, fields BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', ack_version INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_by_record ON outbox(id);
CREATE TABLE IF NOT EXISTS log(
    n INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, entity TEXT, id BLOB,
    seq INTEGER, code TEXT, message TEXT, detail BLOB, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS aside(
    entity TEXT NOT NULL, id BLOB NOT NULL, view BLOB, at INTEGER NOT NULL,
    PRIMARY KEY(entity, id)) WITHOUT ROWID;
"""
)


class LocalRefusalError(ValueError):
    """A local write that the server would refuse whatever its state (caught before queuing)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.code}: {refusal.message} {refusal.field}".strip())
        self.refusal = refusal


@dataclass(slots=True)
class LogEntry:
    """A refusal, lost merge, eviction with kept edits, resync or checksum mismatch."""

    kind: str
    entity: str | None
    id: UUID | None
    seq: int | None
    code: str | None
    message: str | None
    detail: Any
    at: int


@dataclass(slots=True)
class AckReport:
    """What `apply_acks` did."""

    accepted: int = 0
    duplicate: int = 0
    refused: list[tuple[Mutation, Refusal]] = field(default_factory=list)
    lost: list[tuple[Mutation, list[str]]] = field(default_factory=list)
    # The device id the store took because the server saw the old one reuse a seq (or None).
    new_device_id: str | None = None


@dataclass(slots=True)
class PullReport:
    """What `apply_pull` did, per scope."""

    changes: dict[str, int] = field(default_factory=dict)
    evictions: dict[str, int] = field(default_factory=dict)
    resynced: list[str] = field(default_factory=list)
    checksum_mismatch: list[str] = field(default_factory=list)
    kept_aside: int = 0


FaultHook = Callable[[str], None]


class ClientStore:
    """The device's SQLite store. One instance per database file; not thread-safe.

    `fault` (tests only) is called with a step name between the steps of each transaction, so
    tests can raise there (or kill the process) and check the store is still consistent.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        registry: Registry = REGISTRY,
        clock: Clock | None = None,
        device_id: str | None = None,
        fault: FaultHook | None = None,
    ) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable across a process kill (what phones do to apps); only
        # an OS crash may lose the last commits, and it never corrupts.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # `records` is a rowid table (rows appended in arrival order, a small index on the
        # random UUID key) and the page cache holds that index: a pull page of 5,000 new
        # records then dirties a few hundred pages instead of one per record. `members` is
        # clustered on its key with no other index on the hot path (see `_LAYOUT`).
        self._db.execute("PRAGMA cache_size=-16000")
        self._migrate()
        self._db.executescript(_SCHEMA)
        self.registry = registry
        self._fault = fault
        self._clock = clock if clock is not None else SystemClock()
        with self._tx():
            stored = self._meta("device_id")
            if stored is None:
                stored = device_id or str(uuid.uuid4())
                self._set_meta("device_id", stored)
                self._set_meta("next_seq", 1)
                self._set_meta("hlc", 0)
        self.device_id: str = str(stored)
        self.hlc = HLC(self._clock, int(self._meta("hlc") or 0))

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _migrate(self) -> None:
        """Bring a store an older app wrote to the current layout, in one transaction."""
        with self._tx():
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= _LAYOUT:
                return
            if self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='members'"
            ).fetchone():
                self._layout_0_to_1()
            self._db.execute(f"PRAGMA user_version={_LAYOUT}")

    def _layout_0_to_1(self) -> None:
        # Layout 0: records(entity, id, ...) keyed by (entity, id) and members(scope, entity,
        # id, version, stale) with a rowid and an index on id. Indexes others made on records
        # (the app's read models) are made again on the new table.
        made = [
            sql
            for (sql,) in self._db.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='records'"
                " AND sql IS NOT NULL"
            )
        ]
        self._db.execute("DROP INDEX IF EXISTS members_by_record")
        self._db.execute("ALTER TABLE records RENAME TO records_0")
        self._db.execute("ALTER TABLE members RENAME TO members_0")
        for ddl in _TABLES:
            self._db.execute(ddl)
        self._db.execute(
            "INSERT INTO records(n, entity, id, version, data, local)"
            " SELECT rowid, entity, id, version, data, local FROM records_0 ORDER BY rowid"
        )
        self._db.execute(
            "INSERT INTO members(rec, scope, version, stale)"
            " SELECT r.n, m.scope, m.version, m.stale FROM members_0 m"
            " JOIN records r ON r.entity=m.entity AND r.id=m.id ORDER BY 1, 2"
        )
        self._db.execute("DROP TABLE members_0")
        self._db.execute("DROP TABLE records_0")
        for sql in made:
            self._db.execute(sql)

    # -- plumbing ------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _step(self, name: str) -> None:
        if self._fault is not None:
            self._fault(name)

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)", (key, value))

    def _now(self) -> int:
        return self._clock.now_ms()

    def _log(
        self,
        kind: str,
        entity: str | None = None,
        rid: bytes | None = None,
        *,
        seq: int | None = None,
        code: str | None = None,
        message: str | None = None,
        detail: Any = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO log(kind, entity, id, seq, code, message, detail, at)"
            " VALUES(?,?,?,?,?,?,?,?)",
            (kind, entity, rid, seq, code, message, _enc.encode(detail), self._now()),
        )

    # -- reading -------------------------------------------------------------------------------
    def get(self, entity: str, record_id: UUID) -> dict[str, Any] | None:
        """The record as the app should show it (own pending edits included), or None."""
        row = self._db.execute(
            "SELECT coalesce(local, data) FROM records WHERE entity=? AND id=?",
            (entity, record_id.bytes),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        value: dict[str, Any] | None = _dec.decode(row[0])
        return value

    def all(self, entity: str) -> dict[UUID, dict[str, Any]]:
        """Every visible record of `entity`."""
        out: dict[UUID, dict[str, Any]] = {}
        for rid, blob in self._db.execute(
            "SELECT id, coalesce(local, data) FROM records WHERE entity=?", (entity,)
        ):
            if blob is not None and blob != _NULL:
                out[UUID(bytes=rid)] = _dec.decode(blob)
        return out

    def confirmed(self, entity: str, record_id: UUID) -> tuple[int, dict[str, Any]] | None:
        """Server-confirmed (version, values) of a record, without local edits."""
        row = self._db.execute(
            "SELECT version, data FROM records WHERE entity=? AND id=?",
            (entity, record_id.bytes),
        ).fetchone()
        if row is None or row[1] is None:
            return None
        return row[0], _dec.decode(row[1])

    def snapshot(self, scope: str) -> Snapshot:
        """Server-confirmed records the device holds for `scope` (for checks and tests)."""
        out: Snapshot = {}
        for entity, rid, version, data in self._db.execute(
            "SELECT r.entity, r.id, m.version, r.data FROM members m JOIN records r"
            " ON r.n=m.rec WHERE m.scope=? AND r.data IS NOT NULL",
            (scope,),
        ):
            out[(entity, UUID(bytes=rid))] = (version, _dec.decode(data))
        return out

    def cursors(self) -> dict[str, int]:
        """Last sequence held per scope."""
        return dict(self._db.execute("SELECT scope, cursor FROM scopes").fetchall())

    def bases(self) -> dict[str, int]:
        """Checkpoint cursor of each scope whose paginated pull is not complete yet."""
        return dict(
            self._db.execute("SELECT scope, base FROM scopes WHERE base != cursor").fetchall()
        )

    def checksum(self, scope: str) -> int:
        """The device's checksum of `scope` (XOR of record hashes of its members)."""
        row = self._db.execute("SELECT checksum FROM scopes WHERE scope=?", (scope,)).fetchone()
        return int(row[0]) if row else 0

    def pending(self, limit: int = 1 << 30) -> list[Mutation]:
        """Mutations not yet answered by the server, oldest first."""
        return [
            self._mutation(row)
            for row in self._db.execute(
                "SELECT seq, entity, id, op, hlc, base, fields FROM outbox"
                " WHERE state='pending' ORDER BY seq LIMIT ?",
                (limit,),
            )
        ]

    def pending_count(self) -> int:
        """How many mutations wait for the server."""
        return int(
            self._db.execute("SELECT count(*) FROM outbox WHERE state='pending'").fetchone()[0]
        )

    def log_entries(self, kind: str | None = None) -> list[LogEntry]:
        """The log (refusals, lost merges, kept-aside edits, resyncs), oldest first."""
        sql = "SELECT kind, entity, id, seq, code, message, detail, at FROM log"
        rows = self._db.execute(
            sql + (" WHERE kind=?" if kind else "") + " ORDER BY n", (kind,) if kind else ()
        )
        return [
            LogEntry(k, e, UUID(bytes=i) if i else None, s, c, m, _dec.decode(d), at)
            for k, e, i, s, c, m, d, at in rows
        ]

    def aside(self) -> dict[tuple[str, UUID], dict[str, Any] | None]:
        """Local views of records that left the device with unsynced edits."""
        return {
            (e, UUID(bytes=i)): _dec.decode(v)
            for e, i, v in self._db.execute("SELECT entity, id, view FROM aside")
        }

    @staticmethod
    def _mutation(row: tuple[Any, ...]) -> Mutation:
        seq, entity, rid, op, hlc, base, fields = row
        return Mutation(
            seq=seq,
            entity=entity,
            id=UUID(bytes=rid),
            hlc=hlc,
            op=Op(op),
            base=base,
            fields=_dec.decode(fields),
        )

    # -- local writes --------------------------------------------------------------------------
    def write(
        self,
        entity: str,
        record_id: UUID,
        fields: dict[str, Any] | None = None,
        *,
        op: Op = Op.UPDATE,
    ) -> Mutation:
        """Record a local write and queue it, in one transaction; returns the mutation.

        Raises `LocalRefusalError` for writes no server state could accept (unknown entity or
        field, server-owned field, read-only entity, malformed value), before queuing anything.
        For an append-only field pass only the items to add.
        """
        fields = dict(fields or {})
        spec = self.registry.get(entity)
        if spec is None:
            raise LocalRefusalError(Refusal(code=Reason.UNKNOWN_ENTITY, message=entity))
        refusal = validate(spec, op, fields)
        if refusal is not None:
            raise LocalRefusalError(refusal)
        rid = record_id.bytes
        with self._tx():
            seq = int(self._meta("next_seq"))
            hlc = self.hlc.now()
            row = self._db.execute(
                "SELECT version FROM records WHERE entity=? AND id=?", (entity, rid)
            ).fetchone()
            base = row[0] if row else 0
            self._db.execute(
                "INSERT INTO outbox(seq, entity, id, op, hlc, base, fields) VALUES(?,?,?,?,?,?,?)",
                (seq, entity, rid, op.value, hlc, base, _enc.encode(fields)),
            )
            self._step("write:queued")
            self._recompute(entity, rid)
            self._set_meta("next_seq", seq + 1)
            self._set_meta("hlc", hlc)
        return Mutation(
            seq=seq, entity=entity, id=record_id, hlc=hlc, op=op, base=base, fields=fields
        )

    def _recompute(self, entity: str, rid: bytes) -> None:
        """Rebuild a record's local view: confirmed data + its outbox rows in seq order."""
        spec = self.registry.get(entity)
        row = self._db.execute(
            "SELECT data FROM records WHERE entity=? AND id=?", (entity, rid)
        ).fetchone()
        data = _dec.decode(row[0]) if row and row[0] is not None else None
        ops = self._db.execute(
            "SELECT op, fields FROM outbox WHERE id=? AND entity=? ORDER BY seq", (rid, entity)
        ).fetchall()
        if not ops:
            if row is not None and data is None:
                # Created here, never confirmed, nothing left to push: it is gone.
                self._db.execute("DELETE FROM records WHERE entity=? AND id=?", (entity, rid))
            elif row is not None:
                self._db.execute(
                    "UPDATE records SET local=NULL WHERE entity=? AND id=?", (entity, rid)
                )
            return
        if row is None and not any(op == Op.CREATE.value for op, _ in ops):
            return  # not on the device (evicted or never pulled): edits wait in the outbox
        view: dict[str, Any] | None = data
        for op, blob in ops:
            view = apply_local(spec, view, Op(op), _dec.decode(blob))
        if row is None:
            self._db.execute(
                "INSERT INTO records(entity, id, version, data, local) VALUES(?,?,0,NULL,?)",
                (entity, rid, _enc.encode(view)),
            )
        elif view is None and data is None:
            self._db.execute("DELETE FROM records WHERE entity=? AND id=?", (entity, rid))
        else:
            self._db.execute(
                "UPDATE records SET local=? WHERE entity=? AND id=?",
                (_enc.encode(view), entity, rid),
            )

    # -- server answers ------------------------------------------------------------------------
    def apply_acks(self, mutations: Sequence[Mutation], acks: Sequence[Ack], hlc: int) -> AckReport:
        """Settle pushed mutations in one transaction.

        Accepted and duplicate ones are marked acked (they leave the outbox after the next
        complete pull); refused ones leave the outbox at once, the record is shown as the
        server has it again, and the refusal is logged. A refusal with rule `device_reused`
        (the server holds another mutation under this device id and seq: a reinstalled app)
        keeps the mutation pending and gives the store a new device id, so the next push
        lands it; nothing is dropped.
        """
        by_seq = {m.seq: m for m in mutations}
        report = AckReport()
        with self._tx():
            touched: set[tuple[str, bytes]] = set()
            for ack in acks:
                m = by_seq.get(ack.seq)
                if m is None:
                    continue
                rid = m.id.bytes
                refusal_rule = ack.refusal.rule if ack.refusal is not None else ""
                if ack.status is AckStatus.REFUSED and refusal_rule == DEVICE_REUSED:
                    if report.new_device_id is None:
                        report.new_device_id = str(uuid.uuid4())
                        self._set_meta("device_id", report.new_device_id)
                        self._log("device_renewed", message=report.new_device_id, detail=None)
                elif ack.status is AckStatus.REFUSED:
                    refusal = ack.refusal or Refusal(code=Reason.RULE)
                    self._db.execute("DELETE FROM outbox WHERE seq=?", (m.seq,))
                    self._log(
                        "refused",
                        m.entity,
                        rid,
                        seq=m.seq,
                        code=str(refusal.code),
                        message=refusal.message,
                        detail={
                            "op": m.op.value,
                            "fields": m.fields,
                            "field": refusal.field,
                            "rule": refusal.rule,
                        },
                    )
                    report.refused.append((m, refusal))
                    touched.add((m.entity, rid))
                else:
                    self._db.execute(
                        "UPDATE outbox SET state='acked', ack_version=? WHERE seq=?",
                        (ack.version, m.seq),
                    )
                    if ack.status is AckStatus.DUPLICATE:
                        report.duplicate += 1
                    else:
                        report.accepted += 1
                    if ack.lost:
                        self._log(
                            "lost",
                            m.entity,
                            rid,
                            seq=m.seq,
                            detail={f: m.fields.get(f) for f in ack.lost},
                        )
                        report.lost.append((m, list(ack.lost)))
                self._step("acks:one")
            for entity, rid in touched:
                self._recompute(entity, rid)
            self.hlc.update(hlc)
            self._set_meta("hlc", self.hlc.last)
        if report.new_device_id is not None:
            self.device_id = report.new_device_id
        return report

    def apply_pull(self, resp: PullResponse) -> PullReport:
        """Apply a whole pull answer and its cursors in one transaction."""
        report = PullReport()
        with self._tx():
            for scope in resp.dropped:
                self._drop_scope(scope, report)
                self._step("pull:dropped")
            for page in resp.scopes:
                self._apply_page(page, report)
                self._step("pull:page")
            self.hlc.update(resp.hlc)
            self._set_meta("hlc", self.hlc.last)
        return report

    def finish_pull(self) -> int:
        """After a complete pull: drop acked outbox rows and rebuild the records they touched.

        Every accepted mutation is now either in the confirmed data or (the record is out of
        this device's scopes) not meant to be here. Returns the number of rows dropped.
        """
        with self._tx():
            rows = self._db.execute(
                "SELECT DISTINCT entity, id FROM outbox WHERE state='acked'"
            ).fetchall()
            self._db.execute("DELETE FROM outbox WHERE state='acked'")
            self._step("finish:deleted")
            for entity, rid in rows:
                self._recompute(entity, rid)
        return len(rows)

    def _reset(self, scope: str) -> None:
        # The stored checksum may be what went wrong: recompute it from the members, which
        # the re-fetch then refreshes (or drops, if the server no longer has them).
        checksum = 0
        for entity, rid, version in self._db.execute(
            "SELECT r.entity, r.id, m.version FROM members m JOIN records r ON r.n=m.rec"
            " WHERE m.scope=?",
            (scope,),
        ):
            checksum ^= record_hash(entity, UUID(bytes=rid), version)
        self._db.execute("UPDATE members SET stale=1 WHERE scope=?", (scope,))
        self._db.execute(
            "UPDATE scopes SET cursor=0, base=0, checksum=? WHERE scope=?", (checksum, scope)
        )

    def _drop_scope(self, scope: str, report: PullReport) -> None:
        rows = self._db.execute(
            "SELECT r.entity, r.id FROM members m JOIN records r ON r.n=m.rec WHERE m.scope=?",
            (scope,),
        ).fetchall()
        self._db.execute("DELETE FROM members WHERE scope=?", (scope,))
        self._db.execute("DELETE FROM scopes WHERE scope=?", (scope,))
        for entity, rid in rows:
            self._remove_if_orphan(entity, rid, report)
        report.evictions[scope] = report.evictions.get(scope, 0) + len(rows)

    def _remove_if_orphan(self, entity: str, rid: bytes, report: PullReport) -> None:
        """Remove a record no scope holds any more, keeping its unsynced edits aside."""
        if self._db.execute(
            "SELECT 1 FROM members WHERE rec=(SELECT n FROM records WHERE entity=? AND id=?)"
            " LIMIT 1",
            (entity, rid),
        ).fetchone():
            return
        self._remove_record(entity, rid, report, reason="evicted")

    def _remove_record(self, entity: str, rid: bytes, report: PullReport, reason: str) -> None:
        pending = self._db.execute(
            "SELECT count(*) FROM outbox WHERE id=? AND entity=? AND state='pending'",
            (rid, entity),
        ).fetchone()[0]
        if pending:
            row = self._db.execute(
                "SELECT coalesce(local, data) FROM records WHERE entity=? AND id=?",
                (entity, rid),
            ).fetchone()
            view = row[0] if row else None
            self._db.execute(
                "INSERT OR REPLACE INTO aside(entity, id, view, at) VALUES(?,?,?,?)",
                (entity, rid, view if view is not None else _NULL, self._now()),
            )
            self._log("kept_aside", entity, rid, code=reason, detail={"pending": pending})
            report.kept_aside += 1
        self._db.execute("DELETE FROM records WHERE entity=? AND id=?", (entity, rid))

    def _apply_page(self, page: ScopePage, report: PullReport) -> None:
        scope = page.scope
        row = self._db.execute("SELECT checksum FROM scopes WHERE scope=?", (scope,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO scopes(scope, cursor, checksum) VALUES(?,0,0)", (scope,))
            checksum = 0
        else:
            checksum = int(row[0])
        if page.resync:
            # Keep showing what we have until the snapshot is complete; then drop what it
            # did not contain. Outbox rows are untouched: they are replayed, never discarded.
            self._db.execute("UPDATE members SET stale=1 WHERE scope=?", (scope,))
            self._db.execute("UPDATE scopes SET base=0 WHERE scope=?", (scope,))
            report.resynced.append(scope)
            self._log("resync", code=scope)

        checksum = self._apply_changes(page, checksum, report)
        for ref in page.evictions:
            checksum = self._forget(ref.entity, ref.id.bytes, scope, checksum, report)
        report.changes[scope] = report.changes.get(scope, 0) + len(page.changes)
        if page.evictions:
            report.evictions[scope] = report.evictions.get(scope, 0) + len(page.evictions)
        if not page.has_more:
            ok, checksum = self._checkpoint(page, checksum, report)
            if not ok:
                return
        # The base moves only at a checkpoint: until then later pages must still send every
        # field changed after it (see PullRequest.bases).
        self._db.execute(
            "UPDATE scopes SET cursor=?1, checksum=?2,"
            " base = CASE WHEN ?3 THEN base ELSE ?1 END WHERE scope=?4",
            (page.cursor, checksum, page.has_more, scope),
        )

    def _checkpoint(self, page: ScopePage, checksum: int, report: PullReport) -> tuple[bool, int]:
        """End of a scope's feed: drop resync leftovers, verify the checksum.

        Returns (False, checksum) and schedules a re-fetch of the scope on a mismatch.
        """
        scope = page.scope
        for entity, rid in self._db.execute(
            "SELECT r.entity, r.id FROM members m JOIN records r ON r.n=m.rec"
            " WHERE m.scope=? AND m.stale=1",
            (scope,),
        ).fetchall():
            checksum = self._forget(entity, rid, scope, checksum, report)
        if page.checksum is None or page.checksum == checksum:
            return True, checksum
        self._log(
            "checksum_mismatch", code=scope, detail={"server": page.checksum, "device": checksum}
        )
        report.checksum_mismatch.append(scope)
        self._reset(scope)
        return False, checksum

    def _apply_changes(self, page: ScopePage, checksum: int, report: PullReport) -> int:
        """Upsert a page's records and memberships in bulk; return the scope checksum."""
        scope, changes = page.scope, page.changes
        keys = [(c.entity, c.id.bytes) for c in changes]
        by_entity: dict[str, list[bytes]] = {}
        for entity, rid in keys:
            by_entity.setdefault(entity, []).append(rid)
        held: list[tuple[Any, ...]] = []
        queued: list[tuple[Any, ...]] = []
        # An empty outbox (every initial pull, most pulls) needs no per-record probe of it.
        any_queued = self._db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None
        # Every lookup names the entity so it uses the (entity, id) key; one probe per change
        # finds the record and its membership of this scope.
        for entity, ids in by_entity.items():
            held += self._load(
                "SELECT r.entity, r.id, r.n, r.version, r.data, m.version FROM records r"
                " LEFT JOIN members m ON m.rec=r.n AND m.scope=?"
                " WHERE r.entity=? AND r.id IN ({})",
                ids,
                scope,
                entity,
            )
            if any_queued:
                queued += self._load(
                    "SELECT DISTINCT entity, id FROM outbox WHERE entity=? AND id IN ({})",
                    ids,
                    entity,
                )
        outbox_ids = {(e, i) for e, i in queued}
        mem_version = {(e, i): m for e, i, _, _, _, m in held if m is not None}
        rec_rows = {(e, i): (v, d) for e, i, _, v, d, _ in held}
        numbers = {(e, i): n for e, i, n, _, _, _ in held}
        new_keys: list[tuple[str, bytes]] = []
        mem_upserts: dict[tuple[str, bytes], int] = {}
        deletes: list[tuple[str, bytes]] = []
        recompute: list[tuple[str, bytes]] = []
        for c, key in zip(changes, keys, strict=True):
            if c.deleted:
                deletes.append(key)
                continue
            old = mem_version.get(key)
            if old is not None:
                checksum ^= record_hash(c.entity, c.id, old)
            checksum ^= record_hash(c.entity, c.id, c.version)
            mem_version[key] = c.version
            mem_upserts[key] = c.version
            prev = rec_rows.get(key)
            # A change carries only the fields changed after the cursor (all of them when the
            # record is new to the scope), so it merges into what the device holds.
            if prev is not None and prev[1] is not None:
                values = {**_dec.decode(prev[1]), **c.fields}
            else:
                values = c.fields
            if prev is None and key not in numbers:
                new_keys.append(key)
                numbers[key] = 0
            version = max(c.version, prev[0]) if prev is not None else c.version
            rec_rows[key] = (version, _enc.encode(values))
            if key in outbox_ids:
                recompute.append(key)
        # New records are numbered in key order after the highest number held: both of their
        # B-trees (records by number, the (entity, id) key) and the memberships (by number)
        # are then walked forwards once, mostly appended to, instead of being hit at 5,000
        # random places. A record twice in a page keeps its last state.
        new_keys.sort()
        first = self._db.execute("SELECT coalesce(max(n), 0) + 1 FROM records").fetchone()[0]
        for k, key in enumerate(new_keys):
            numbers[key] = first + k
        fresh = set(new_keys)
        self._db.executemany(
            "UPDATE records SET version=?, data=? WHERE n=?",
            [(*rec_rows[k], numbers[k]) for k in mem_upserts if k not in fresh],
        )
        self._db.executemany(
            "INSERT INTO records(n, entity, id, version, data) VALUES(?,?,?,?,?)",
            [(numbers[k], *k, *rec_rows[k]) for k in new_keys],
        )
        self._db.executemany(
            "INSERT INTO members(rec, scope, version, stale) VALUES(?,?,?,0)"
            " ON CONFLICT(rec, scope) DO UPDATE SET version=excluded.version, stale=0",
            sorted((numbers[k], scope, v) for k, v in mem_upserts.items()),
        )
        self._step("pull:records")
        for entity, rid in recompute:
            self._recompute(entity, rid)
        for entity, rid in deletes:
            checksum = self._forget(entity, rid, scope, checksum, report, tombstone=True)
        return checksum

    def _forget(
        self,
        entity: str,
        rid: bytes,
        scope: str,
        checksum: int,
        report: PullReport,
        *,
        tombstone: bool = False,
    ) -> int:
        """Remove a record from `scope` (tombstone: from every scope); return the checksum."""
        uid = UUID(bytes=rid)
        rows = self._db.execute(
            "SELECT m.rec, m.scope, m.version FROM members m"
            " JOIN records r ON r.n=m.rec WHERE r.entity=? AND r.id=?",
            (entity, rid),
        ).fetchall()
        for n, s, version in rows:
            if s == scope:
                checksum ^= record_hash(entity, uid, version)
                self._db.execute("DELETE FROM members WHERE rec=? AND scope=?", (n, s))
            elif tombstone:
                # The record is gone from every scope on the server too; keep each scope's
                # checksum in step so it matches once that scope's cursor passes the delete.
                self._db.execute(
                    # SQLite has no XOR operator: a ^ b == (a | b) - (a & b).
                    "UPDATE scopes SET checksum = (checksum | ?1) - (checksum & ?1) WHERE scope=?2",
                    (record_hash(entity, uid, version), s),
                )
                self._db.execute("DELETE FROM members WHERE rec=? AND scope=?", (n, s))
        if tombstone:
            self._remove_record(entity, rid, report, reason="deleted")
        else:
            self._remove_if_orphan(entity, rid, report)
        return checksum

    def _load(self, sql: str, ids: Sequence[bytes], *params: Any) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            q = sql.format(",".join("?" * len(chunk)))
            out.extend(self._db.execute(q, (*params, *chunk)).fetchall())
        return out
