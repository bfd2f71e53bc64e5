"""The merge: one mutation against one record's current state, per the declared field rules.

Pure and deterministic: the same current state and mutation always give the same outcome, and
the input state is never modified. The server is the only place where merges happen; devices
show server state with their pending mutations replayed on top (`apply_local`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import msgspec

from schemas.merge import EntitySpec, FieldRule, item_key
from schemas.sync import Conflict, ConflictKind, Op, Reason, Refusal

DELETED_FIELD = "_deleted"
"""Pseudo-field name used in conflicts and change sets for the record's delete flag."""

SERVER_DEVICE = "~server"
"""Device id stamped on server writes ('~' sorts after every UUID string)."""

_CONFLICT_NS = UUID("6f1b7c1e-5d43-4c77-9b1e-2f3a0c9e8a11")


class FieldState(msgspec.Struct, kw_only=True, gc=False):
    """A field's value and who wrote it when; `version` is the record version that set it."""

    value: Any
    hlc: int
    device: str
    version: int = 0


class RecordState(msgspec.Struct, kw_only=True, gc=False):
    """What the server stores per record.

    `version` is the sequence number of the record's last change. `scopes` are the scopes the
    record belongs to (computed by the server's policy from its fields; frozen at deletion).
    """

    entity: str
    id: UUID
    version: int = 0
    fields: dict[str, FieldState] = msgspec.field(default_factory=dict)
    deleted: bool = False
    deleted_hlc: int = 0
    deleted_device: str = ""
    deleted_version: int = 0
    scopes: frozenset[str] = frozenset()

    def values(self) -> dict[str, Any]:
        """Plain field values."""
        return {name: fs.value for name, fs in self.fields.items()}


@dataclass(slots=True)
class MergeOutcome:
    """Result of `merge`.

    When `refusal` is set nothing else applies and the record must not be written. Otherwise
    `record` is the new state (a copy; versions of changed fields are 0 until the caller stamps
    them) and `changed` names the fields that changed (`DELETED_FIELD` for the delete flag).
    `conflicts` hold every value that lost, `lost` the pushed fields among them.
    """

    record: RecordState | None = None
    changed: set[str] = field(default_factory=set)
    conflicts: list[Conflict] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    refusal: Refusal | None = None


def conflict_id(entity: str, record_id: UUID, field_name: str, device: str, hlc: int) -> UUID:
    """Stable id of the conflict that keeps a losing value (same loss -> same id)."""
    return uuid.uuid5(_CONFLICT_NS, f"{entity}/{record_id}/{field_name}/{device}/{hlc}")


def validate(
    spec: EntitySpec, op: Op, fields: dict[str, Any], *, server: bool = False
) -> Refusal | None:
    """Refusal for a mutation that no state could accept (rules, names, value shapes)."""
    if not server and not spec.client_writable:
        return Refusal(code=Reason.READ_ONLY, message=f"{spec.name} is read-only for devices")
    if op is Op.DELETE:
        if not server and not spec.client_deletable:
            return Refusal(code=Reason.NOT_DELETABLE, message=f"{spec.name} cannot be deleted")
        return None
    for name, value in fields.items():
        fspec = spec.fields.get(name)
        if fspec is None:
            continue  # a newer app's field: ignored, never a reason to lose the write
        if fspec.rule is FieldRule.SERVER_OWNED and not server:
            return Refusal(code=Reason.SERVER_OWNED, message="set by the server", field=name)
        problem = fspec.check(value)
        if problem is not None:
            return Refusal(code=Reason.INVALID_VALUE, message=problem, field=name)
    return None


def _union(existing: list[Any], incoming: list[Any]) -> list[Any] | None:
    """`existing` plus the incoming items it lacks (by item key), or None if none are new."""
    seen = {_hashable(item_key(i)) for i in existing}
    added: list[Any] = []
    for item in incoming:
        key = _hashable(item_key(item))
        if key not in seen:
            seen.add(key)
            added.append(item)
    return existing + added if added else None


def _hashable(key: Any) -> Any:
    return key if not isinstance(key, list | dict) else repr(key)


