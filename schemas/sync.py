"""Wire messages of the delta-sync protocol (see docs/sync-protocol.md).

Short wire names (`msgspec.field(name=...)`) keep a steady-state change well under 120 bytes on
the wire; the Python attribute names stay readable. Every field added later must have a default
so that old phones and new servers keep decoding each other (msgspec's evolution rules); nothing
here is `array_like`.

Encoding: msgpack (`application/msgpack`, UUIDs as 16-byte bin) or JSON (`application/json`,
UUIDs as canonical strings). Use the module-level encoders/decoders below.

The per-record structs are `gc=False`: they hold decoded data only and never take part in a
reference cycle, so the cyclic garbage collector need not track them. A 5,000-record page
allocates tens of thousands of them; tracked, they trigger repeated full collections over the
server's whole heap (measured: about 60% of the time spent building a page).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any
from uuid import UUID

import msgspec

from schemas.common import NO_NUL

INT64_MAX = 2**63 - 1
# Bounds that the wire always kept (a seq, an HLC, a version and a cursor are non-negative
# signed 64-bit numbers in both databases); refused at decode instead of overflowing a column.
# The types stay `int` and `str`, so the encoding and old phones' decoders are unchanged.
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
DeviceId = Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)]

SCHEMA_VERSION = 2
"""The protocol version this code speaks; clients send it in every request.

2: field actions are step entities (`task_step`, `hazard_step`, `position_fix`) applied by the
server's domain actions; hazard fields carry REST's names (`photo_ids`); `Refusal.rule`. A
version-1 phone is answered 426 (`UpgradeRequired`)."""


class Op(enum.StrEnum):
    """What a mutation does to its record."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"


