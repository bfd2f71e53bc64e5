"""The real firebase-admin SDK against the FCM v1 stand-in, through the outbox worker."""

from __future__ import annotations

import random
from datetime import timedelta

import anyio
import pytest
import requests

from push.base import Channel, Delivered, PermanentFailure, PushMessage, TransientFailure
from push.fcm import FcmSender
from push.outbox import InMemoryOutboxStore, JobState, OutboxWorker, PushJob, RetryPolicy
from tests.clocks import ManualClock
from tests.integration.push.conftest import PROJECT
from tests.peers.fcm_standin import (
    INTERNAL,
    INVALID_PAYLOAD,
    INVALID_TOKEN,
    SENDER_ID_MISMATCH,
    UNREGISTERED,
    FcmReply,
    FcmStandIn,
    quota_exceeded,
    unavailable,
)

TASK = PushMessage(
    data={"event_id": "ev-1", "kind": "task.assigned", "task_id": "t-9"},
    collapse_key="ev-1",
    ttl_seconds=600,
)


def _worker(store: InMemoryOutboxStore, sender: FcmSender, clock: ManualClock, **kw: object):
    return OutboxWorker(
        store,
        {Channel.FCM: sender},
        clock=clock,
        rng=random.Random(3),
        **kw,  # type: ignore[arg-type]
    )


def _job(store: InMemoryOutboxStore, event: str, device: str, token: str) -> str:
    store.register(device, Channel.FCM, token)
    return store.enqueue(
        event_id=event,
        device_id=device,
        channel=Channel.FCM,
        address=token,
        message=PushMessage(data={**TASK.data, "event_id": event}, collapse_key=event),
    )


def test_sdk_sends_a_data_message_the_way_fcm_expects(
    fcm: FcmStandIn, fcm_sender: FcmSender
) -> None:
    result = fcm_sender.send_sync("device-token-1", TASK)
    assert isinstance(result, Delivered)
    assert result.provider_id == f"projects/{PROJECT}/messages/0:1"
    [received] = fcm.messages()
    assert received.project == PROJECT
    assert received.authorization is None  # anonymous: no token was ever fetched
    assert received.message == {
        "token": "device-token-1",
        "data": TASK.data,
        "android": {"priority": "high", "ttl": "600s", "collapse_key": "ev-1"},
    }


def test_stand_in_rejects_what_fcm_rejects(fcm: FcmStandIn, fcm_sender: FcmSender) -> None:
    bad_bodies = [
        {"message": {"token": "a", "topic": "b"}},  # two targets
        {"message": {"data": {"n": "1"}}},  # no target
        {"message": {"token": "a", "data": {"n": 1}}},  # non-string data value
        {"message": {"token": "a", "android": {"ttl": "10"}}},  # ttl without the "s"
        {"message": {"token": "a", "surprise": True}},  # unknown field
    ]
    for body in bad_bodies:
        response = requests.post(fcm_sender.send_url, json=body, timeout=5)
        assert response.status_code == 400, body
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fcm.messages() == []


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (UNREGISTERED, "UNREGISTERED"),
        (SENDER_ID_MISMATCH, "SENDER_ID_MISMATCH"),
        (INVALID_TOKEN, "INVALID_ARGUMENT"),
    ],
)
def test_dead_tokens_are_pruned_at_once(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock, reply: FcmReply, code: str
) -> None:
    store = InMemoryOutboxStore(clock)
    job = _job(store, "ev-1", "phone-1", "dead-token")
    queued = _job(store, "ev-2", "phone-1", "dead-token")
    store.rows[queued].not_before += timedelta(hours=1)
    fcm.always("dead-token", reply)

    report = anyio.run(_worker(store, fcm_sender, clock).run_once)
    assert report.pruned_addresses == 1 and report.errors == {code: 1}
    assert store.state_of(job) is JobState.DEAD
    assert store.state_of(queued) is JobState.DEAD
    assert store.registrations["phone-1"] == {}
    assert fcm.request_count == 1  # pruned after one answer, no retries


def test_bad_payload_is_dead_but_the_token_is_kept(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock
) -> None:
    store = InMemoryOutboxStore(clock)
    job = _job(store, "ev-1", "phone-1", "good-token")
    fcm.script("good-token", INVALID_PAYLOAD)
    anyio.run(_worker(store, fcm_sender, clock).run_once)
    assert store.state_of(job) is JobState.DEAD
    assert store.registrations["phone-1"] == {Channel.FCM: "good-token"}


def test_429_retry_after_is_honoured_and_the_retry_succeeds(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock
) -> None:
    store = InMemoryOutboxStore(clock)
    job = _job(store, "ev-1", "phone-1", "busy-token")
    fcm.script("busy-token", quota_exceeded("20"))
    worker = _worker(store, fcm_sender, clock, policy=RetryPolicy(retry_after_jitter_seconds=1))

    async def main() -> None:
        first = await worker.run_once()
        assert first.retried == 1 and first.errors == {"QUOTA_EXCEEDED": 1}
        clock.advance(19.5)
        assert (await worker.run_once()).claimed == 0  # the SDK does not retry 429, nor do we early
        clock.advance(2)
        assert (await worker.run_once()).delivered == 1

    anyio.run(main)
    assert fcm.request_count == 2
    assert fcm.tokens() == ["busy-token"]
    assert store.state_of(job) is JobState.DELIVERED
    assert store.rows[job].attempts == 1  # one failed attempt recorded before the success