class _Merger:
    """One mutation being merged; split in steps so each rule reads on its own."""

    def __init__(
        self,
        *,
        spec: EntitySpec,
        record_id: UUID,
        fields: dict[str, Any],
        hlc: int,
        device: str,
        base: int,
        seq: int,
        server: bool,
    ) -> None:
        self.spec, self.record_id, self.fields = spec, record_id, fields
        self.hlc, self.device, self.base, self.seq, self.server = hlc, device, base, seq, server

    def conflict(
        self, name: str, kind: ConflictKind, winner: FieldState, loser: FieldState, seq: int = 0
    ) -> Conflict:
        return Conflict(
            id=conflict_id(self.spec.name, self.record_id, name, loser.device, loser.hlc),
            entity=self.spec.name,
            record_id=self.record_id,
            field=name,
            kind=kind,
            winner_value=winner.value,
            winner_hlc=winner.hlc,
            winner_device=winner.device,
            loser_value=loser.value,
            loser_hlc=loser.hlc,
            loser_device=loser.device,
            loser_seq=seq,
        )

    def incoming(self, value: Any) -> FieldState:
        return FieldState(value=value, hlc=self.hlc, device=self.device)

    def create(self) -> MergeOutcome:
        record = RecordState(entity=self.spec.name, id=self.record_id)
        for name, value in self.fields.items():
            append = self.spec.fields[name].rule is FieldRule.APPEND_ONLY
            record.fields[name] = self.incoming((_union([], value) or []) if append else value)
        return MergeOutcome(record=record, changed=set(self.fields))

    def onto_deleted(self, current: RecordState, op: Op) -> MergeOutcome:
        record = msgspec.structs.replace(current, fields=dict(current.fields))
        out = MergeOutcome(record=record)
        if op is Op.DELETE:
            return out  # already gone: nothing changes, nothing lost
        if self.server and op is Op.CREATE:
            # A trusted restore (conflict resolution): undelete, then merge the fields.
            record.deleted = False
            record.deleted_hlc, record.deleted_device = self.hlc, self.device
            out.changed.add(DELETED_FIELD)
            return self.fields_onto(record, out)
        tomb = FieldState(value=True, hlc=current.deleted_hlc, device=current.deleted_device)
        for name, value in self.fields.items():
            out.conflicts.append(
                self.conflict(name, ConflictKind.DELETED, tomb, self.incoming(value), self.seq)
            )
            out.lost.append(name)
        return out

    def delete(self, current: RecordState) -> MergeOutcome:
        record = msgspec.structs.replace(
            current,
            fields=dict(current.fields),
            deleted=True,
            deleted_hlc=self.hlc,
            deleted_device=self.device,
        )
        out = MergeOutcome(record=record, changed={DELETED_FIELD})
        tomb = self.incoming(True)
        for name, fs in current.fields.items():
            # A field written by someone else after the deleter's view is a concurrent edit
            # that the delete overrides: keep it.
            if fs.version > self.base and fs.device != self.device:
                out.conflicts.append(self.conflict(name, ConflictKind.DELETED, tomb, fs))
        return out

    def fields_onto(self, record: RecordState, out: MergeOutcome) -> MergeOutcome:
        for name, value in self.fields.items():
            refusal = self.field(record, out, name, value)
            if refusal is not None:
                return MergeOutcome(refusal=refusal)
        return out

    def field(
        self, record: RecordState, out: MergeOutcome, name: str, value: Any
    ) -> Refusal | None:
        fspec = self.spec.fields[name]
        cur = record.fields.get(name)
        new = self.incoming(value)
        if fspec.rule is FieldRule.APPEND_ONLY:
            merged = _union(list(cur.value or []) if cur is not None else [], value)
            if merged is not None or cur is None:
                hlc = max(self.hlc, cur.hlc) if cur is not None else self.hlc
                record.fields[name] = FieldState(value=merged or [], hlc=hlc, device=self.device)
                out.changed.add(name)
            return None
        if cur is None:
            record.fields[name] = new
            out.changed.add(name)
            return None
        if cur.value == value:
            return None
        if fspec.rule is FieldRule.STATE_MACHINE and fspec.machine and not self.server:
            machine = fspec.machine
            if machine.can_step(cur.value, value):
                record.fields[name] = new
                out.changed.add(name)
            elif machine.rank.get(value, -1) <= machine.rank.get(cur.value, -1):
                # Stale or concurrent: never revert a status that is as far or further along.
                out.conflicts.append(
                    self.conflict(name, ConflictKind.STALE_STATUS, cur, new, self.seq)
                )
                out.lost.append(name)
            else:
                return Refusal(
                    code=Reason.ILLEGAL_TRANSITION,
                    message=f"{cur.value} -> {value} is not allowed",
                    field=name,
                )
            return None
        # LWW, and trusted server writes of any rule.
        if (self.hlc, self.device) > (cur.hlc, cur.device):
            record.fields[name] = new
            out.changed.add(name)
            # A server write (REST service, conflict resolution) is made against the current
            # row, so what it replaces was seen, not lost: no conflict for it.
            if not self.server and cur.version > self.base and cur.device != self.device:
                out.conflicts.append(self.conflict(name, ConflictKind.LWW, new, cur))
        else:
            out.conflicts.append(self.conflict(name, ConflictKind.LWW, cur, new, self.seq))
            out.lost.append(name)
        return None


