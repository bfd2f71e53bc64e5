"""Server side of sync: apply pushes, answer pulls, keep conflicts. No web framework, no ORM.

`SyncServer` works against a `SyncStorage` (sync.storage) and a `SyncPolicy` that the real
server implements with its own services: authorization, server-owned values, which scopes a
record belongs to and which scopes a user reads, and a hook called inside the transaction for
audit and notifications. Sync is therefore never a way around the rules of the REST API.

`SyncServer` holds no per-request state; it is cheap to build per request when the storage or
the policy is bound to a request's database session. Share the `HLC` between instances.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

import msgspec

from schemas.merge import REGISTRY, EntitySpec, Registry
from schemas.sync import (
    DEVICE_REUSED,
    SCHEMA_VERSION,
    Ack,
    AckStatus,
    Conflict,
    ConflictKind,
    Mutation,
    Op,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    Reason,
    RecordChange,
    RecordRef,
    Refusal,
    ScopePage,
    UpgradeRequired,
)
from sync.checksum import record_hash
from sync.hlc import HLC, Clock, SystemClock, unpack
from sync.merge import DELETED_FIELD, SERVER_DEVICE, RecordState, ignored_fields, merge
from sync.storage import Outcome, ScopeItem, SyncStorage, SyncTx

DAY_MS = 86_400_000
DEFAULT_TOMBSTONE_HORIZON_MS = 30 * DAY_MS
PREFETCH = 100
"""Items per scope a pull reads ahead for the caught-up scopes with news, all in one query
with their checksums (`SyncTx.changes_and_checksums`); a scope with more is read again with
the pull's budget."""


@dataclass(slots=True)
class WriteContext:
    """Everything the policy may need to judge one write.

    `current` is the stored state (None for a new record); `proposed` is the state after the
    merge, before server-owned values are added. `changed` names the fields the merge changed.
    """

    user: object
    device_id: str
    spec: EntitySpec
    record_id: UUID
    op: Op
    fields: dict[str, Any]
    current: RecordState | None
    proposed: RecordState
    changed: set[str]
    seq: int = 0
    server: bool = False


class SyncPolicy(Protocol):
    """The server's rules, as the engine sees them. All calls happen inside the transaction."""

    async def authorize(self, tx: SyncTx, ctx: WriteContext) -> Refusal | None:
        """None to allow the write, or a typed refusal (the mutation alone is refused)."""
        ...

    async def server_fields(self, tx: SyncTx, ctx: WriteContext) -> dict[str, Any]:
        """Server-owned values to set with this write (reporter, grid from location, times)."""
        ...

    def record_scopes(self, record: RecordState) -> frozenset[str]:
        """Scopes a (live) record belongs to, from its field values."""
        ...

    async def user_scopes(self, tx: SyncTx, user: object) -> frozenset[str]:
        """Scopes the user may read now."""
        ...

    async def on_applied(
        self, tx: SyncTx, ctx: WriteContext, record: RecordState, changed: set[str]
    ) -> None:
        """Called once per applied write, after its version is set (audit, outbox, SSE)."""
        ...


class OpenPolicy:
    """Allow everything; every record is in scope `"all"`. A base class for tests and demos."""

    async def authorize(self, tx: SyncTx, ctx: WriteContext) -> Refusal | None:
        """Allow."""
        return None

    async def server_fields(self, tx: SyncTx, ctx: WriteContext) -> dict[str, Any]:
        """No server-owned values."""
        return {}

    def record_scopes(self, record: RecordState) -> frozenset[str]:
        """One scope for everything."""
        return frozenset({"all"})

    async def user_scopes(self, tx: SyncTx, user: object) -> frozenset[str]:
        """Everyone reads everything."""
        return frozenset({"all"})

    async def on_applied(
        self, tx: SyncTx, ctx: WriteContext, record: RecordState, changed: set[str]
    ) -> None:
        """Nothing."""


