"""Each merge rule on its own: LWW, state machine, append-only, server-owned, delete."""

from __future__ import annotations

import uuid
from typing import Any

from schemas.merge import REGISTRY
from schemas.sync import ConflictKind, Op, Reason
from sync.hlc import HLC, ManualClock, pack, unpack
from sync.merge import DELETED_FIELD, RecordState, apply_local, ignored_fields, merge
from tests.unit.sync.helpers import hazard_fields

HAZARD = REGISTRY["hazard"]
TASK = REGISTRY["task"]
RID = uuid.UUID(int=42)


def created(fields: dict[str, Any] | None = None, version: int = 1) -> RecordState:
    out = merge(
        HAZARD,
        None,
        record_id=RID,
        op=Op.CREATE,
        fields=fields or hazard_fields(),
        hlc=pack(1000, 0),
        device="A",
    )
    assert out.refusal is None and out.record is not None
    rec = out.record
    rec.version = version
    for fs in rec.fields.values():
        fs.version = version
    return rec


def upd(
    rec: RecordState | None,
    fields: dict[str, Any],
    hlc: int,
    device: str,
    base: int = 1,
    op: Op = Op.UPDATE,
    spec: Any = HAZARD,
    server: bool = False,
) -> Any:
    return merge(
        spec,
        rec,
        record_id=RID,
        op=op,
        fields=fields,
        hlc=hlc,
        device=device,
        base=base,
        seq=7,
        server=server,
    )


def test_hlc_is_monotonic_and_follows_remote() -> None:
    clock = ManualClock(5000)
    hlc = HLC(clock)
    a, b = hlc.now(), hlc.now()
    assert b > a and unpack(b) == (5000, 1)
    assert hlc.update(pack(9000, 3)) > pack(9000, 3)
    clock.advance(10_000)
    assert unpack(hlc.now()) == (15000, 0)
    # counter overflow borrows the next millisecond instead of wrapping
    h2 = HLC(ManualClock(1), last=pack(1, 0xFFFF))
    assert h2.now() == pack(2, 0)


def test_lww_newer_wins_without_conflict_when_causal() -> None:
    rec = created()
    out = upd(rec, {"description": "B"}, pack(2000, 0), "B", base=1)
    assert out.record.fields["description"].value == "B" and out.changed == {"description"}
    assert out.conflicts == [] and out.lost == []
    assert rec.fields["description"].value == "Blocked exit"  # input untouched


def test_lww_older_loses_and_is_kept() -> None:
    rec = created()
    rec.fields["description"].hlc = pack(3000, 0)
    out = upd(rec, {"description": "old"}, pack(2000, 0), "B")
    assert out.changed == set() and out.lost == ["description"]
    (c,) = out.conflicts
    assert (c.kind, c.loser_value, c.winner_value) == (ConflictKind.LWW, "old", "Blocked exit")


def test_lww_tie_broken_by_device_id_both_orders() -> None:
    rec = created()
    same = rec.fields["description"].hlc
    out = upd(rec, {"description": "from Z"}, same, "Z", base=0)
    assert out.record.fields["description"].value == "from Z"
    (c,) = out.conflicts  # concurrent (stored version > base 0): the loser is kept
    assert c.loser_value == "Blocked exit" and c.loser_device == "A"
    out2 = upd(rec, {"description": "from 0"}, same, "0", base=0)
    assert out2.record.fields["description"].value == "Blocked exit" and out2.lost == [
        "description"
    ]


def test_state_machine_legal_step_applies() -> None:
    out = upd(created(), {"status": "verified"}, pack(2000, 0), "B")
    assert out.record.fields["status"].value == "verified"


def test_stale_status_never_reverts_and_is_kept() -> None:
    rec = created(hazard_fields(status="closed"))
    out = upd(rec, {"status": "rectified"}, pack(9000, 0), "B")
    assert out.refusal is None and out.changed == set()
    assert out.conflicts[0].kind is ConflictKind.STALE_STATUS
    # task: a delayed "accepted" after "completed"
    t = merge(
        TASK,
        None,
        record_id=RID,
        op=Op.CREATE,
        fields={"status": "completed"},
        hlc=pack(1, 0),
        device="S",
        server=True,
    ).record
    out = upd(t, {"status": "accepted"}, pack(9000, 0), "B", spec=TASK)
    assert out.lost == ["status"] and out.record.fields["status"].value == "completed"


def test_illegal_forward_jump_is_refused() -> None:
    out = upd(created(), {"status": "closed", "description": "x"}, pack(2000, 0), "B")
    assert out.refusal is not None and out.refusal.code is Reason.ILLEGAL_TRANSITION
    assert out.record is None  # the whole mutation is refused


def test_append_only_unions_by_item_id() -> None:
    rec = created(hazard_fields(photo_ids=["p1"], timeline=[{"id": "t1", "s": "reported"}]))
    out = upd(
        rec,
        {
            "photo_ids": ["p2", "p1"],
            "timeline": [{"id": "t1", "s": "x"}, {"id": "t2", "s": "verified"}],
        },
        pack(500, 0),
        "B",
        base=0,
    )
    assert out.record.fields["photo_ids"].value == ["p1", "p2"]
    assert [i["id"] for i in out.record.fields["timeline"].value] == ["t1", "t2"]
    assert out.record.fields["timeline"].value[0]["s"] == "reported"  # items are immutable
    assert out.conflicts == [] and out.lost == []
    again = upd(out.record, {"photo_ids": ["p2"]}, pack(600, 0), "C")
    assert again.changed == set()


