"""Sync data repairs: hazards reach whoever must rectify them; the old alerts' records go

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

No schema change. A hazard's sync scopes now include the enterprise and the organisation
assigned to rectify it (`enterprise:`, `org:`), as REST already showed it to them. The engine
re-computes scopes only when a field changes, so hazards assigned before this migration get a
new version in their new scopes here, and their photos' `shared_with` follows.

Migration 0008 replaced the flat `alerts` table but left its sync records (entity `alert`,
live), and the entity name now belongs to the warnings (`alert_chains`): every `alert` sync
record that is not a warning is deleted here as a server delete would (a tombstone with a new
version), so phones drop it.

Migrations are frozen: this one does not import the sync engine (a later change to that code
would change what this migration does). What it needs of the engine as it was at 0012 is
copied here: the record state's msgpack form (`sync.merge.RecordState`), the hazard scope rules
(`mapping.HAZARD_SCOPE_KEYS`), the media scopes, the HLC, the record hash of the checksums, and
the server-write path's saving (`SyncServer.server_writes` / `rescope` over `SqlTx`: a seq per
changed record from `sync_counter`, the record upserted, its memberships upserted and the scopes
it left marked evicted, checksums XORed, the commit's time logged). Both repairs are server
writes with no device involved, so the merge reduces to: rescope (fields unchanged), set one
server-owned field (`shared_with`, last writer wins by HLC), and delete (the old `alert` entity
was read-only for devices, so a delete records no conflict).
"""

# No `from __future__ import annotations`: msgspec resolves the Structs' annotations in the
# module's globals, and Alembic loads a migration without registering it in `sys.modules`.
import hashlib
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_hazards = sa.table(
    "hazards",
    sa.column("id", sa.Uuid()),
    sa.column("rectify_enterprise_id", sa.Uuid()),
    sa.column("rectify_org_id", sa.Uuid()),
)
_hazard_media = sa.table(
    "hazard_media", sa.column("hazard_id", sa.Uuid()), sa.column("media_id", sa.Uuid())
)
_chains = sa.table("alert_chains", sa.column("id", sa.Uuid()))
_records = sa.table(
    "sync_records",
    sa.column("entity", sa.String()),
    sa.column("record_id", sa.Uuid()),
    sa.column("version", sa.BigInteger()),
    sa.column("deleted", sa.Boolean()),
    sa.column("state", sa.LargeBinary()),
    sa.column("changed_ms", sa.BigInteger()),
)
_members = sa.table(
    "sync_members",
    sa.column("scope", sa.String()),
    sa.column("entity", sa.String()),
    sa.column("record_id", sa.Uuid()),
    sa.column("seq", sa.BigInteger()),
    sa.column("since", sa.BigInteger()),
    sa.column("left_ms", sa.BigInteger()),
)
_checksums = sa.table(
    "sync_checksums", sa.column("scope", sa.String()), sa.column("checksum", sa.BigInteger())
)
_counter = sa.table(
    "sync_counter", sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger())
)
_commits = sa.table(
    "sync_commits", sa.column("seq", sa.BigInteger()), sa.column("at_ms", sa.BigInteger())
)

SERVER_DEVICE = "~server"
COUNTER_BITS = 16
MASK = (1 << 63) - 1
# The hazard's scopes at 0012: grid, enterprise, reporter, area, and whoever must rectify it.
HAZARD_SCOPE_KEYS = (
    ("grid", "grid_id"),
    ("enterprise", "enterprise_id"),
    ("reporter", "reporter_id"),
    ("harea", "area_id"),
    ("enterprise", "rectify_enterprise_id"),
    ("org", "rectify_org_id"),
)


class FieldState(msgspec.Struct, kw_only=True, gc=False):
    """`sync.merge.FieldState` at 0012 (the stored form)."""

    value: Any
    hlc: int
    device: str
    version: int = 0


class RecordState(msgspec.Struct, kw_only=True, gc=False):
    """`sync.merge.RecordState` at 0012 (the stored form)."""

    entity: str
    id: uuid.UUID
    version: int = 0
    fields: dict[str, FieldState] = msgspec.field(default_factory=dict)
    deleted: bool = False
    deleted_hlc: int = 0
    deleted_device: str = ""
    deleted_version: int = 0
    scopes: frozenset[str] = frozenset()

    def values(self) -> dict[str, Any]:
        return {name: fs.value for name, fs in self.fields.items()}


_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(RecordState)


def _hazard_scopes(values: dict[str, Any]) -> frozenset[str]:
    return frozenset(f"{p}:{values[n]}" for p, n in HAZARD_SCOPE_KEYS if values.get(n))


