"""The background loop: backoff with jitter, events, surviving a server restart; pull pages
fetched ahead."""

from __future__ import annotations

import asyncio
import gc
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.sync import Op, PullReply, PullRequest, PullResponse, PushReply, PushRequest
from sync.client import (
    EventKind,
    SyncClient,
    SyncEvent,
    TransportError,
    UpgradeRequiredError,
)
from sync.server import SyncServer
from sync.store import ClientStore, PullReport
from tests.unit.sync.helpers import LocalTransport, Rig, grid_id, hazard_fields

pytestmark = pytest.mark.anyio


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    client = SyncClient(ClientStore(), None, rng=random.Random(1), backoff_cap_s=60)  # type: ignore[arg-type]
    delays = []
    for n in range(10):
        client.failures = n
        delays.append(client.backoff_delay())
    assert all(0.5 * min(60, 2**n) <= d <= min(60, 2**n) for n, d in enumerate(delays))
    assert delays[9] <= 60 and delays[0] < delays[5]


async def test_run_backs_off_then_syncs_and_reports_progress(rig: Rig) -> None:
    failures = {"n": 3}

    def drop(kind: str, when: str) -> bool:
        if failures["n"] > 0:
            failures["n"] -= 1
            rig.restart()  # and the server restarts meanwhile
            return True
        return False

    events: list[SyncEvent] = []
    slept: list[float] = []
    stop = asyncio.Event()

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    def on_event(e: SyncEvent) -> None:
        events.append(e)
        if e.kind is EventKind.DONE:
            stop.set()

    store = ClientStore()
    for _ in range(3):
        store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    client = SyncClient(
        store,
        LocalTransport(rig, "a", drop),
        on_event=on_event,
        sleep=fake_sleep,
        rng=random.Random(0),
    )
    await asyncio.wait_for(client.run(stop, interval_s=0.01), timeout=5)
    assert len(slept) == 3 and slept[0] < slept[2]
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.ERROR) == 3 and kinds[-1] is EventKind.DONE
    pulled = [e for e in events if e.kind is EventKind.PULLED][-1]
    assert pulled.counts == {"grid:g1": 3}
    assert store.pending_count() == 0 and rig.restarts == 3


async def test_run_waits_at_least_as_long_as_a_shedding_server_says(rig: Rig) -> None:
    class Shed(LocalTransport):
        async def pull(self, req: PullRequest) -> PullReply:
            if not slept:  # the first round is shed (503 + Retry-After: 45)
                busy = TransportError("pull: HTTP 503")
                busy.retry_after_s = 45.0
                raise busy
            return await super().pull(req)

    slept: list[float] = []
    stop = asyncio.Event()

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    def on_event(e: SyncEvent) -> None:
        if e.kind is EventKind.DONE:
            stop.set()

    client = SyncClient(
        ClientStore(), Shed(rig, "a"), on_event=on_event, sleep=fake_sleep, rng=random.Random(0)
    )
    await asyncio.wait_for(client.run(stop, interval_s=0.01), timeout=5)
    # Backoff alone would have waited 1-2 s after one failure.
    assert slept == [45.0]


async def test_notify_wakes_the_loop(rig: Rig) -> None:
    stop = asyncio.Event()
    done = asyncio.Event()
    count = {"n": 0}

    def on_event(e: SyncEvent) -> None:
        if e.kind is EventKind.DONE:
            count["n"] += 1
            done.set()

    client = SyncClient(ClientStore(), LocalTransport(rig, "a"), on_event=on_event)
    task = asyncio.create_task(client.run(stop, interval_s=3600))
    await asyncio.wait_for(done.wait(), 2)
    done.clear()
    client.notify()
    await asyncio.wait_for(done.wait(), 2)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert count["n"] == 2


async def test_upgrade_required_stops_the_loop(rig: Rig) -> None:
    rig._server = SyncServer(rig.storage, rig.policy, clock=rig.clock, min_schema_version=9)
    kinds: list[EventKind] = []
    client = SyncClient(
        ClientStore(), LocalTransport(rig, "a"), on_event=lambda e: kinds.append(e.kind)
    )
    await asyncio.wait_for(client.run(asyncio.Event()), 2)
    assert EventKind.UPGRADE_REQUIRED in kinds
    with pytest.raises(UpgradeRequiredError):
        await client.sync_once()