class ConflictNotFoundError(LookupError):
    """No conflict with that id."""


@dataclass(slots=True)
class _Pending:
    record: RecordState
    original: RecordState | None
    changed: set[str] = field(default_factory=set)
    contexts: list[WriteContext] = field(default_factory=list)


class _Batch:
    """Writes of one transaction: merged in memory, stamped and saved once at `flush`."""

    def __init__(self, server: SyncServer, tx: SyncTx) -> None:
        self.server = server
        self.tx = tx
        self.loaded: dict[tuple[str, UUID], RecordState | None] = {}
        self.pending: dict[tuple[str, UUID], _Pending] = {}
        self.conflicts: list[tuple[tuple[str, UUID], Conflict]] = []

    async def preload(self, refs: Iterable[tuple[str, UUID]]) -> None:
        by_entity: dict[str, list[UUID]] = {}
        for entity, rid in refs:
            if (entity, rid) not in self.loaded:
                by_entity.setdefault(entity, []).append(rid)
        for entity, ids in by_entity.items():
            found = await self.tx.get_records(entity, ids)
            for rid in ids:
                self.loaded[(entity, rid)] = found.get(rid)

    async def current(self, key: tuple[str, UUID]) -> RecordState | None:
        if key in self.pending:
            return self.pending[key].record
        if key not in self.loaded:
            await self.preload([key])
        return self.loaded[key]

    async def apply(
        self,
        *,
        user: object,
        device: str,
        spec: EntitySpec,
        record_id: UUID,
        op: Op,
        fields: dict[str, Any],
        hlc: int,
        base: int,
        seq: int,
        server: bool,
    ) -> tuple[Refusal | None, list[str], tuple[str, UUID]]:
        key = (spec.name, record_id)
        current = await self.current(key)
        out = merge(
            spec,
            current,
            record_id=record_id,
            op=op,
            fields=fields,
            hlc=hlc,
            device=device,
            base=base,
            seq=seq,
            server=server,
        )
        if out.refusal is not None or out.record is None:
            return out.refusal or _NO_CHANGE, [], key
        ctx = WriteContext(
            user=user,
            device_id=device,
            spec=spec,
            record_id=record_id,
            op=op,
            fields=fields,
            current=current,
            proposed=out.record,
            changed=out.changed,
            seq=seq,
            server=server,
        )
        if not server:
            refusal = await self.server.policy.authorize(self.tx, ctx)
            if refusal is not None:
                return refusal, [], key
        record, changed = out.record, set(out.changed)
        if changed and not record.deleted:
            extra = await self.server.policy.server_fields(self.tx, ctx)
            if extra:
                more = merge(
                    spec,
                    record,
                    record_id=record_id,
                    op=Op.UPDATE,
                    fields=extra,
                    hlc=self.server.hlc.now(),
                    device=SERVER_DEVICE,
                    server=True,
                )
                if more.refusal is not None or more.record is None:
                    # The policy produced a value its own schema rejects: a server bug, loud.
                    raise ValueError(f"policy server_fields refused: {more.refusal}")
                record = more.record
                changed |= more.changed
        for c in out.conflicts:
            self.conflicts.append((key, c))
        if changed:
            if not record.deleted:
                record.scopes = self.server.policy.record_scopes(record)
            entry = self.pending.get(key)
            if entry is None:
                entry = self.pending[key] = _Pending(record=record, original=current)
            entry.record = record
            entry.changed |= changed
            entry.contexts.append(ctx)
        return None, out.lost, key

    async def flush(self, at_ms: int) -> dict[tuple[str, UUID], int]:
        """Stamp versions, save records, checksums and conflicts; return key -> version."""
        versions: dict[tuple[str, UUID], int] = {}
        if self.pending:
            seqs = await self.tx.next_seqs(len(self.pending))
            deltas: dict[str, int] = {}
            for (key, entry), seq in zip(self.pending.items(), seqs, strict=True):
                _stamp(entry, seq)
                versions[key] = seq
                _checksum_delta(deltas, entry.original, entry.record)
            await self.tx.save_records([e.record for e in self.pending.values()], at_ms)
            await self.tx.xor_checksums({s: d for s, d in deltas.items() if d})
        for key, c in self.conflicts:
            c.version = versions.get(key) or (self.loaded.get(key) or _NO_RECORD).version
        if self.conflicts:
            await self.tx.save_conflicts([c for _, c in self.conflicts])
        for entry in self.pending.values():
            for ctx in entry.contexts:
                await self.server.policy.on_applied(self.tx, ctx, entry.record, entry.changed)
        return versions


