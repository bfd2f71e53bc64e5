"""Zulip's invariant, for every change type: apply(snapshot_before, changes) == snapshot_after.

The device pulls a scope, the server changes, the device pulls the delta. Applying the delta to
what the device held must give exactly what a fresh device would get. Checked twice: with the
pure `apply_page` and with the SQLite `ClientStore` (which must implement the same thing).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from schemas.sync import Mutation, Op, PullRequest, PullResponse, PushRequest
from sync.client import SyncClient
from sync.hlc import pack
from sync.replica import Snapshot, apply_page, snapshot_checksum
from sync.server import DAY_MS
from sync.store import ClientStore
from tests.unit.sync.helpers import LocalTransport, Rig, grid_id, hazard_fields

pytestmark = pytest.mark.anyio
SCOPE = "grid:g1"
A, B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)

Change = Callable[[Rig], Awaitable[None]]
_seq = iter(range(100, 10_000))


async def _push(
    rig: Rig,
    rid: uuid.UUID,
    fields: dict[str, object],
    op: Op = Op.UPDATE,
    device: str = "D",
    hlc: int | None = None,
    base: int = 1 << 40,
) -> None:
    seq = next(_seq)
    await rig.server().push(
        "dev",
        PushRequest(
            schema_version=1,
            device_id=device,
            mutations=[
                Mutation(
                    seq=seq,
                    entity="hazard",
                    id=rid,
                    op=op,
                    base=base,
                    fields=fields,
                    hlc=hlc or pack(rig.clock.now_ms() + seq, 0),
                )
            ],
        ),
    )


async def create(rig: Rig) -> None:
    await _push(rig, uuid.UUID(int=0xC), hazard_fields(), Op.CREATE)


async def lww_update(rig: Rig) -> None:
    await _push(rig, A, {"description": "renamed", "severity": "low"})


async def status_step(rig: Rig) -> None:
    await _push(rig, A, {"status": "verified"})


async def append_items(rig: Rig) -> None:
    await _push(rig, A, {"photo_ids": ["m1", "m2"], "timeline": [{"id": "e1", "note": "seen"}]})


async def delete(rig: Rig) -> None:
    await _push(rig, A, {}, Op.DELETE)


async def server_owned(rig: Rig) -> None:
    await rig.server().write("hazard", A, {"status_reason": "checked by dispatch"})


async def leave_scope(rig: Rig) -> None:
    await rig.server().write("hazard", A, {"grid_id": grid_id("g2")})


async def enter_scope(rig: Rig) -> None:
    await rig.server().write("hazard", B, {"grid_id": grid_id("g1")})


async def losing_edit(rig: Rig) -> None:
    await _push(rig, A, {"description": "too old"}, hlc=1, base=0)


async def refused_edit(rig: Rig) -> None:
    await _push(rig, A, {"status": "closed"})


async def restore_deleted(rig: Rig) -> None:
    await _push(rig, A, {}, Op.DELETE)
    await _push(rig, A, {"description": "edit on deleted"}, device="E")
    (c,) = rig.storage.conflicts()
    async with rig.storage.transaction() as tx:
        await rig.server().resolve_conflict(tx, c.id, take="loser")


async def purge_and_resync(rig: Rig) -> None:
    await _push(rig, A, {}, Op.DELETE)
    rig.clock.advance(40 * DAY_MS)
    await create(rig)
    await rig.server().purge_tombstones()


async def coalesced_across_pages(rig: Rig) -> None:
    # C is created, D is created, then C changes again: C's feed entry moves behind D, so a
    # page cut after D must not make the device miss C's older fields (PullRequest.bases).
    await _push(rig, uuid.UUID(int=0xC), hazard_fields(), Op.CREATE)
    await _push(rig, uuid.UUID(int=0xD), hazard_fields(), Op.CREATE)
    await _push(rig, uuid.UUID(int=0xC), {"description": "again"})


CHANGES: list[Change] = [
    coalesced_across_pages,
    create,
    lww_update,
    status_step,
    append_items,
    delete,
    server_owned,
    leave_scope,
    enter_scope,
    losing_edit,
    refused_edit,
    restore_deleted,
    purge_and_resync,
]


async def _seed(rig: Rig) -> None:
    await _push(rig, A, hazard_fields(), Op.CREATE)
    await _push(rig, B, hazard_fields(), Op.CREATE)
    await rig.server().write("hazard", B, {"grid_id": grid_id("g3")})


async def _pull_all(rig: Rig, snap: Snapshot, cursor: int) -> tuple[Snapshot, int]:
    base = cursor  # the last checkpoint: fields changed after it are resent (PullRequest.bases)
    while True:
        resp = await rig.server().pull(
            "dev",
            PullRequest(schema_version=1, cursors={SCOPE: cursor}, bases={SCOPE: base}, limit=1),
        )
        assert isinstance(resp, PullResponse)
        for page in resp.scopes:
            if page.resync:
                # A multi-page snapshot replaces the scope once complete; start a fresh one.
                snap, cursor, base = {}, 0, 0
            snap = apply_page(snap, page)
            cursor = page.cursor
            if not page.has_more and page.checksum is not None:
                assert page.checksum == snapshot_checksum(snap)
        if not resp.has_more:
            return snap, cursor


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__ for c in CHANGES])
async def test_apply_before_plus_changes_equals_after(change: Change) -> None:
    rig = Rig()
    await _seed(rig)
    before, cursor = await _pull_all(rig, {}, 0)
    assert before == await rig.server().scope_snapshot(SCOPE)
    await change(rig)
    after, _ = await _pull_all(rig, before, cursor)
    assert after == await rig.server().scope_snapshot(SCOPE)


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__ for c in CHANGES])
async def test_client_store_matches_server_after_each_change(change: Change) -> None:
    rig = Rig()
    await _seed(rig)
    store = ClientStore()
    client = SyncClient(store, LocalTransport(rig, "dev"), pull_limit=1)
    await client.sync_once()
    await change(rig)
    await client.sync_once()
    expected = await rig.server().scope_snapshot(SCOPE)
    assert store.snapshot(SCOPE) == expected
    assert store.checksum(SCOPE) == snapshot_checksum(expected)
    assert store.log_entries("checksum_mismatch") == []
    visible = {("hazard", rid): v for rid, v in store.all("hazard").items()}
    assert visible == {k: v for k, (_, v) in expected.items()}
