"""In-memory `SyncStorage`: the reference implementation of the contract in `sync.storage`.

Used by unit tests, the stateful sync test and the benchmarks. It survives a `SyncServer`
being re-created (a "server restart") because it is a separate object. Transactions are
serialised by one lock, buffer their writes and apply them all at commit, so an exception
anywhere inside a transaction leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from schemas.sync import Ack, Conflict
from sync.merge import RecordState
from sync.storage import Outcome, ScopeItem

Key = tuple[str, UUID]


@dataclass(slots=True)
class _Membership:
    since: int
    left: int | None = None
    left_ms: int = 0


class _State:
    def __init__(self) -> None:
        self.records: dict[Key, RecordState] = {}
        self.deleted_ms: dict[Key, int] = {}
        self.outcomes: dict[tuple[str, int], Outcome] = {}
        self.members: dict[str, dict[Key, _Membership]] = {}
        # Per scope, (seq, key) in ascending seq; an entry is current only while the record's
        # version (or its eviction marker) still equals seq. Stale entries are skipped on read.
        self.feed: dict[str, list[tuple[int, Key]]] = {}
        self.checksums: dict[str, int] = {}
        self.conflicts: dict[UUID, Conflict] = {}
        self.seq = 0
        self.committed_seq = 0
        self.horizon = 0
        self.seq_ms: list[tuple[int, int]] = []  # (ms, seq) ascending, for purge by age


class MemoryTx:
    """One transaction over `MemoryStorage` (see `sync.storage.SyncTx` for the promises)."""

    def __init__(self, state: _State) -> None:
        self._s = state
        self._writes: list[Callable[[], None]] = []

    # -- writes are buffered -------------------------------------------------------------
    def _commit(self) -> None:
        for write in self._writes:
            write()

    async def mutation_outcomes(self, device_id: str, seqs: Sequence[int]) -> dict[int, Outcome]:
        """Stored outcomes for already-processed (device, seq)."""
        out = {}
        for seq in seqs:
            outcome = self._s.outcomes.get((device_id, seq))
            if outcome is not None:
                out[seq] = outcome
        return out

    async def save_mutation_outcomes(self, device_id: str, outcomes: Sequence[Outcome]) -> None:
        """Remember outcomes at commit."""
        outcomes = list(outcomes)

        def write() -> None:
            for outcome in outcomes:
                self._s.outcomes[(device_id, outcome.ack.seq)] = outcome

        self._writes.append(write)

    async def get_records(self, entity: str, ids: Sequence[UUID]) -> dict[UUID, RecordState]:
        """Committed records by id (the global lock stands in for row locks)."""
        recs = self._s.records
        out = {}
        for rid in ids:
            rec = recs.get((entity, rid))
            if rec is not None:
                out[rid] = rec
        return out

    async def next_seqs(self, n: int) -> list[int]:
        """Fresh seqs; the lock serialises transactions, so seq order is commit order."""
        start = self._s.seq + 1
        self._s.seq += n
        return list(range(start, start + n))

    async def save_records(self, records: Sequence[RecordState], at_ms: int) -> None:
        """Upsert records and their memberships at commit."""
        ordered = sorted(records, key=lambda r: r.version)

        def write() -> None:
            s = self._s
            touched: set[str] = set()
            for rec in ordered:
                key = (rec.entity, rec.id)
                old = s.records.get(key)
                before = old.scopes if old is not None else frozenset()
                s.records[key] = rec
                if rec.deleted:
                    s.deleted_ms.setdefault(key, at_ms)
                else:
                    s.deleted_ms.pop(key, None)
                for scope in rec.scopes:
                    members = s.members.setdefault(scope, {})
                    m = members.get(key)
                    if m is None or m.left is not None:
                        members[key] = _Membership(since=rec.version)
                    s.feed.setdefault(scope, []).append((rec.version, key))
                for scope in before - rec.scopes:
                    m = s.members[scope][key]
                    m.left, m.left_ms = rec.version, at_ms
                    s.feed[scope].append((rec.version, key))
                touched.update(rec.scopes, before)
                s.committed_seq = max(s.committed_seq, rec.version)
                s.seq_ms.append((at_ms, rec.version))
            for scope in touched:
                self._compact(scope)

        self._writes.append(write)

    def _compact(self, scope: str) -> None:
        # Rewritten records leave stale feed entries behind; drop them once they dominate.
        s = self._s
        feed, members = s.feed.get(scope, []), s.members.get(scope, {})
        if len(feed) <= 2 * len(members) + 64:
            return
        live = []
        for seq, key in feed:
            m = members.get(key)
            if m is None:
                continue
            current = m.left if m.left is not None else s.records[key].version
            if current == seq:
                live.append((seq, key))
        s.feed[scope] = live

    async def xor_checksums(self, deltas: Mapping[str, int]) -> None:
        """XOR deltas into scope checksums at commit."""
        deltas = dict(deltas)

        def write() -> None:
            for scope, delta in deltas.items():
                self._s.checksums[scope] = self._s.checksums.get(scope, 0) ^ delta

        self._writes.append(write)

    async def save_conflicts(self, conflicts: Sequence[Conflict]) -> None:
        """Insert conflicts (first write of an id wins) at commit."""
        conflicts = list(conflicts)

        def write() -> None:
            for c in conflicts:
                self._s.conflicts.setdefault(c.id, c)

        self._writes.append(write)

    # -- reads ------------------------------------------------------------------------------
    async def _changed_scopes(self, cursors: Mapping[str, int]) -> set[str]:
        return {s for s, c in cursors.items() if (await self.changes_since(s, c, 1))[0]}

    async def changes_and_checksums(
        self, asks: Sequence[tuple[str, int]], limit: int
    ) -> tuple[dict[str, tuple[list[ScopeItem], bool]], dict[str, int]]:
        """Each ask's `changes_since` and the asked scopes' checksums (see the Protocol)."""
        sums = await self.scope_checksums([scope for scope, _ in asks])
        pages = {scope: await self.changes_since(scope, cursor, limit) for scope, cursor in asks}
        return pages, sums

    async def changes_since(
        self, scope: str, cursor: int, limit: int
    ) -> tuple[list[ScopeItem], bool]:
        """Feed items of `scope` after `cursor` (see the Protocol)."""
        s = self._s
        feed = s.feed.get(scope, [])
        members = s.members.get(scope, {})
        snapshot = cursor == 0
        items: list[ScopeItem] = []
        start = bisect.bisect_right(feed, (cursor, _MAX_KEY))
        for seq, key in feed[start:]:
            m = members.get(key)
            if m is None:
                continue  # purged
            if m.left is not None:
                if m.left != seq or snapshot:
                    continue
                item = ScopeItem(seq=seq, entity=key[0], id=key[1], record=None)
            else:
                rec = s.records[key]
                if rec.version != seq or (snapshot and rec.deleted):
                    continue
                item = ScopeItem(seq=seq, entity=key[0], id=key[1], record=rec, since=m.since)
            if len(items) == limit:
                return items, True
            items.append(item)
        return items, False

    async def scope_checksums(self, scopes: Collection[str]) -> dict[str, int]:
        """Current checksum of each scope."""
        return {scope: self._s.checksums.get(scope, 0) for scope in scopes}

    async def last_seq(self) -> int:
        """Highest committed seq."""
        return self._s.committed_seq

    async def tombstone_horizon(self) -> int:
        """Seq up to which tombstones may be gone."""
        return self._s.horizon

    async def feed_news(self, cursors: Mapping[str, int]) -> tuple[int, int, set[str]]:
        """Bounds and changed scopes (see the Protocol)."""
        return self._s.horizon, self._s.committed_seq, await self._changed_scopes(cursors)

    async def purge_tombstones(self, before_ms: int) -> int:
        """Drop old tombstones and eviction markers; return the new horizon."""
        s = self._s
        idx = bisect.bisect_left(s.seq_ms, (before_ms, -1))
        horizon = max(s.horizon, s.seq_ms[idx - 1][1] if idx > 0 else 0)

        def write() -> None:
            for key, ms in list(s.deleted_ms.items()):
                if ms < before_ms:
                    rec = s.records.pop(key)
                    del s.deleted_ms[key]
                    for scope in rec.scopes:
                        s.members.get(scope, {}).pop(key, None)
            for members in s.members.values():
                for key, m in list(members.items()):
                    if m.left is not None and m.left_ms < before_ms:
                        del members[key]
            for scope, feed in s.feed.items():
                members = s.members.get(scope, {})
                s.feed[scope] = [(q, k) for q, k in feed if k in members]
            s.horizon = horizon

        self._writes.append(write)
        return horizon

    async def get_conflict(self, conflict_id: UUID) -> Conflict | None:
        """One conflict."""
        return self._s.conflicts.get(conflict_id)

    async def list_conflicts(
        self, *, entity: str | None = None, record_id: UUID | None = None, resolved: bool = False
    ) -> list[Conflict]:
        """Conflicts in insertion order matching the filters."""
        return [
            c
            for c in self._s.conflicts.values()
            if (entity is None or c.entity == entity)
            and (record_id is None or c.record_id == record_id)
            and c.resolved == resolved
        ]

    async def save_conflict_resolution(self, conflict: Conflict) -> None:
        """Replace the stored conflict at commit."""

        def write() -> None:
            self._s.conflicts[conflict.id] = conflict

        self._writes.append(write)


_MAX_KEY: Any = ("\uffff", UUID(int=(1 << 128) - 1))


class MemoryStorage:
    """A whole sync database in memory. Share one instance across `SyncServer` restarts."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        """Serialised transaction: commit on normal exit, discard every write on exception."""
        async with self._lock:
            tx = MemoryTx(self._state)
            # An exception from the body propagates out of this yield and skips the commit.
            # Handed-out seqs are not reused (gaps are allowed by the contract).
            yield tx
            tx._commit()

    # Test helpers: read-only views of committed state.
    def record(self, entity: str, record_id: UUID) -> RecordState | None:
        """Committed state of one record."""
        return self._state.records.get((entity, record_id))

    def records(self) -> list[RecordState]:
        """All committed records (tombstones included)."""
        return list(self._state.records.values())

    def conflicts(self) -> list[Conflict]:
        """All conflicts."""
        return list(self._state.conflicts.values())

    def outcomes(self) -> dict[tuple[str, int], Ack]:
        """All stored mutation outcomes (their acks)."""
        return {k: o.ack for k, o in self._state.outcomes.items()}