def _stamp(entry: _Pending, seq: int) -> None:
    """Give the record and the fields it changed the version `seq`."""
    rec = entry.record
    rec.version = seq
    for name in entry.changed:
        if name == DELETED_FIELD:
            rec.deleted_version = seq
        else:
            rec.fields[name].version = seq


def _checksum_delta(deltas: dict[str, int], old: RecordState | None, new: RecordState) -> None:
    """XOR out the old (entity, id, version) from its scopes and XOR in the new one."""
    if old is not None and not old.deleted:
        h = record_hash(old.entity, old.id, old.version)
        for scope in old.scopes:
            deltas[scope] = deltas.get(scope, 0) ^ h
    if not new.deleted:
        h = record_hash(new.entity, new.id, new.version)
        for scope in new.scopes:
            deltas[scope] = deltas.get(scope, 0) ^ h


_NO_RECORD = RecordState(entity="", id=UUID(int=0))
_NO_CHANGE = Refusal(code=Reason.RULE, message="merge produced no record")
_DEVICE_REUSED = Refusal(
    code=Reason.RULE,
    rule=DEVICE_REUSED,
    message="this device id already sent a different mutation with this number (an app "
    "reinstalled with a wiped store?): register a new device id and push again",
)
# Sorted keys: the same mutation fingerprints the same however its fields dict was built.
_fp_enc = msgspec.msgpack.Encoder(order="sorted")


def fingerprint(m: Mutation) -> bytes:
    """16 bytes that differ, but for a hash collision, between two mutations that differ in
    anything a retry keeps (entity, id, op, HLC, base, fields): a device re-sends a stored
    outbox row unchanged, so a retry matches and a reused (device, seq) does not."""
    body = _fp_enc.encode((m.entity, m.id.bytes, m.op.value, m.hlc, m.base, m.fields))
    return hashlib.blake2b(body, digest_size=16).digest()


