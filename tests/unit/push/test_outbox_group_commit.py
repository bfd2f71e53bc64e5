"""The worker's group commit against the in-memory store: every accepted send is recorded once,
groups stay within their bound, the window commits on its own, and a crash at a commit resends
no more than the documented window."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest

from push.base import Channel, Delivered, DeliveryResult, PermanentFailure, PushMessage
from push.outbox import Delivery, InMemoryOutboxStore, JobState, OutboxWorker, PushJob
from tests.clocks import ManualClock


class WorkerKilled(Exception):
    """The process died at this point (raised, so the test can look at what survived)."""


class SlowStore(InMemoryOutboxStore):
    """Commits take a little while, as a database's do, and fail on the `crash_at`-th one."""

    def __init__(self, clock: ManualClock, crash_at: int | None = None) -> None:
        super().__init__(clock)
        self.groups: list[list[str]] = []
        self.crash_at = crash_at
        self._committed: anyio.Event | None = None

    async def commit_deliveries(self, deliveries: Sequence[Delivery]) -> set[str]:
        await anyio.sleep(0.001)
        if self.crash_at is not None and len(self.groups) + 1 == self.crash_at:
            raise WorkerKilled("worker killed before the group committed")
        self.groups.append([d.job.job_id for d in deliveries])
        closed = await super().commit_deliveries(deliveries)
        if self._committed is not None:
            self._committed.set()
            self._committed = None
        return closed

    async def recorded(self, event_id: str, device_id: str) -> None:
        """Return once (event_id, device_id) has a delivery record."""
        while (event_id, device_id) not in self.deliveries:
            if self._committed is None:
                self._committed = anyio.Event()
            await self._committed.wait()


