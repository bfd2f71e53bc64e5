"""What the sync engine needs from a database, as a Protocol.

`sync.memory.MemoryStorage` implements it for tests and benchmarks; the server implements it on
SQLAlchemy (SpatiaLite / PostGIS). `tests/unit/sync/test_storage_contract.py` states the
contract as tests that any implementation should pass.

Vocabulary:
- A *sequence number* (seq) is a server-wide, strictly increasing integer. Every record write
  gets a fresh one; it becomes the record's `version`. Cursors are seqs.
- A *scope* is an opaque string ("grid:…", "unit:…", "ref"); a record belongs to the scopes in
  its `RecordState.scopes`, a user reads the scopes the policy grants.
- A *membership* is (scope, record) with the seq at which the record entered the scope and,
  after it left, the seq at which it left (an eviction marker).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from schemas.sync import Ack, Conflict
from sync.merge import RecordState


@dataclass(frozen=True, slots=True)
class Outcome:
    """The stored answer to one (device_id, seq) and the fingerprint of the mutation it
    answered (`sync.server.fingerprint`; None for outcomes stored before fingerprints)."""

    ack: Ack
    fingerprint: bytes | None = None


@dataclass(frozen=True, slots=True)
class ScopeItem:
    """One entry of a scope's change feed, in `seq` order.

    `record` is None for an eviction (the record left the scope at `seq`). Otherwise it is the
    record's current state (its `version == seq`) and `since` the seq at which it (last)
    entered the scope: a device whose base cursor is below it gets every field.
    """

    seq: int
    entity: str
    id: UUID
    record: RecordState | None
    since: int = 0


class SyncTx(Protocol):
    """Operations inside one storage transaction.

    Everything done through one `SyncTx` commits together or not at all. The engine never reads
    back what it wrote in the same transaction, and it writes only after its reads.
    """

    async def mutation_outcomes(self, device_id: str, seqs: Sequence[int]) -> dict[int, Outcome]:
        """The stored outcome of each (device_id, seq) already processed; absent seqs are new.

        Outcomes are kept for as long as a device may retry (the implementation may compact
        accepted ones to a per-device high-water mark, but must keep refusals).
        """
        ...

    async def save_mutation_outcomes(self, device_id: str, outcomes: Sequence[Outcome]) -> None:
        """Remember the outcome of each mutation and its fingerprint, keyed by
        (device_id, outcome.ack.seq)."""
        ...

    async def get_records(self, entity: str, ids: Sequence[UUID]) -> dict[UUID, RecordState]:
        """Current state of the records that exist (tombstones included), by id.

        In a write transaction the rows are locked until commit (SELECT ... FOR UPDATE) so two
        pushes cannot merge against the same old state.
        """
        ...

    async def next_seqs(self, n: int) -> list[int]:
        """`n` fresh sequence numbers, ascending, above every seq ever handed out.

        Sequence numbers must become visible in increasing order: a reader that sees seq s
        must also see every committed seq below s, or a cursor would skip a change for ever.
        On PostgreSQL take a transaction-scoped lock on a counter row (UPDATE ... RETURNING) so
        writers commit in seq order; gaps after a rollback are harmless.
        """
        ...

    async def save_records(self, records: Sequence[RecordState], at_ms: int) -> None:
        """Upsert records (`version` already set to a seq from `next_seqs`).

        Memberships follow `record.scopes`: a scope the record was not in before gets a
        membership entered at `record.version`; a scope it was in and no longer is gets an
        eviction marker at `record.version`; the other memberships stay. `at_ms` is the commit
        time, kept so tombstones and eviction markers can be purged by age.
        """
        ...

    async def xor_checksums(self, deltas: Mapping[str, int]) -> None:
        """XOR each scope's stored checksum (initially 0) with its delta."""
        ...

    async def save_conflicts(self, conflicts: Sequence[Conflict]) -> None:
        """Insert conflicts; one whose id exists already is left as it is (idempotent)."""
        ...

    async def changes_since(
        self, scope: str, cursor: int, limit: int
    ) -> tuple[list[ScopeItem], bool]:
        """Up to `limit` feed items of `scope` with seq > cursor, ascending, and has_more.

        Items: each member record whose version > cursor (tombstones included), with the seq
        at which it entered the scope; each eviction marker > cursor.
        A record appears at most once (its latest state). `cursor == 0` asks for a snapshot:
        live members only, no tombstones, no eviction markers. The items' records may be
        shared with other calls' (a cache of decoded states): read them, never change them.
        """
        ...

    async def changes_and_checksums(
        self, asks: Sequence[tuple[str, int]], limit: int
    ) -> tuple[dict[str, tuple[list[ScopeItem], bool]], dict[str, int]]:
        """`changes_since(scope, cursor, limit)` for each (scope, cursor) of `asks`, by scope,
        and `scope_checksums` of the asked scopes, in one query where the storage can: what a
        caught-up device's pull asks of the few scopes with news (a caught-up scope's page is
        usually its last, and its last page carries its checksum)."""
        ...

    async def scope_checksums(self, scopes: Collection[str]) -> dict[str, int]:
        """The current checksum of each of `scopes` (0 for an unknown scope), in one read."""
        ...

    async def last_seq(self) -> int:
        """The highest seq committed so far (0 when empty)."""
        ...

    async def tombstone_horizon(self) -> int:
        """Seq up to which tombstones and eviction markers may have been purged.

        A cursor below it cannot be served incrementally: the device must resync.
        """
        ...

    async def feed_news(self, cursors: Mapping[str, int]) -> tuple[int, int, set[str]]:
        """(`tombstone_horizon()`, `last_seq()`) and the scopes among `cursors` whose feed has
        an item after their cursor (a superset of those `changes_since` would answer with
        items: a snapshot at cursor 0 leaves out tombstones and eviction markers; a cursor
        outside the bounds may be reported too, the caller checks it against them), in one
        read: what every pull asks first, so one that finds nothing new (most pulls) costs
        one statement, not one per scope."""
        ...

    async def purge_tombstones(self, before_ms: int) -> int:
        """Delete tombstones and eviction markers written before `before_ms`.

        Returns the new horizon: the highest seq written before `before_ms` (never lower than
        the previous horizon).
        """
        ...

    async def get_conflict(self, conflict_id: UUID) -> Conflict | None:
        """One conflict by id."""
        ...

    async def list_conflicts(
        self, *, entity: str | None = None, record_id: UUID | None = None, resolved: bool = False
    ) -> list[Conflict]:
        """Conflicts matching the filters, oldest first."""
        ...

    async def save_conflict_resolution(self, conflict: Conflict) -> None:
        """Store a conflict's `resolved` flag and `resolution` value."""
        ...


class SyncStorage(Protocol):
    """A database the engine can open transactions on."""

    def transaction(self) -> AbstractAsyncContextManager[SyncTx]:
        """Open a transaction; leaving the block commits, an exception rolls back.

        A push batch runs in exactly one transaction. A pull's reads run in one transaction and
        must see one consistent snapshot (REPEATABLE READ on PostgreSQL), so the checksum read
        at the end matches the changes read before it.
        """
        ...