def ignored_fields(spec: EntitySpec, fields: dict[str, Any]) -> list[str]:
    """Names a mutation carries that `spec` does not declare: a newer app's fields, which this
    server ignores (the rest of the mutation applies; the ack lists them)."""
    return sorted(name for name in fields if name not in spec.fields)


def merge(
    spec: EntitySpec,
    current: RecordState | None,
    *,
    record_id: UUID,
    op: Op,
    fields: dict[str, Any],
    hlc: int,
    device: str,
    base: int = 0,
    seq: int = 0,
    server: bool = False,
) -> MergeOutcome:
    """Merge one mutation into `current` (None when the record does not exist).

    Rules (see schemas.merge): LWW by (hlc, device), a loser on either side kept as a conflict
    when the stored value is newer than the writer's `base` (a concurrent edit) or when the
    incoming value loses; state machines by legality and rank; append-only by union;
    server-owned fields refused for devices. A delete wins over any concurrent edit, which is
    kept as a conflict, whichever arrives first. `server=True` is a write by the server's own
    services: it may touch server-owned fields and read-only entities, its status writes are
    trusted (the services checked them), and a server CREATE of a deleted record restores it.
    A refusal refuses the whole mutation: a mutation is all or nothing. Fields the entity does
    not declare (sent by a newer app) are ignored, not refused (`ignored_fields`).
    """
    if any(name not in spec.fields for name in fields):
        fields = {k: v for k, v in fields.items() if k in spec.fields}
    refusal = validate(spec, op, fields, server=server)
    if refusal is not None:
        return MergeOutcome(refusal=refusal)
    m = _Merger(
        spec=spec,
        record_id=record_id,
        fields=fields,
        hlc=hlc,
        device=device,
        base=base,
        seq=seq,
        server=server,
    )
    if current is None:
        if op is Op.CREATE:
            return m.create()
        return MergeOutcome(
            refusal=Refusal(code=Reason.NOT_FOUND, message=f"no {spec.name} {record_id}")
        )
    if current.deleted:
        return m.onto_deleted(current, op)
    if op is Op.DELETE:
        return m.delete(current)
    record = msgspec.structs.replace(current, fields=dict(current.fields))
    return m.fields_onto(record, MergeOutcome(record=record))


def apply_local(
    spec: EntitySpec | None, view: dict[str, Any] | None, op: Op, fields: dict[str, Any]
) -> dict[str, Any] | None:
    """A device's optimistic view of a record after one of its own mutations.

    Idempotent (re-applying a mutation already reflected in `view` changes nothing), so
    pending and acknowledged-but-not-yet-pulled mutations can be replayed over server state at
    any time. Returns None when the record is not visible (deleted, or unknown and not created).
    """
    if op is Op.DELETE:
        return None
    if view is None:
        if op is not Op.CREATE:
            return None
        view = {}
    out = dict(view)
    for name, value in fields.items():
        fspec = spec.fields.get(name) if spec is not None else None
        if fspec is not None and fspec.rule is FieldRule.APPEND_ONLY:
            existing = list(out.get(name) or [])
            out[name] = _union(existing, value) or existing
        else:
            out[name] = value
    return out