class Provider:
    """Stands in for a push service at the PushSender boundary (unit level): accepts everything,
    after an optional hook, and counts what it accepted."""

    channel = Channel.FCM

    def __init__(self, before: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.accepted: list[str] = []
        self.before = before
        self.results: dict[str, DeliveryResult] = {}

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        if self.before is not None:
            await self.before(address)
        await anyio.lowlevel.checkpoint()
        result = self.results.get(address, Delivered(provider_id=f"m-{address}"))
        if isinstance(result, Delivered):
            self.accepted.append(address)
        return result


def _fill(store: InMemoryOutboxStore, n: int, *, address: str | None = None) -> list[str]:
    return [
        store.enqueue(
            event_id=f"ev-{i}",
            device_id=f"dev-{i}",
            channel=Channel.FCM,
            address=address or f"tok-{i}",
            message=PushMessage(data={"event_id": f"ev-{i}"}),
        )
        for i in range(n)
    ]


def _worker(
    store: InMemoryOutboxStore, provider: Provider, clock: ManualClock, **kw: object
) -> OutboxWorker:
    return OutboxWorker(
        store,
        {Channel.FCM: provider},
        clock=clock,
        rng=random.Random(5),
        **kw,  # type: ignore[arg-type]
    )


async def _drain(worker: OutboxWorker) -> int:
    commits = 0
    while (report := await worker.run_once()).claimed:
        commits += report.commits
    return commits


@pytest.mark.parametrize(("group", "lanes"), [(1, 1), (1, 8), (4, 8), (16, 8), (32, 4)])
def test_a_batch_is_recorded_once_per_job_in_bounded_groups(group: int, lanes: int) -> None:
    clock = ManualClock()
    store = SlowStore(clock)
    worst = 0

    async def check(_address: str) -> None:
        # Accepted but not yet recorded, seen from the provider each time it is asked again.
        nonlocal worst
        worst = max(worst, len(provider.accepted) - len(store.deliveries))

    provider = Provider(check)
    jobs = _fill(store, 100)
    worker = _worker(
        store, provider, clock, concurrency=lanes, commit_group=group, commit_window_s=60
    )
    commits = anyio.run(_drain, worker)

    assert all(store.state_of(job) is JobState.DELIVERED for job in jobs)
    assert sorted(provider.accepted) == sorted(f"tok-{i}" for i in range(100))
    assert len(store.deliveries) == 100
    assert commits == len(store.groups) and sum(map(len, store.groups)) == 100
    # Only full groups and the batch's end commit here (the window is a minute).
    assert commits <= math.ceil(100 / group)
    assert max(map(len, store.groups)) <= group - 1 + lanes
    assert worst <= group - 1 + lanes


def test_the_window_commits_while_the_batch_is_still_sending() -> None:
    clock = ManualClock()
    store = SlowStore(clock)

    async def previous_is_recorded(address: str) -> None:
        # The group can never fill (1,000) and the batch is not over: only the window commits.
        i = int(address.removeprefix("tok-"))
        if i:
            with anyio.fail_after(5):
                await store.recorded(f"ev-{i - 1}", f"dev-{i - 1}")

    provider = Provider(previous_is_recorded)
    _fill(store, 5)
    worker = _worker(
        store, provider, clock, concurrency=1, commit_group=1000, commit_window_s=0.002
    )
    report = anyio.run(worker.run_once)
    assert report.delivered == 5
    assert [len(group) for group in store.groups] == [1] * 5


def test_commit_group_one_records_each_send_before_the_lane_sends_again() -> None:
    clock = ManualClock()
    store = SlowStore(clock)

    async def all_recorded(_address: str) -> None:
        assert len(store.deliveries) == len(provider.accepted)

    provider = Provider(all_recorded)
    _fill(store, 20)
    worker = _worker(store, provider, clock, concurrency=1, commit_group=1, commit_window_s=60)
    assert anyio.run(worker.run_once).delivered == 20
    assert len(store.groups) == 20


@pytest.mark.parametrize(("group", "lanes"), [(1, 4), (8, 4), (32, 8)])
def test_a_crash_before_a_group_commits_resends_at_most_the_window(group: int, lanes: int) -> None:
    clock = ManualClock()
    store = SlowStore(clock, crash_at=3)
    provider = Provider()
    jobs = _fill(store, 200)
    crashed = False

    async def crash_run() -> None:
        nonlocal crashed
        worker = _worker(
            store, provider, clock, concurrency=lanes, commit_group=group, commit_window_s=60
        )
        try:
            await worker.run_once()
        except* WorkerKilled:
            crashed = True

    anyio.run(crash_run)
    assert crashed
    committed = {job for group_ in store.groups for job in group_}
    sent_before = len(provider.accepted)
    unrecorded = sent_before - len(store.deliveries)
    assert 0 < unrecorded <= group - 1 + lanes  # the documented window, and it is real

    # A new worker after the dead one's leases ran out.
    store.crash_at = None
    clock.advance(61)
    anyio.run(_drain, _worker(store, provider, clock, concurrency=lanes, commit_group=group))

    assert all(store.state_of(job) is JobState.DELIVERED for job in jobs)
    assert len(store.deliveries) == 200
    resent = len(provider.accepted) - 200
    assert resent == unrecorded  # exactly the unrecorded sends went out twice
    tokens = {store.rows[job].address for job in committed}
    assert all(provider.accepted.count(token) == 1 for token in tokens)


def test_a_job_whose_lease_was_taken_over_is_recorded_but_not_closed_by_the_old_worker() -> None:
    clock = ManualClock()
    store = SlowStore(clock)
    [job] = _fill(store, 1)
    taken: list[PushJob] = []

    async def lease_runs_out_meanwhile(_address: str) -> None:
        if not taken:
            clock.advance(61)  # this send outlives the lease; another worker claims the job
            taken.extend(
                await store.claim_due(now=clock(), limit=10, lease_for=timedelta(seconds=60))
            )

    provider = Provider(lease_runs_out_meanwhile)
    report = anyio.run(_worker(store, provider, clock).run_once)

    assert (report.delivered, report.lost_leases) == (0, 1)
    assert ("ev-0", "dev-0") in store.deliveries  # it *was* delivered: the record stays
    row = store.rows[job]
    assert row.state is JobState.PENDING and row.lease_token == taken[0].lease_token

    # Whoever holds the job next finds the record and closes it without sending again.
    clock.advance(61)
    again = anyio.run(_worker(store, provider, clock).run_once)
    assert (again.claimed, again.skipped_duplicates) == (1, 1)
    assert provider.accepted == ["tok-0"]
    assert store.state_of(job) is JobState.DELIVERED


def test_a_dead_token_does_not_cancel_an_accepted_send_still_waiting_for_its_group() -> None:
    clock = ManualClock()
    store = SlowStore(clock)
    store.register("dev-0", Channel.FCM, "shared")
    delivered, dead = _fill(store, 2, address="shared")
    provider = Provider()

    async def second_is_unregistered(_address: str) -> None:
        if provider.accepted:
            provider.results["shared"] = PermanentFailure(dead_token=True, code="UNREGISTERED")

    provider.before = second_is_unregistered
    worker = _worker(store, provider, clock, concurrency=1, commit_window_s=60)
    report = anyio.run(worker.run_once)

    assert (report.delivered, report.dead, report.pruned_addresses) == (1, 1, 1)
    assert store.state_of(delivered) is JobState.DELIVERED  # committed before the prune
    assert store.state_of(dead) is JobState.DEAD
    assert store.registrations["dev-0"] == {}


def test_commit_settings_are_checked() -> None:
    store = InMemoryOutboxStore()
    with pytest.raises(ValueError, match="commit_group"):
        OutboxWorker(store, {}, commit_group=0)
    with pytest.raises(ValueError, match="commit_window_s"):
        OutboxWorker(store, {}, commit_window_s=-1)