def _media_scopes(values: dict[str, Any]) -> frozenset[str]:
    mine = [f"reporter:{values['uploaded_by']}"] if values.get("uploaded_by") else []
    return frozenset([*mine, *(str(k) for k in values.get("shared_with") or [])])


def _record_hash(entity: str, record_id: uuid.UUID, version: int) -> int:
    digest = hashlib.blake2b(
        entity.encode() + b"|" + record_id.bytes + version.to_bytes(8, "big"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") & MASK


class _Hlc:
    """`sync.hlc.HLC(SystemClock())` at 0012: (ms << 16 | counter), strictly increasing."""

    def __init__(self) -> None:
        self.last = 0

    def now(self) -> int:
        wall, (last_ms, counter) = time.time_ns() // 1_000_000, divmod(self.last, 1 << COUNTER_BITS)
        if wall > last_ms:
            self.last = wall << COUNTER_BITS
        elif counter < (1 << COUNTER_BITS) - 1:
            self.last = (last_ms << COUNTER_BITS) | (counter + 1)
        else:
            self.last = (last_ms + 1) << COUNTER_BITS
        return self.last


class _Writes:
    """One batch of server writes, saved as `SqlTx.save_records` did at 0012."""

    def __init__(self, conn: sa.Connection, hlc: _Hlc) -> None:
        self.conn = conn
        self.insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
        self.hlc = hlc.now

    def records(self, entity: str, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, RecordState]:
        wanted = list(dict.fromkeys(ids))
        out: dict[uuid.UUID, RecordState] = {}
        for start in range(0, len(wanted), 500):
            stmt = sa.select(_records.c.record_id, _records.c.state).where(
                _records.c.entity == entity, _records.c.record_id.in_(wanted[start : start + 500])
            )
            for rid, blob in self.conn.execute(stmt):
                out[rid] = _decode.decode(blob)
        return {rid: out[rid] for rid in wanted if rid in out}

    def save(self, changed: list[tuple[RecordState, RecordState, set[str]]]) -> None:
        """(before, after, changed field names) per record: stamp, save, members, checksums."""
        if not changed:
            return
        top = self.conn.execute(
            sa.update(_counter)
            .where(_counter.c.id == 1)
            .values(seq=_counter.c.seq + len(changed))
            .returning(_counter.c.seq)
        ).scalar_one()
        at_ms = time.time_ns() // 1_000_000
        deltas: dict[str, int] = {}
        members: list[dict[str, Any]] = []
        evictions: list[dict[str, Any]] = []
        for seq, (old, new, names) in enumerate(changed, start=top - len(changed) + 1):
            new.version = seq
            for name in names:
                if name == "_deleted":
                    new.deleted_version = seq
                else:
                    new.fields[name].version = seq
            for rec in (old, new):
                if not rec.deleted:
                    h = _record_hash(rec.entity, rec.id, rec.version)
                    for scope in rec.scopes:
                        deltas[scope] = deltas.get(scope, 0) ^ h
            members += [
                {"scope": s, "entity": new.entity, "record_id": new.id, "seq": seq, "since": seq}
                for s in sorted(new.scopes)
            ]
            evictions += [
                {"s": s, "e": new.entity, "i": new.id, "v": seq, "ms": at_ms}
                for s in sorted(old.scopes - new.scopes)
            ]
        ins = self.insert(_records)
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=["entity", "record_id"],
                set_={c: ins.excluded[c] for c in ("version", "deleted", "state", "changed_ms")},
            ),
            [
                {
                    "entity": new.entity,
                    "record_id": new.id,
                    "version": new.version,
                    "deleted": new.deleted,
                    "state": _encode.encode(new),
                    "changed_ms": at_ms,
                }
                for _, new, _ in changed
            ],
        )
        if members:
            mins = self.insert(_members)
            self.conn.execute(
                mins.on_conflict_do_update(
                    index_elements=["scope", "entity", "record_id"],
                    set_={
                        "seq": mins.excluded.seq,
                        "since": sa.case(
                            (_members.c.left_ms.is_(None), _members.c.since),
                            else_=mins.excluded.since,
                        ),
                        "left_ms": None,
                    },
                ),
                [{**m, "left_ms": None} for m in members],
            )
        if evictions:
            self.conn.execute(
                sa.update(_members)
                .where(
                    _members.c.scope == sa.bindparam("s"),
                    _members.c.entity == sa.bindparam("e"),
                    _members.c.record_id == sa.bindparam("i"),
                    _members.c.left_ms.is_(None),
                )
                .values(seq=sa.bindparam("v"), left_ms=sa.bindparam("ms")),
                evictions,
            )
        if any(deltas.values()):
            cins = self.insert(_checksums)
            cur, new_sum = _checksums.c.checksum, cins.excluded.checksum
            self.conn.execute(
                cins.on_conflict_do_update(
                    index_elements=["scope"],
                    set_={"checksum": cur.op("|")(new_sum) - cur.op("&")(new_sum)},
                ),
                [{"scope": s, "checksum": d} for s, d in deltas.items() if d],
            )
        self.conn.execute(
            self.insert(_commits).on_conflict_do_nothing(), [{"seq": top, "at_ms": at_ms}]
        )