class Mutation(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One local write: field-level changes to one record, sharing one HLC and mutation seq.

    `seq` is the device's own monotonic mutation number; the server deduplicates on
    (device_id, seq). `base` is the record version the device held when it made the write
    (0 when it had none): a stored field newer than `base` was changed concurrently, so a loss
    on either side is kept as a conflict. For an append-only field the value is the list of
    items to add, not the whole list.
    """

    seq: Count = msgspec.field(name="s")
    entity: str = msgspec.field(name="e")
    id: UUID = msgspec.field(name="i")
    hlc: Count = msgspec.field(name="h")
    op: Op = msgspec.field(name="o", default=Op.UPDATE)
    base: Count = msgspec.field(name="b", default=0)
    fields: dict[str, Any] = msgspec.field(name="f", default_factory=dict)

    def changes(self, device_id: str) -> list[FieldChange]:
        """The field-level changes this mutation carries, one per field."""
        return [
            FieldChange(
                entity=self.entity,
                id=self.id,
                field=name,
                value=value,
                hlc=self.hlc,
                device_id=device_id,
                seq=self.seq,
            )
            for name, value in self.fields.items()
        ]


class FieldChange(msgspec.Struct, kw_only=True, gc=False):
    """A single field change: the unit the merge rules reason about (never sent alone)."""

    entity: str
    id: UUID
    field: str
    value: Any
    hlc: int
    device_id: str
    seq: int


class PushRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`POST /api/v1/sync/push`: the device's pending mutations, in ascending `seq` order."""

    schema_version: int = msgspec.field(name="v")
    device_id: DeviceId = msgspec.field(name="d")
    mutations: list[Mutation] = msgspec.field(name="m", default_factory=list)


class AckStatus(enum.StrEnum):
    """Outcome of one mutation."""

    ACCEPTED = "ok"
    DUPLICATE = "dup"  # applied by an earlier push; nothing changed now
    REFUSED = "no"


class Reason(enum.StrEnum):
    """Why a mutation was refused. Clients switch on these; messages are for humans."""

    FORBIDDEN = "forbidden"
    READ_ONLY = "read_only"
    SERVER_OWNED = "server_owned"
    ILLEGAL_TRANSITION = "illegal_transition"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_ENTITY = "unknown_entity"
    UNKNOWN_FIELD = "unknown_field"
    NOT_FOUND = "not_found"
    NOT_DELETABLE = "not_deletable"
    RULE = "rule"  # a business rule of the server's services


DEVICE_REUSED = "device_reused"
"""`Refusal.rule` when a device id re-sends a sequence number with a different mutation (an app
reinstalled with its old device id and a wiped store): keep the write, register a new device
id, push again (docs/sync-protocol.md §4)."""


class Refusal(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True, gc=False):
    """A typed refusal: `code` is stable, `message` is for people, `field` names the culprit.

    `code` stays within the closed `Reason` set an old phone decodes; `rule` names the exact
    business rule, the same string as the REST problem's code (`type` .../problems/<rule>),
    and new rules appear only there (an open set: show `message`, switch on what you know)."""

    code: Reason = msgspec.field(name="c")
    message: str = msgspec.field(name="m", default="")
    field: str = msgspec.field(name="f", default="")
    rule: str = msgspec.field(name="r", default="")


class Ack(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Per-mutation answer.

    `version` is the record version that the mutation produced (0 if none). `lost` lists the
    fields whose pushed value lost a merge (kept as conflicts on the server). A retried
    mutation that was refused earlier is answered with the same refusal, so a lost response
    never turns a refusal into silence.
    """

    seq: int = msgspec.field(name="s")
    status: AckStatus = msgspec.field(name="r", default=AckStatus.ACCEPTED)
    version: int = msgspec.field(name="v", default=0)
    refusal: Refusal | None = msgspec.field(name="x", default=None)
    lost: list[str] = msgspec.field(name="l", default_factory=list)
    # Fields this server does not know (a newer app's): not stored, the rest applied.
    ignored: list[str] = msgspec.field(name="g", default_factory=list)


class PushResponse(msgspec.Struct, kw_only=True, omit_defaults=True, tag="push", tag_field="t"):
    """Answer to a push: one ack per mutation, in request order, and the server's HLC."""

    acks: list[Ack] = msgspec.field(name="a", default_factory=list)
    hlc: int = msgspec.field(name="h", default=0)


class PullRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`POST /api/v1/sync/pull`: the last sequence the device holds for each scope it knows.

    Scopes the device does not list start from 0 (a snapshot). `limit` caps the records in the
    answer (the server may lower it). `bases` gives, for a scope in the middle of a paginated
    pull, the cursor of its last complete checkpoint (absent: equal to the cursor): a record
    changed again after an earlier page was cut is coalesced to its newest version, so the
    server must send every field changed after the base, not only after the cursor.
    """

    schema_version: int = msgspec.field(name="v")
    device_id: DeviceId = msgspec.field(name="d", default="")
    cursors: dict[str, Count] = msgspec.field(name="c", default_factory=dict)
    limit: Limit = msgspec.field(name="n", default=2000)
    bases: dict[str, Count] = msgspec.field(name="b", default_factory=dict)


class RecordChange(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The new state of one record as seen from a scope.

    `fields` holds the fields changed after the scope cursor (every field when the record is
    new to the scope); `deleted` marks a tombstone (no fields). `version` is the record's
    version after this change; it feeds the scope checksum.
    """

    entity: str = msgspec.field(name="e")
    id: UUID = msgspec.field(name="i")
    version: int = msgspec.field(name="v")
    fields: dict[str, Any] = msgspec.field(name="f", default_factory=dict)
    deleted: bool = msgspec.field(name="d", default=False)


class RecordRef(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """An (entity, id) pair."""

    entity: str = msgspec.field(name="e")
    id: UUID = msgspec.field(name="i")


class ScopePage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One scope's part of a pull answer.

    Apply `changes` and `evictions` in list order, then store `cursor`, all in one local
    transaction. `resync` means the device's cursor was older than the tombstone horizon (or
    unknown): drop what the scope held once the snapshot that starts with this page is complete
    (`has_more` false). `checksum` is present on the last page (`has_more` false) and must
    equal the XOR of `record_hash(entity, id, version)` over the records the scope now holds.
    """

    scope: str = msgspec.field(name="s")
    cursor: int = msgspec.field(name="c")
    changes: list[RecordChange] = msgspec.field(name="r", default_factory=list)
    evictions: list[RecordRef] = msgspec.field(name="x", default_factory=list)
    has_more: bool = msgspec.field(name="m", default=False)
    checksum: int | None = msgspec.field(name="k", default=None)
    resync: bool = msgspec.field(name="z", default=False)


class PullResponse(msgspec.Struct, kw_only=True, omit_defaults=True, tag="pull", tag_field="t"):
    """Answer to a pull. Scopes with nothing new are left out, so an idle sync is tiny.

    `dropped` lists scopes the user no longer has: the device removes their records (keeping
    unsynced edits aside). `has_more` asks the device to pull again at once.
    """

    scopes: list[ScopePage] = msgspec.field(name="s", default_factory=list)
    dropped: list[str] = msgspec.field(name="x", default_factory=list)
    has_more: bool = msgspec.field(name="m", default=False)
    hlc: int = msgspec.field(name="h", default=0)


class UpgradeRequired(
    msgspec.Struct, kw_only=True, omit_defaults=True, tag="upgrade", tag_field="t"
):
    """The client's schema version is too old: it must upgrade before syncing (HTTP 426)."""

    min_version: int = msgspec.field(name="v")
    message: str = msgspec.field(name="m", default="")


class ExchangeRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`POST /api/v1/sync/exchange`: a push and the pull that follows it, in one round trip.

    The server applies `push` (committed before anything else), then answers `pull` as
    `/sync/pull` would at that moment: the same two messages, one round trip instead of two
    (docs/sync-protocol.md). Both carry the schema version; the push's is the one checked.
    """

    push: PushRequest = msgspec.field(name="p")
    pull: PullRequest = msgspec.field(name="q")


class ExchangeResponse(
    msgspec.Struct, kw_only=True, omit_defaults=True, tag="exchange", tag_field="t"
):
    """Answer to an exchange: the push's acks and the pull's pages."""

    push: PushResponse = msgspec.field(name="p")
    pull: PullResponse = msgspec.field(name="q")


PushReply = PushResponse | UpgradeRequired
PullReply = PullResponse | UpgradeRequired
ExchangeReply = ExchangeResponse | UpgradeRequired


class ConflictKind(enum.StrEnum):
    """Why a value lost."""

    LWW = "lww"  # a concurrent write with a later HLC won
    STALE_STATUS = "stale_status"  # a status behind the current one (rank) lost
    DELETED = "deleted"  # the record was deleted; this concurrent edit lost


class Conflict(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A value that lost a merge, kept for dispatch to list and resolve.

    `id` is derived from (entity, record, field, loser device, loser HLC), so re-detecting the
    same loss (a retried push, a replay) produces the same record, not a duplicate.
    `field` is `"_deleted"` for the record's delete flag.
    """

    id: UUID
    entity: str
    record_id: UUID
    field: str
    kind: ConflictKind
    winner_value: Any
    winner_hlc: int
    winner_device: str
    loser_value: Any
    loser_hlc: int
    loser_device: str
    loser_seq: int = 0
    version: int = 0
    resolved: bool = False
    resolution: Any = None


# Built once (msgspec guidance): hot paths reuse these.
msgpack_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
json_encoder = msgspec.json.Encoder()
push_request_msgpack = msgspec.msgpack.Decoder(PushRequest)
pull_request_msgpack = msgspec.msgpack.Decoder(PullRequest)
push_reply_msgpack = msgspec.msgpack.Decoder(PushReply)
pull_reply_msgpack = msgspec.msgpack.Decoder(PullReply)
push_request_json = msgspec.json.Decoder(PushRequest)
pull_request_json = msgspec.json.Decoder(PullRequest)
push_reply_json = msgspec.json.Decoder(PushReply)
pull_reply_json = msgspec.json.Decoder(PullReply)
exchange_request_msgpack = msgspec.msgpack.Decoder(ExchangeRequest)
exchange_request_json = msgspec.json.Decoder(ExchangeRequest)
exchange_reply_msgpack = msgspec.msgpack.Decoder(ExchangeReply)
exchange_reply_json = msgspec.json.Decoder(ExchangeReply)
