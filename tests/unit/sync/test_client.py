"""The background loop: backoff with jitter, events, surviving a server restart."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from schemas.sync import Op
from sync.client import EventKind, SyncClient, SyncEvent, UpgradeRequiredError
from sync.server import SyncServer
from sync.store import ClientStore
from tests.unit.sync.helpers import LocalTransport, Rig, hazard_fields

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