class AuditedTransport(LocalTransport):
    """Remembers which request produced each pull answer."""

    def __init__(self, rig: Rig, user: object) -> None:
        super().__init__(rig, user)
        self.asked: list[tuple[PullReply, PullRequest]] = []

    async def pull(self, req: PullRequest) -> PullReply:
        reply = await super().pull(req)
        self.asked.append((reply, req))
        return reply

    def request_of(self, reply: PullResponse) -> PullRequest:
        return next(req for r, req in self.asked if r is reply)


def audit_pulls(client: SyncClient, transport: AuditedTransport) -> list[PullRequest]:
    """Check, before every apply, that the answer answers exactly the request a sequential
    client would send now (built from the store); returns those requests."""
    applied: list[PullRequest] = []
    apply = client.store.apply_pull

    def checked(reply: PullResponse) -> PullReport:
        asked = transport.request_of(reply)
        assert asked == client._pull_request()
        applied.append(asked)
        return apply(reply)

    client.store.apply_pull = checked  # type: ignore[method-assign]
    return applied


@given(
    grids=st.lists(st.sampled_from(["g1", "g2", "g3"]), min_size=1, max_size=25),
    limit=st.integers(1, 6),
    rounds=st.lists(
        st.tuples(
            st.lists(st.integers(0, 24), max_size=6),  # records edited
            st.lists(st.integers(0, 24), max_size=3),  # records deleted
            st.frozensets(st.sampled_from(["grid:g1", "grid:g2", "grid:g3"]), min_size=1),
        ),
        min_size=1,
        max_size=4,
    ),
)
@settings(max_examples=60, deadline=None)
def test_pages_fetched_ahead_are_the_pages_a_sequential_pull_asks_for(
    grids: list[str], limit: int, rounds: list[tuple[list[int], list[int], frozenset[str]]]
) -> None:
    """Pull pages are fetched one ahead with predicted cursors and bases; whatever the edits,
    deletes and scope changes between syncs, every applied answer was asked with the request
    the store would have sent, no early request is wasted, and the device ends equal to the
    server."""

    async def run() -> None:
        rig = Rig()
        writer = SyncClient(ClientStore(), LocalTransport(rig, "w"))
        ids = [uuid.uuid4() for _ in grids]
        for rid, g in zip(ids, grids, strict=True):
            writer.store.write("hazard", rid, hazard_fields(category=g), op=Op.CREATE)
        await writer.sync_once()
        for rid, g in zip(ids, grids, strict=True):
            await rig.server().write("hazard", rid, {"grid_id": grid_id(g)})
        transport = AuditedTransport(rig, "r")
        reader = SyncClient(ClientStore(), transport, pull_limit=limit)
        applied = audit_pulls(reader, transport)
        for edited, deleted, scopes in rounds:
            rig.policy.user_scope_map["r"] = scopes
            result = await reader.sync_once()
            assert transport.requests == result.requests  # every page fetched ahead was used
            for scope in scopes:
                assert reader.store.snapshot(scope) == await rig.server().scope_snapshot(scope)
            for k in edited:
                if k < len(ids) and writer.store.get("hazard", ids[k]) is not None:
                    writer.store.write("hazard", ids[k], {"description": f"edit {k}"})
            for k in deleted:
                if k < len(ids) and writer.store.get("hazard", ids[k]) is not None:
                    writer.store.write("hazard", ids[k], {}, op=Op.DELETE)
            await writer.sync_once()
            transport.requests = 0
        assert len(applied) >= 1

    asyncio.run(run())


