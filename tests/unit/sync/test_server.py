"""SyncServer over MemoryStorage: exactly-once, refusals, pull pages, evictions, resync."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from schemas.sync import (
    DEVICE_REUSED,
    AckStatus,
    Mutation,
    Op,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    Reason,
    UpgradeRequired,
)
from sync.hlc import pack
from sync.replica import Snapshot, apply_page, snapshot_checksum
from sync.server import DAY_MS
from tests.unit.sync.helpers import Rig, grid_id, hazard_fields

pytestmark = pytest.mark.anyio


def mut(
    seq: int,
    rid: uuid.UUID,
    fields: dict[str, Any],
    *,
    op: Op = Op.UPDATE,
    hlc: int | None = None,
    base: int = 0,
    entity: str = "hazard",
) -> Mutation:
    return Mutation(
        seq=seq,
        entity=entity,
        id=rid,
        hlc=hlc or pack(1_700_000_000_000, seq),
        op=op,
        base=base,
        fields=fields,
    )


async def push(rig: Rig, device: str, *muts: Mutation, user: object = "alice") -> PushResponse:
    resp = await rig.server().push(
        user, PushRequest(schema_version=1, device_id=device, mutations=list(muts))
    )
    assert isinstance(resp, PushResponse)
    return resp


async def pull(
    rig: Rig, cursors: dict[str, int], limit: int = 100, user: object = "alice"
) -> PullResponse:
    resp = await rig.server().pull(
        user, PullRequest(schema_version=1, cursors=cursors, limit=limit)
    )
    assert isinstance(resp, PullResponse)
    return resp


async def test_push_is_exactly_once_and_retry_changes_nothing(rig: Rig) -> None:
    rid = uuid.uuid4()
    m = mut(1, rid, hazard_fields(), op=Op.CREATE)
    first = await push(rig, "A", m, mut(2, rid, {"photo_ids": ["p1"]}))
    assert [a.status for a in first.acks] == [AckStatus.ACCEPTED, AckStatus.ACCEPTED]
    before = rig.storage.record("hazard", rid)
    again = await push(rig, "A", m, mut(2, rid, {"photo_ids": ["p1"]}))
    assert [a.status for a in again.acks] == [AckStatus.DUPLICATE, AckStatus.DUPLICATE]
    assert again.acks[1].version == first.acks[1].version
    assert rig.storage.record("hazard", rid) == before
    # the same seq twice inside one batch is a duplicate as well
    dup = await push(rig, "A", mut(3, rid, {"description": "t"}), mut(3, rid, {"description": "t"}))
    assert [a.status for a in dup.acks] == [AckStatus.ACCEPTED, AckStatus.DUPLICATE]
    assert rig.storage.record("hazard", rid).fields["description"].value == "t"


async def test_a_reused_seq_with_other_content_is_refused_not_dup(rig: Rig) -> None:
    """A device that restarted its numbering (reinstalled, wiped store, same id) must not have
    its new writes acknowledged and dropped."""
    rid = uuid.uuid4()
    first = mut(1, rid, hazard_fields(), op=Op.CREATE)
    await push(rig, "A", first)
    before = rig.storage.record("hazard", rid)
    outcomes = rig.storage.outcomes()
    for other in (
        mut(1, rid, {"description": "new"}),  # other fields
        mut(1, rid, hazard_fields(), op=Op.CREATE, hlc=pack(1_700_000_000_001, 0)),  # other HLC
        mut(1, uuid.uuid4(), hazard_fields(), op=Op.CREATE),  # another record
    ):
        (ack,) = (await push(rig, "A", other)).acks
        assert ack.status is AckStatus.REFUSED
        assert ack.refusal is not None and ack.refusal.code is Reason.RULE
        assert ack.refusal.rule == DEVICE_REUSED
        # nothing changed, and the stored outcome still answers a true retry
        assert rig.storage.record("hazard", rid) == before
        assert rig.storage.outcomes() == outcomes
    (retry,) = (await push(rig, "A", first)).acks
    assert retry.status is AckStatus.DUPLICATE
    # inside one batch too
    two = await push(rig, "A", mut(9, rid, {"description": "t"}), mut(9, rid, {"description": "u"}))
    assert [a.status for a in two.acks] == [AckStatus.ACCEPTED, AckStatus.REFUSED]
    assert rig.storage.record("hazard", rid).fields["description"].value == "t"


async def test_refusal_never_blocks_the_mutations_behind_it(rig: Rig) -> None:
    rid = uuid.uuid4()
    resp = await push(
        rig,
        "A",
        mut(1, rid, hazard_fields(), op=Op.CREATE),
        mut(2, rid, {"status": "closed"}),  # illegal jump
        mut(3, rid, {"reporter_id": str(uuid.uuid4())}),  # server-owned
        mut(4, rid, {"status": "verified"}),
        mut(5, uuid.uuid4(), {"description": "x"}),  # unknown record
        mut(6, rid, {"description": "x"}, entity="spaceship"),
    )
    codes = [(a.status, a.refusal.code if a.refusal else None) for a in resp.acks]
    assert codes == [
        (AckStatus.ACCEPTED, None),
        (AckStatus.REFUSED, Reason.ILLEGAL_TRANSITION),
        (AckStatus.REFUSED, Reason.SERVER_OWNED),
        (AckStatus.ACCEPTED, None),
        (AckStatus.REFUSED, Reason.NOT_FOUND),
        (AckStatus.REFUSED, Reason.UNKNOWN_ENTITY),
    ]
    assert rig.storage.record("hazard", rid).fields["status"].value == "verified"
    # a retry of a refused mutation gets the same refusal, not "duplicate"
    again = await push(rig, "A", mut(2, rid, {"status": "closed"}))
    assert again.acks[0].status is AckStatus.REFUSED
    assert again.acks[0].refusal.code is Reason.ILLEGAL_TRANSITION


async def test_authorization_hook_refuses_one_user(rig: Rig) -> None:
    rig.policy.forbidden_users.add("mallory")
    rid = uuid.uuid4()
    resp = await push(rig, "M", mut(1, rid, hazard_fields(), op=Op.CREATE), user="mallory")
    assert resp.acks[0].refusal.code is Reason.FORBIDDEN
    assert rig.storage.record("hazard", rid) is None


async def test_policy_exception_rolls_back_the_whole_batch(rig: Rig) -> None:
    class Boom(Exception):
        pass

    async def explode(tx: Any, ctx: Any, record: Any, changed: Any) -> None:
        raise Boom

    rig.policy.on_applied = explode  # type: ignore[method-assign]
    with pytest.raises(Boom):
        await push(rig, "A", mut(1, uuid.uuid4(), hazard_fields(), op=Op.CREATE))
    assert rig.storage.records() == [] and rig.storage.outcomes() == {}


async def test_concurrent_lww_keeps_the_loser_as_conflict_and_resolution_syncs(rig: Rig) -> None:
    rid = uuid.uuid4()
    v1 = (await push(rig, "A", mut(1, rid, hazard_fields(), op=Op.CREATE))).acks[0].version
    await push(
        rig, "B", mut(1, rid, {"description": "B's"}, hlc=pack(1_700_000_000_500, 0), base=v1)
    )
    resp = await push(
        rig, "C", mut(1, rid, {"description": "C's"}, hlc=pack(1_700_000_000_400, 0), base=v1)
    )
    assert resp.acks[0].lost == ["description"]
    (c,) = rig.storage.conflicts()
    assert (c.loser_value, c.winner_value, c.loser_device) == ("C's", "B's", "C")
    before = await pull(rig, {})
    cursor = before.scopes[0].cursor
    async with rig.storage.transaction() as tx:
        done = await rig.server().resolve_conflict(tx, c.id, take="loser", user="dispatcher")
    assert done.resolved
    after = await pull(rig, {"grid:g1": cursor})
    (page,) = after.scopes
    assert page.changes[0].fields == {"description": "C's"}


async def test_pull_pages_are_resumable_and_checksummed(rig: Rig) -> None:
    ids = [uuid.uuid4() for _ in range(25)]
    await push(rig, "A", *[mut(i + 1, r, hazard_fields(), op=Op.CREATE) for i, r in enumerate(ids)])
    snap: Snapshot = {}
    cursors: dict[str, int] = {}
    requests = 0
    while True:
        resp = await pull(rig, cursors, limit=10)
        requests += 1
        for page in resp.scopes:
            snap = apply_page(snap, page)
            cursors[page.scope] = page.cursor
            if not page.has_more:
                assert page.checksum == snapshot_checksum(snap)
        if not resp.has_more:
            break
    assert requests == 3 and len(snap) == 25
    assert snap == await rig.server().scope_snapshot("grid:g1")
    idle = await pull(rig, cursors)
    assert idle.scopes == [] and not idle.has_more  # nothing to do is one tiny answer


async def test_record_leaving_scope_is_evicted(rig: Rig) -> None:
    rid = uuid.uuid4()
    await push(rig, "A", mut(1, rid, hazard_fields(), op=Op.CREATE))
    first = await pull(rig, {})
    cursors = {p.scope: p.cursor for p in first.scopes}
    await rig.server().write("hazard", rid, {"grid_id": grid_id("g2")})
    resp = await pull(rig, cursors)
    (page,) = [p for p in resp.scopes if p.scope == "grid:g1"]
    assert [e.id for e in page.evictions] == [rid] and page.checksum == 0
    rig.policy.user_scope_map["bob"] = frozenset({"grid:g2"})
    bob = await pull(rig, {"grid:g1": page.cursor}, user="bob")
    assert bob.dropped == ["grid:g1"]
    assert [c.id for c in bob.scopes[0].changes] == [rid]
    assert bob.scopes[0].changes[0].fields["description"] == "Blocked exit"  # full record


async def test_old_cursor_gets_resync_with_snapshot(rig: Rig) -> None:
    keep, gone = uuid.uuid4(), uuid.uuid4()
    await push(
        rig,
        "A",
        mut(1, keep, hazard_fields(), op=Op.CREATE),
        mut(2, gone, hazard_fields(), op=Op.CREATE),
    )
    old = (await pull(rig, {})).scopes[0].cursor
    await push(rig, "A", mut(3, gone, {}, op=Op.DELETE))
    rig.clock.advance(31 * DAY_MS)
    await push(rig, "A", mut(4, keep, {"description": "new"}))
    horizon = await rig.server().purge_tombstones()
    assert horizon > old
    resp = await pull(rig, {"grid:g1": old})
    (page,) = resp.scopes
    assert page.resync and [c.id for c in page.changes] == [keep]
    assert page.changes[0].fields["description"] == "new"


async def test_tombstone_reaches_devices_within_horizon(rig: Rig) -> None:
    rid = uuid.uuid4()
    await push(rig, "A", mut(1, rid, hazard_fields(), op=Op.CREATE))
    cur = (await pull(rig, {})).scopes[0].cursor
    await push(rig, "B", mut(1, rid, {}, op=Op.DELETE))
    (page,) = (await pull(rig, {"grid:g1": cur})).scopes
    assert page.changes[0].deleted and not page.resync and page.checksum == 0


async def test_old_schema_gets_upgrade_answer(rig: Rig) -> None:
    rig._server = None
    from sync.server import SyncServer

    server = SyncServer(rig.storage, rig.policy, clock=rig.clock, min_schema_version=2)
    resp = await server.pull("alice", PullRequest(schema_version=1))
    assert isinstance(resp, UpgradeRequired) and resp.min_version == 2
    resp2 = await server.push("alice", PushRequest(schema_version=1, device_id="A"))
    assert isinstance(resp2, UpgradeRequired)


async def test_device_clock_far_ahead_is_clamped(rig: Rig) -> None:
    rid = uuid.uuid4()
    future = pack(rig.clock.now_ms() + 365 * DAY_MS, 0)
    await push(rig, "A", mut(1, rid, hazard_fields(), op=Op.CREATE, hlc=future))
    assert rig.storage.record("hazard", rid).fields["description"].hlc < future
    await push(
        rig,
        "B",
        mut(1, rid, {"description": "later edit"}, base=2, hlc=pack(rig.clock.now_ms() + 1000, 0)),
    )
    assert rig.storage.record("hazard", rid).fields["description"].value == "later edit"


async def test_server_owned_values_come_from_the_policy(rig: Rig) -> None:
    rid = uuid.uuid4()
    await push(rig, "A", mut(1, rid, hazard_fields(), op=Op.CREATE), user="carol")
    rec = rig.storage.record("hazard", rid)
    assert rec.fields["reporter_id"].value == str(uuid.uuid5(uuid.NAMESPACE_OID, "carol"))
    assert rec.scopes == frozenset({"grid:g1"})