class SyncServer:
    """Applies pushes and answers pulls.

    Promises:
    - A push batch is applied in one storage transaction; each mutation is processed exactly
      once per (device_id, seq): a retry gets the stored outcome (DUPLICATE, or the same
      refusal) and changes nothing. A different mutation under a (device_id, seq) already
      processed is refused (`Reason.RULE`, rule `device_reused`), changes nothing and leaves
      the stored outcome as it was: the device must take a new id, not lose the write.
    - A refused mutation changes nothing and never stops the mutations after it.
    - Every value that loses a merge is saved as a `Conflict`.
    - A device clock more than `max_skew_ms` ahead is clamped to the server's HLC, so a phone
      with a wrong clock cannot win every future LWW merge.
    """

    def __init__(
        self,
        storage: SyncStorage,
        policy: SyncPolicy | None = None,
        *,
        registry: Registry = REGISTRY,
        clock: Clock | None = None,
        hlc: HLC | None = None,
        min_schema_version: int = 1,
        max_pull_limit: int = 5000,
        max_skew_ms: int = 60_000,
    ) -> None:
        self.storage = storage
        self.policy: SyncPolicy = policy if policy is not None else OpenPolicy()
        self.registry = registry
        self.clock = clock if clock is not None else SystemClock()
        self.hlc = hlc if hlc is not None else HLC(self.clock)
        self.min_schema_version = min_schema_version
        self.max_pull_limit = max_pull_limit
        self.max_skew_ms = max_skew_ms

    def _upgrade(self, version: int) -> UpgradeRequired | None:
        if version < self.min_schema_version:
            return UpgradeRequired(
                min_version=self.min_schema_version,
                message=f"schema {version} is too old; upgrade the app (need "
                f"{self.min_schema_version}, server speaks {SCHEMA_VERSION})",
            )
        return None

    def _clamp(self, hlc: int) -> int:
        ms, _ = unpack(hlc)
        if ms > self.clock.now_ms() + self.max_skew_ms:
            return self.hlc.now()
        self.hlc.update(hlc)
        return hlc

    async def push(self, user: object, req: PushRequest) -> PushResponse | UpgradeRequired:
        """Apply a device's mutations in one transaction; one ack per mutation, same order."""
        upgrade = self._upgrade(req.schema_version)
        if upgrade is not None:
            return upgrade
        async with self.storage.transaction() as tx:
            acks = await self._push(tx, user, req.device_id, req.mutations)
        return PushResponse(acks=acks, hlc=self.hlc.now())

    async def _push(
        self, tx: SyncTx, user: object, device: str, mutations: Sequence[Mutation]
    ) -> list[Ack]:
        seen = await tx.mutation_outcomes(device, [m.seq for m in mutations])
        batch = _Batch(self, tx)
        await batch.preload(
            (m.entity, m.id) for m in mutations if m.seq not in seen and m.entity in self.registry
        )
        acks: list[Ack] = []
        new: list[tuple[Outcome, tuple[str, UUID] | None]] = []
        for m in mutations:
            fp = fingerprint(m)
            outcome = seen.get(m.seq)
            if outcome is not None:
                prior = outcome.ack
                if outcome.fingerprint is not None and outcome.fingerprint != fp:
                    acks.append(Ack(seq=m.seq, status=AckStatus.REFUSED, refusal=_DEVICE_REUSED))
                elif prior.status is AckStatus.REFUSED:
                    acks.append(prior)
                else:
                    acks.append(
                        Ack(
                            seq=m.seq,
                            status=AckStatus.DUPLICATE,
                            version=prior.version,
                            lost=prior.lost,
                        )
                    )
                continue
            spec = self.registry.get(m.entity)
            if spec is None:
                ack = Ack(
                    seq=m.seq,
                    status=AckStatus.REFUSED,
                    refusal=Refusal(code=Reason.UNKNOWN_ENTITY, message=m.entity),
                )
                key = None
            else:
                refusal, lost, key = await batch.apply(
                    user=user,
                    device=device,
                    spec=spec,
                    record_id=m.id,
                    op=m.op,
                    fields=m.fields,
                    hlc=self._clamp(m.hlc),
                    base=m.base,
                    seq=m.seq,
                    server=False,
                )
                if refusal is not None:
                    ack = Ack(seq=m.seq, status=AckStatus.REFUSED, refusal=refusal)
                    key = None
                else:
                    ack = Ack(seq=m.seq, lost=lost, ignored=ignored_fields(spec, m.fields))
            seen[m.seq] = Outcome(ack, fp)  # a seq repeated inside one batch is seen too
            acks.append(ack)
            new.append((Outcome(ack, fp), key))
        versions = await batch.flush(self.clock.now_ms())
        for outcome, key in new:
            if key is not None:
                current = batch.loaded.get(key)
                outcome.ack.version = versions.get(key) or (current.version if current else 0)
        await tx.save_mutation_outcomes(device, [o for o, _ in new])
        return acks

    async def server_write(
        self,
        tx: SyncTx,
        entity: str,
        record_id: UUID,
        fields: dict[str, Any],
        *,
        op: Op = Op.UPDATE,
        user: object = None,
    ) -> int:
        """Write as the server (dispatch, services, conflict resolution) inside `tx`.

        Server-owned fields and read-only entities are allowed; the write syncs out like any
        change. Returns the record's version afterwards. Raises ValueError on a refusal
        (unknown field, bad value, missing record), which is a bug in the caller.
        """
        (version,) = await self.server_writes(tx, [(entity, record_id, fields, op)], user=user)
        return version

    async def server_writes(
        self,
        tx: SyncTx,
        writes: Sequence[tuple[str, UUID, dict[str, Any], Op]],
        *,
        user: object = None,
    ) -> list[int]:
        """Several `server_write`s as one batch: the records are read in one query per entity
        and saved (seqs, members, checksums) once. Returns each write's record version."""
        batch = _Batch(self, tx)
        await batch.preload((entity, rid) for entity, rid, _, _ in writes)
        keys: list[tuple[str, UUID]] = []
        for entity, record_id, fields, op in writes:
            refusal, _, key = await batch.apply(
                user=user,
                device=SERVER_DEVICE,
                spec=self.registry[entity],
                record_id=record_id,
                op=op,
                fields=fields,
                hlc=self.hlc.now(),
                base=0,
                seq=0,
                server=True,
            )
            if refusal is not None:
                raise ValueError(f"server write refused: {refusal.code}: {refusal.message}")
            keys.append(key)
        versions = await batch.flush(self.clock.now_ms())
        return [versions.get(k) or (batch.loaded.get(k) or _NO_RECORD).version for k in keys]

    async def write(
        self,
        entity: str,
        record_id: UUID,
        fields: dict[str, Any],
        *,
        op: Op = Op.UPDATE,
    ) -> int:
        """`server_write` in a transaction of its own."""
        async with self.storage.transaction() as tx:
            return await self.server_write(tx, entity, record_id, fields, op=op)

    async def resolve_conflict(
        self,
        tx: SyncTx,
        conflict_id: UUID,
        *,
        take: Literal["winner", "loser", "value"],
        value: Any = None,
        user: object = None,
    ) -> Conflict:
        """Resolve a conflict: keep the winner, restore the loser, or set `value`.

        Restoring writes the value as the server, so the resolution syncs out like any change;
        for a delete conflict it also restores the record.
        """
        conflict = await tx.get_conflict(conflict_id)
        if conflict is None:
            raise ConflictNotFoundError(str(conflict_id))
        chosen = conflict.winner_value if take == "winner" else conflict.loser_value
        if take == "value":
            chosen = value
        if take != "winner":
            op = Op.CREATE if conflict.kind is ConflictKind.DELETED else Op.UPDATE
            await self.server_write(
                tx, conflict.entity, conflict.record_id, {conflict.field: chosen}, op=op, user=user
            )
        resolved = msgspec.structs.replace(conflict, resolved=True, resolution=chosen)
        await tx.save_conflict_resolution(resolved)
        return resolved

    async def purge_tombstones(self, horizon_ms: int = DEFAULT_TOMBSTONE_HORIZON_MS) -> int:
        """Forget tombstones and eviction markers older than `horizon_ms`; return the horizon.

        Devices whose cursor is older get `resync` on their next pull.
        """
        async with self.storage.transaction() as tx:
            return await tx.purge_tombstones(self.clock.now_ms() - horizon_ms)

    async def pull(self, user: object, req: PullRequest) -> PullResponse | UpgradeRequired:
        """Changes per scope after the device's cursors, paginated by `limit` records."""
        upgrade = self._upgrade(req.schema_version)
        if upgrade is not None:
            return upgrade
        budget = max(1, min(req.limit, self.max_pull_limit))
        async with self.storage.transaction() as tx:
            scopes = await self.policy.user_scopes(tx, user)
            pages: list[ScopePage] = []
            more = False
            # Scopes the device holds and may follow from its cursor: one query says which
            # have anything new (and the feed's bounds, which say which may be followed);
            # the others are skipped without a query each.
            held = {s: c for s, c in req.cursors.items() if s in scopes}
            horizon, last, changed = await tx.feed_news(held)
            current = {s: c for s, c in held.items() if c == 0 or horizon <= c <= last}
            changed &= current.keys()
            # The news of the caught-up scopes, all in one read (a few items each, mostly)
            # with their checksums; a scope with more than `ahead` is read again below with
            # the budget left. Not a scope in the middle of a paginated pull (its base behind
            # its cursor): its page is long, and what the read-ahead found of it would be
            # read again.
            ahead = min(budget, PREFETCH)
            news = [(s, c) for s in sorted(changed) if req.bases.get(s, c := current[s]) == c]
            prefetched: dict[str, tuple[list[ScopeItem], bool]] = {}
            sums: dict[str, int] = {}
            if news:
                prefetched, sums = await tx.changes_and_checksums(news, ahead)
            for scope in sorted(scopes):
                known = scope in req.cursors
                cursor = req.cursors.get(scope, 0)
                if scope in current and scope not in changed:
                    continue  # nothing after the cursor: no page (as below, without a query)
                resync = cursor > 0 and (cursor < horizon or cursor > last)
                if resync:
                    cursor = 0
                if budget == 0:
                    more = True
                    if resync or not known:
                        pages.append(ScopePage(scope=scope, cursor=0, has_more=True, resync=True))
                    continue
                base = 0 if resync else min(cursor, req.bases.get(scope, cursor))
                got = prefetched.get(scope)
                if got is not None and (not got[1] or budget <= ahead):
                    items, has_more = got[0][:budget], got[1] or len(got[0]) > budget
                else:
                    items, has_more = await tx.changes_since(scope, cursor, budget)
                budget -= len(items)
                if not items and known and not resync:
                    continue
                page = self._page(scope, cursor, base, items, has_more, resync)
                more = more or has_more
                pages.append(page)
            # A scope's last page carries its checksum: those the read-ahead did not bring,
            # all in one read.
            done = [p for p in pages if not p.has_more]
            missing = [p.scope for p in done if p.scope not in sums]
            if missing:
                sums.update(await tx.scope_checksums(missing))
            for p in done:
                p.checksum = sums[p.scope]
        dropped = sorted(s for s in req.cursors if s not in scopes)
        return PullResponse(scopes=pages, dropped=dropped, has_more=more, hlc=self.hlc.now())

    @staticmethod
    def _page(
        scope: str, cursor: int, base: int, items: list[ScopeItem], has_more: bool, resync: bool
    ) -> ScopePage:
        changes: list[RecordChange] = []
        evictions: list[RecordRef] = []
        for item in items:
            rec = item.record
            if rec is None:
                evictions.append(RecordRef(entity=item.entity, id=item.id))
            elif rec.deleted:
                changes.append(
                    RecordChange(entity=rec.entity, id=rec.id, version=rec.version, deleted=True)
                )
            else:
                # New to the scope since the base, or restored after a delete the device saw:
                # resend every field. Otherwise what changed since the base (not the cursor: an
                # earlier page may have skipped this record's older version, see PullRequest).
                full = item.since > base or rec.deleted_version > base
                values = {n: fs.value for n, fs in rec.fields.items() if full or fs.version > base}
                changes.append(
                    RecordChange(entity=rec.entity, id=rec.id, version=rec.version, fields=values)
                )
        next_cursor = items[-1].seq if items else cursor
        return ScopePage(
            scope=scope,
            cursor=next_cursor,
            changes=changes,
            evictions=evictions,
            has_more=has_more,
            resync=resync,
        )

    async def scope_snapshot(
        self, scope: str
    ) -> dict[tuple[str, UUID], tuple[int, dict[str, Any]]]:
        """What a device holding `scope` should hold now: (entity, id) -> (version, values)."""
        async with self.storage.transaction() as tx:
            items, _ = await tx.changes_since(scope, 0, 1 << 62)
        return {
            (i.entity, i.id): (i.record.version, i.record.values())
            for i in items
            if i.record is not None
        }