async def test_a_page_fetched_ahead_is_dropped_when_the_store_resets_a_scope(rig: Rig) -> None:
    """A checksum mismatch resets the scope's cursor: the answer fetched ahead with the old
    prediction must not be applied; the scope is fetched again from 0."""
    writer = SyncClient(ClientStore(), LocalTransport(rig, "w"))
    for _ in range(4):
        writer.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await writer.sync_once()
    transport = AuditedTransport(rig, "r")
    reader = SyncClient(ClientStore(), transport, pull_limit=2)
    applied = audit_pulls(reader, transport)
    await reader.sync_once()
    reader.store._db.execute("UPDATE scopes SET checksum=12345")  # a bad flash write
    # Next sync: grid:g1's feed ends in the first answer (checksum checked, mismatch) while
    # grid:g2 still has more, so the second answer was already asked for with g1's new cursor.
    rig.policy.user_scope_map["r"] = frozenset({"grid:g1", "grid:g2"})
    writer.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    for _ in range(3):
        rid = uuid.uuid4()
        writer.store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
        await writer.sync_once()
        await rig.server().write("hazard", rid, {"grid_id": grid_id("g2")})
    await writer.sync_once()
    applied.clear()
    result = await reader.sync_once()
    assert reader.store.log_entries("checksum_mismatch")
    assert transport.requests > result.requests  # the early request was thrown away
    assert any(req.cursors.get("grid:g1", -1) == 0 for req in applied[1:])  # refetched
    for scope in ("grid:g1", "grid:g2"):
        assert reader.store.snapshot(scope) == await rig.server().scope_snapshot(scope)


class CollectorWatch(LocalTransport):
    """Notes whether the cyclic garbage collector ran while each request was answered."""

    def __init__(self, rig: Rig, user: object) -> None:
        super().__init__(rig, user)
        self.enabled: list[bool] = []

    async def push(self, req: PushRequest) -> PushReply:
        self.enabled.append(gc.isenabled())
        return await super().push(req)

    async def pull(self, req: PullRequest) -> PullReply:
        self.enabled.append(gc.isenabled())
        return await super().pull(req)


async def test_a_sync_enters_the_collector_pause_once(rig: Rig, pauses: list[int]) -> None:
    """`sync_once` pauses the collector once for its push and all its pull pages (the pull it
    runs does not enter it again); a pull on its own enters it once."""
    writer = SyncClient(ClientStore(), LocalTransport(rig, "w"))
    for _ in range(3):
        writer.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await writer.sync_once()
    reader = SyncClient(ClientStore(), LocalTransport(rig, "r"), pull_limit=1)
    reader.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    pauses.clear()
    result = await reader.sync_once()
    assert result.requests >= 3 and pauses == [1]
    await reader.pull()
    assert pauses == [1, 1]


async def test_the_collector_is_paused_while_a_sync_runs_and_restored_after(rig: Rig) -> None:
    """A sync's pages make no reference cycles; the collector's passes over them were a third
    of a 100,000-record pull (sync.client.collector_paused). It pauses during push and pull,
    resumes after, also when the sync fails, and stays off when the app had turned it off."""
    writer = SyncClient(ClientStore(), LocalTransport(rig, "w"))
    for _ in range(3):
        writer.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await writer.sync_once()
    assert gc.isenabled()
    transport = CollectorWatch(rig, "r")
    reader = SyncClient(ClientStore(), transport, pull_limit=1)
    reader.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await reader.sync_once()
    await reader.pull()
    assert len(transport.enabled) >= 5 and not any(transport.enabled)
    assert gc.isenabled()

    # Two syncs at once (two accounts' stores in one process): on until both end.
    slow = asyncio.Event()

    class Held(CollectorWatch):
        async def pull(self, req: PullRequest) -> PullReply:
            await slow.wait()
            return await super().pull(req)

    held = asyncio.ensure_future(SyncClient(ClientStore(), Held(rig, "h")).pull())
    await asyncio.sleep(0)
    await SyncClient(ClientStore(), LocalTransport(rig, "q")).pull()
    assert not gc.isenabled()
    slow.set()
    await held
    assert gc.isenabled()

    def fail(kind: str, when: str) -> bool:
        return True

    with pytest.raises(TransportError):
        await SyncClient(ClientStore(), LocalTransport(rig, "f", fail)).sync_once()
    assert gc.isenabled()

    gc.disable()
    try:
        await SyncClient(ClientStore(), LocalTransport(rig, "o")).pull()
        assert not gc.isenabled()
    finally:
        gc.enable()