def test_server_owned_and_read_only_are_refused_for_devices() -> None:
    out = upd(created(), {"reporter_id": str(uuid.uuid4())}, pack(2000, 0), "B")
    assert out.refusal is not None and out.refusal.code is Reason.SERVER_OWNED
    ok = upd(created(), {"reporter_id": str(uuid.uuid4())}, pack(2000, 0), "~server", server=True)
    assert ok.refusal is None and ok.changed == {"reporter_id"}
    inc = merge(
        REGISTRY["incident"],
        None,
        record_id=RID,
        op=Op.CREATE,
        fields={"description": "x"},
        hlc=1,
        device="B",
    )
    assert inc.refusal is not None and inc.refusal.code is Reason.READ_ONLY


def test_unknown_fields_of_a_newer_app_are_ignored_not_refused() -> None:
    out = upd(created(), {"nope": 1, "severity": "low"}, pack(5000, 0), "B")
    assert out.refusal is None and out.changed == {"severity"}
    assert "nope" not in out.record.fields
    assert ignored_fields(HAZARD, {"nope": 1, "severity": "low"}) == ["nope"]


def test_validation_refusals() -> None:
    bad = upd(created(), {"location": {"type": "Point", "coordinates": [200, 0]}}, 5, "B")
    assert bad.refusal.code is Reason.INVALID_VALUE and bad.refusal.field == "location"
    assert upd(created(), {"status": "flying"}, 5, "B").refusal.code is Reason.INVALID_VALUE
    assert upd(None, {"description": "x"}, 5, "B").refusal.code is Reason.NOT_FOUND
    checks = REGISTRY["check_submission"]  # writable, not deletable
    assert upd(None, {}, 5, "B", op=Op.DELETE, spec=checks).refusal.code is Reason.NOT_DELETABLE
    media = REGISTRY["media"]  # read-only for devices
    assert upd(None, {}, 5, "B", op=Op.DELETE, spec=media).refusal.code is Reason.READ_ONLY


def test_delete_wins_over_earlier_concurrent_edit_which_is_kept() -> None:
    rec = created()
    edited = upd(rec, {"description": "edit"}, pack(5000, 0), "B").record
    edited.version = 2
    edited.fields["description"].version = 2
    out = upd(edited, {}, pack(4000, 0), "C", base=1, op=Op.DELETE)
    assert out.record.deleted and out.changed == {DELETED_FIELD}
    (c,) = out.conflicts
    assert (c.kind, c.field, c.loser_value, c.loser_device) == (
        ConflictKind.DELETED,
        "description",
        "edit",
        "B",
    )


def test_edit_after_delete_is_kept_not_applied() -> None:
    rec = created()
    gone = upd(rec, {}, pack(2000, 0), "C", op=Op.DELETE).record
    out = upd(gone, {"description": "late", "photo_ids": ["p9"]}, pack(9000, 0), "B")
    assert out.refusal is None and out.changed == set()
    assert sorted(out.lost) == ["description", "photo_ids"]
    assert {c.kind for c in out.conflicts} == {ConflictKind.DELETED}
    assert upd(gone, {}, pack(9000, 0), "D", op=Op.DELETE).changed == set()


def test_server_create_restores_a_deleted_record() -> None:
    gone = upd(created(), {}, pack(2000, 0), "C", op=Op.DELETE).record
    out = upd(gone, {"description": "back"}, pack(3000, 0), "~server", op=Op.CREATE, server=True)
    assert not out.record.deleted and out.record.fields["description"].value == "back"


def test_merge_is_deterministic_for_the_same_inputs() -> None:
    rec = created()
    a = upd(rec, {"description": "x", "photo_ids": ["p"]}, pack(7, 1), "B", base=0)
    b = upd(rec, {"description": "x", "photo_ids": ["p"]}, pack(7, 1), "B", base=0)
    assert a.record == b.record and a.conflicts == b.conflicts


def test_apply_local_is_idempotent() -> None:
    view = {"description": "a", "photo_ids": ["p1"]}
    once = apply_local(HAZARD, view, Op.UPDATE, {"description": "b", "photo_ids": ["p2"]})
    twice = apply_local(HAZARD, once, Op.UPDATE, {"description": "b", "photo_ids": ["p2"]})
    assert once == twice == {"description": "b", "photo_ids": ["p1", "p2"]}
    assert apply_local(HAZARD, view, Op.DELETE, {}) is None
    assert apply_local(HAZARD, None, Op.UPDATE, {"description": "x"}) is None


def test_server_write_over_a_device_value_is_not_a_conflict() -> None:
    # A REST edit or a conflict resolution is made against the current row: the value it
    # replaces was seen, so keeping it as a conflict would only be noise (it used to be kept).
    rec = created()
    out = upd(rec, {"description": "by dispatch"}, pack(2000, 0), "~server", base=0, server=True)
    assert out.record.fields["description"].value == "by dispatch"
    assert out.conflicts == [] and out.lost == []