def test_503_and_500_are_ours_to_retry_not_the_sdks(fcm: FcmStandIn, fcm_sender: FcmSender) -> None:
    # The SDK's default adapter would retry these up to 4 times inside the thread; ours does not.
    fcm.script("t", unavailable("7"), INTERNAL)
    assert fcm_sender.send_sync("t", TASK).__class__.__name__ == "RetryAfter"
    assert isinstance(fcm_sender.send_sync("t", TASK), TransientFailure)
    assert fcm.request_count == 2
    assert isinstance(fcm_sender.send_sync("t", TASK), Delivered)


class CrashAfterRecord(InMemoryOutboxStore):
    """The process dies after the delivery record commits, before the job is closed."""

    crash = True

    async def mark_delivered(self, job: PushJob, *, at) -> bool:  # type: ignore[no-untyped-def]
        if self.crash:
            raise SystemExit("worker killed")
        return await super().mark_delivered(job, at=at)


class CrashBeforeRecord(InMemoryOutboxStore):
    """The process dies after FCM accepted the message, before the record commits."""

    crash = True

    async def record_delivery(self, job: PushJob, *, at, provider_id) -> bool:  # type: ignore[no-untyped-def]
        if self.crash:
            raise SystemExit("worker killed")
        return await super().record_delivery(job, at=at, provider_id=provider_id)


def test_no_duplicate_after_a_crash_between_send_and_mark(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock
) -> None:
    store = CrashAfterRecord(clock)
    job = _job(store, "ev-1", "phone-1", "tok-1")
    with pytest.raises(BaseException, match="worker killed"):
        anyio.run(_worker(store, fcm_sender, clock).run_once)
    assert fcm.tokens() == ["tok-1"]
    assert store.state_of(job) is JobState.PENDING  # still open: nothing marked it

    store.crash = False
    clock.advance(61)  # the dead worker's lease runs out; a new worker picks the job up
    report = anyio.run(_worker(store, fcm_sender, clock).run_once)
    assert report.claimed == 1 and report.skipped_duplicates == 1
    assert fcm.tokens() == ["tok-1"]  # not sent again
    assert store.state_of(job) is JobState.DELIVERED


def test_the_documented_window_a_crash_before_the_record_resends_once(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock
) -> None:
    store = CrashBeforeRecord(clock)
    _job(store, "ev-1", "phone-1", "tok-1")
    with pytest.raises(BaseException, match="worker killed"):
        anyio.run(_worker(store, fcm_sender, clock).run_once)
    store.crash = False
    clock.advance(61)
    anyio.run(_worker(store, fcm_sender, clock).run_once)
    anyio.run(_worker(store, fcm_sender, clock).run_once)
    # At least once: the phone sees the same event_id twice and drops the second copy.
    assert [m.message["data"]["event_id"] for m in fcm.messages()] == ["ev-1", "ev-1"]


def test_a_plan_dispatch_reaches_every_device_once(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock
) -> None:
    store = InMemoryOutboxStore(clock)
    devices = [f"phone-{i}" for i in range(25)]
    for device in devices:
        for event in ("ev-1", "ev-2"):
            _job(store, event, device, f"tok-{device}")
            _job(store, event, device, f"tok-{device}")  # a re-run plan enqueues again
    worker = _worker(store, fcm_sender, clock, batch_size=20, concurrency=8)

    async def main() -> None:
        while (await worker.run_once()).claimed:
            pass

    anyio.run(main)
    pairs = [(m.token, m.message["data"]["event_id"]) for m in fcm.messages()]
    assert len(pairs) == 50 and len(set(pairs)) == 50
    assert store.count(JobState.DELIVERED) == 50


def test_run_loop_wakes_on_notify(fcm: FcmStandIn, fcm_sender: FcmSender) -> None:
    store = InMemoryOutboxStore()
    worker = OutboxWorker(store, {Channel.FCM: fcm_sender})

    async def main() -> float:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: worker.run(stop=stop, poll_interval=30))
            await anyio.sleep(0.05)
            start = anyio.current_time()
            _job(store, "ev-9", "phone-9", "tok-9")
            worker.notify()
            await anyio.to_thread.run_sync(fcm.wait_for, 1, 5.0)
            elapsed = anyio.current_time() - start
            stop.set()
        return elapsed

    elapsed = anyio.run(main)
    assert elapsed < 1.0  # far below the 30 s poll: notify() woke it
    assert fcm.tokens() == ["tok-9"]


def test_permanent_failure_codes_are_kept_for_dispatch(
    fcm: FcmStandIn, fcm_sender: FcmSender, clock: ManualClock
) -> None:
    store = InMemoryOutboxStore(clock)
    job = _job(store, "ev-1", "phone-1", "x")
    fcm.always("x", UNREGISTERED)
    anyio.run(_worker(store, fcm_sender, clock).run_once)
    assert (store.rows[job].last_error or "").startswith("UNREGISTERED")
    result = fcm_sender.send_sync("x", TASK)
    assert isinstance(result, PermanentFailure) and result.dead_token