def _rescope_hazards(conn: sa.Connection, hlc: _Hlc, ids: list[uuid.UUID]) -> None:
    """Hazards `ids` get the scopes the rules above give them (a new version for each that
    moved), and their photos' `shared_with` follows (`changelog.rescope_hazards` at 0012)."""
    batch = _Writes(conn, hlc)
    moved: list[tuple[RecordState, RecordState, set[str]]] = []
    for rec in batch.records("hazard", ids).values():
        scopes = _hazard_scopes(rec.values())
        if not rec.deleted and scopes != rec.scopes:
            moved.append((rec, msgspec.structs.replace(rec, scopes=scopes), set()))
    batch.save(moved)
    if not moved:
        return
    photos = sa.select(_hazard_media.c.media_id).where(
        _hazard_media.c.hazard_id.in_([new.id for _, new, _ in moved])
    )
    links = conn.execute(
        sa.select(_hazard_media.c.media_id, _hazard_media.c.hazard_id).where(
            _hazard_media.c.media_id.in_(photos)
        )
    ).all()
    hazards = batch.records("hazard", [h for _, h in links])
    media = batch.records("media", sorted({m for m, _ in links}, key=str))
    shared: dict[uuid.UUID, set[str]] = {m: set() for m in media}
    for media_id, hazard_id in links:
        found = hazards.get(hazard_id)
        if media_id in shared and found is not None:
            shared[media_id].update(_hazard_scopes(found.values()))
    writes = _Writes(conn, hlc)
    changed: list[tuple[RecordState, RecordState, set[str]]] = []
    for media_id, scopes in sorted(shared.items(), key=lambda kv: str(kv[0])):
        rec = media[media_id]
        value, cur, hlc = sorted(scopes), rec.fields.get("shared_with"), writes.hlc()
        if rec.deleted or (cur is not None and cur.value == value):
            continue
        if cur is not None and (hlc, SERVER_DEVICE) <= (cur.hlc, cur.device):
            continue  # an older write loses (the engine kept it as a conflict; none at 0012)
        new = msgspec.structs.replace(rec, fields=dict(rec.fields))
        new.fields["shared_with"] = FieldState(value=value, hlc=hlc, device=SERVER_DEVICE)
        new.scopes = _media_scopes(new.values())
        changed.append((rec, new, {"shared_with"}))
    writes.save(changed)


def _delete_records(conn: sa.Connection, hlc: _Hlc, entity: str, ids: list[uuid.UUID]) -> None:
    """Tombstone live records `ids` (a server delete: scopes frozen, a new version)."""
    batch = _Writes(conn, hlc)
    gone: list[tuple[RecordState, RecordState, set[str]]] = []
    for rec in batch.records(entity, ids).values():
        if not rec.deleted:
            new = msgspec.structs.replace(
                rec, fields=dict(rec.fields), deleted=True, deleted_device=SERVER_DEVICE
            )
            new.deleted_hlc = batch.hlc()
            gone.append((rec, new, {"_deleted"}))
    batch.save(gone)


def upgrade() -> None:
    conn, hlc = op.get_bind(), _Hlc()
    assigned = sa.select(_hazards.c.id).where(
        sa.or_(
            _hazards.c.rectify_enterprise_id.is_not(None), _hazards.c.rectify_org_id.is_not(None)
        )
    )
    _rescope_hazards(conn, hlc, list(conn.execute(assigned).scalars()))
    stale = sa.select(_records.c.record_id).where(
        _records.c.entity == "alert",
        _records.c.deleted.is_(False),
        _records.c.record_id.not_in(sa.select(_chains.c.id)),
    )
    _delete_records(conn, hlc, "alert", list(conn.execute(stale).scalars()))


def downgrade() -> None:
    pass  # data only: the new versions stay (older servers read them as they are)
