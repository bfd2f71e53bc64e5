"""Retry policy bounds and the outbox worker's decisions, against a scripted provider."""

from __future__ import annotations

import random
from collections import defaultdict, deque
from datetime import timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from push.base import (
    Channel,
    Delivered,
    DeliveryResult,
    PermanentFailure,
    PushMessage,
    RetryAfter,
    TransientFailure,
)
from push.outbox import InMemoryOutboxStore, JobState, OutboxWorker, RetryPolicy
from tests.clocks import ManualClock

policies = st.builds(
    RetryPolicy,
    base_seconds=st.floats(0.01, 10),
    cap_seconds=st.floats(0.1, 3600),
    max_attempts=st.integers(1, 20),
    retry_after_jitter_seconds=st.floats(0, 5),
)


@given(policies, st.integers(1, 10_000), st.integers(0, 2**32))
def test_backoff_is_full_jitter_within_the_capped_exponential(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    delay = policy.backoff(attempt, random.Random(seed))
    ceiling = min(policy.cap_seconds, policy.base_seconds * 2.0 ** min(attempt - 1, 64))
    assert 0.0 <= delay <= ceiling


@given(policies, st.floats(0, 86_400), st.integers(0, 2**32))
def test_retry_after_is_never_shortened(policy: RetryPolicy, seconds: float, seed: int) -> None:
    delay = policy.after_retry_after(seconds, random.Random(seed))
    assert seconds <= delay <= seconds + policy.retry_after_jitter_seconds


def test_backoff_spreads_out() -> None:
    # Full jitter: delays for the same attempt differ, and their mean grows with the attempt.
    policy = RetryPolicy(base_seconds=1, cap_seconds=1000)
    rng = random.Random(7)
    means = [sum(policy.backoff(n, rng) for _ in range(2000)) / 2000 for n in (1, 4, 8)]
    assert means[0] < means[1] < means[2]
    assert means[2] == pytest.approx(64, rel=0.1)  # uniform(0, 128) has mean 64


class ScriptedProvider:
    """Stands in for a push service at the PushSender boundary (unit level only)."""

    channel = Channel.FCM

    def __init__(self) -> None:
        self.script: dict[str, deque[DeliveryResult]] = defaultdict(deque)
        self.sent: list[tuple[str, PushMessage]] = []

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        self.sent.append((address, message))
        queue = self.script[address]
        return queue.popleft() if queue else Delivered(provider_id=f"m{len(self.sent)}")


def _setup(policy: RetryPolicy | None = None):
    clock = ManualClock()
    store = InMemoryOutboxStore(clock)
    provider = ScriptedProvider()
    worker = OutboxWorker(
        store, {Channel.FCM: provider}, policy=policy, clock=clock, rng=random.Random(1)
    )
    return clock, store, provider, worker


def _enqueue(store: InMemoryOutboxStore, event: str, device: str, token: str) -> str:
    store.register(device, Channel.FCM, token)
    return store.enqueue(
        event_id=event,
        device_id=device,
        channel=Channel.FCM,
        address=token,
        message=PushMessage(data={"event_id": event}),
    )


def test_transient_failures_back_off_then_give_up() -> None:
    policy = RetryPolicy(base_seconds=1, cap_seconds=10, max_attempts=3)
    clock, store, provider, worker = _setup(policy)
    job = _enqueue(store, "e1", "d1", "tok")
    provider.script["tok"].extend([TransientFailure("INTERNAL")] * 5)

    async def main() -> None:
        for _ in range(3):
            report = await worker.run_once()
            assert report.claimed == 1
            row = store.rows[job]
            if row.state is JobState.PENDING:
                assert clock.now <= row.not_before <= clock.now + timedelta(seconds=10)
                assert (await worker.run_once()).claimed == 0  # not due yet
            clock.advance(11)

    anyio.run(main)
    assert store.state_of(job) is JobState.DEAD
    assert store.rows[job].attempts == 3
    assert len(provider.sent) == 3


def test_retry_after_is_honoured_to_the_second() -> None:
    clock, store, provider, worker = _setup(RetryPolicy(retry_after_jitter_seconds=0.5))
    job = _enqueue(store, "e1", "d1", "tok")
    provider.script["tok"].append(RetryAfter(30, "QUOTA_EXCEEDED"))

    async def main() -> None:
        await worker.run_once()
        assert store.rows[job].not_before >= clock.now + timedelta(seconds=30)
        clock.advance(29.9)
        assert (await worker.run_once()).claimed == 0
        clock.advance(0.7)
        assert (await worker.run_once()).delivered == 1

    anyio.run(main)
    assert len(provider.sent) == 2


def test_dead_token_prunes_the_registration_and_queued_jobs_but_not_a_new_token() -> None:
    _clock, store, provider, worker = _setup()
    first = _enqueue(store, "e1", "d1", "old")
    second = _enqueue(store, "e2", "d1", "old")
    provider.script["old"].append(PermanentFailure(dead_token=True, code="UNREGISTERED"))
    store.enqueue(  # a second device shares nothing with the dead token
        event_id="e1", device_id="d2", channel=Channel.FCM, address="fine",
        message=PushMessage(data={}),
    )  # fmt: skip

    async def main() -> None:
        store.rows[second].not_before += timedelta(days=1)  # queued behind, not due
        report = await worker.run_once()
        assert report.pruned_addresses == 1

    anyio.run(main)
    assert store.state_of(first) is JobState.DEAD
    assert store.state_of(second) is JobState.DEAD  # cancelled: it would fail the same way
    assert "d1" in store.registrations and Channel.FCM not in store.registrations["d1"]
    # A message-level failure leaves the token alone.
    store.register("d3", Channel.FCM, "t3")
    _enqueue(store, "e3", "d3", "t3")
    provider.script["t3"].append(PermanentFailure(dead_token=False, code="INVALID_ARGUMENT"))
    anyio.run(worker.run_once)
    assert store.registrations["d3"] == {Channel.FCM: "t3"}


def test_one_event_reaches_one_device_once_even_if_enqueued_twice() -> None:
    _clock, store, provider, worker = _setup()
    a = _enqueue(store, "e1", "d1", "tok")
    b = _enqueue(store, "e1", "d1", "tok")
    assert a == b

    anyio.run(worker.run_once)
    anyio.run(worker.run_once)
    assert len(provider.sent) == 1


def test_a_lost_lease_does_not_overwrite_the_new_owner() -> None:
    clock, store, _provider, worker = _setup()
    job = _enqueue(store, "e1", "d1", "tok")

    async def main() -> None:
        [stale] = await store.claim_due(now=clock(), limit=10, lease_for=timedelta(seconds=5))
        clock.advance(6)  # lease ran out; another worker takes the job over and delivers it
        assert (await worker.run_once()).delivered == 1
        assert not await store.schedule_retry(stale, at=clock(), attempts=1, error="late")
        assert not await store.mark_dead(stale, attempts=1, error="late")

    anyio.run(main)
    assert store.state_of(job) is JobState.DELIVERED


def test_a_sender_that_raises_costs_an_attempt_not_the_batch() -> None:
    _clock, store, provider, worker = _setup()

    class Broken:
        channel = Channel.WEBPUSH

        async def send(self, address: str, message: PushMessage) -> DeliveryResult:
            raise RuntimeError("adapter bug")

    worker = OutboxWorker(
        store,
        {Channel.FCM: provider, Channel.WEBPUSH: Broken()},
        clock=_clock,
        rng=random.Random(1),
    )
    ok = _enqueue(store, "e1", "d1", "tok")
    bad = store.enqueue(
        event_id="e1", device_id="d2", channel=Channel.WEBPUSH, address="{}",
        message=PushMessage(),
    )  # fmt: skip
    report = anyio.run(worker.run_once)
    assert report.delivered == 1 and report.retried == 1
    assert store.state_of(ok) is JobState.DELIVERED
    assert store.state_of(bad) is JobState.PENDING and store.rows[bad].attempts == 1
