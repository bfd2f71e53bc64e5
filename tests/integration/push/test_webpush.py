"""Our Web Push sender (VAPID + aes128gcm) against a receiver that verifies and decrypts."""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import msgspec
import pytest

from push.base import (
    Channel,
    Delivered,
    DeliveryResult,
    PermanentFailure,
    PushMessage,
    RetryAfter,
)
from push.outbox import BatchReport, InMemoryOutboxStore, JobState, OutboxWorker
from push.webpush import WebPushSender, generate_vapid_keys, webpush_payload
from tests.clocks import ManualClock
from tests.peers.webpush_receiver import WebPushReceiver

WARNING = PushMessage(
    data={"event_id": "cap-LD-1", "kind": "warning", "colour": "red"},
    title="暴雨红色预警",
    body="请立即转移至避难场所",
    collapse_key="cap:LD-1",
    ttl_seconds=3600,
)


LOOPBACK = ("127.0.0.1",)  # the receivers' host, listed as an operator lists test hosts


def _sender(**kwargs: Any) -> WebPushSender:
    keys = generate_vapid_keys()
    return WebPushSender(
        keys.private_key, "mailto:ops@liandong.example", allow_hosts=LOOPBACK, **kwargs
    )


def send_all(sender: WebPushSender, *pairs: tuple[str, PushMessage]) -> list[DeliveryResult]:
    """Send each (subscription, message) in order on one event loop, then close the sender."""

    async def main() -> list[DeliveryResult]:
        try:
            return [await sender.send(address, message) for address, message in pairs]
        finally:
            await sender.aclose()

    return anyio.run(main)


def test_receiver_decrypts_exactly_what_we_sent(webpush_receiver: WebPushReceiver) -> None:
    keys = generate_vapid_keys()
    sender = WebPushSender(keys.private_key, "mailto:ops@liandong.example", allow_hosts=LOOPBACK)
    sub_id, subscription = webpush_receiver.subscribe()
    [result] = send_all(sender, (subscription, WARNING))
    assert isinstance(result, Delivered)
    [push] = webpush_receiver.pushes(sub_id)
    assert push.plaintext == webpush_payload(WARNING)
    assert push.json() == {"data": WARNING.data, "title": WARNING.title, "body": WARNING.body}
    assert push.headers["content-encoding"] == "aes128gcm"
    assert push.headers["ttl"] == "3600"
    assert push.headers["urgency"] == "high"
    assert len(push.headers["topic"]) <= 32
    assert push.vapid_public_key == keys.application_server_key  # signed with our key
    assert push.vapid_claims["aud"] == webpush_receiver.origin
    assert time.time() < push.vapid_claims["exp"] <= time.time() + 24 * 3600
    assert webpush_receiver.rejections == []


def test_gone_subscription_is_pruned(webpush_receiver: WebPushReceiver) -> None:
    clock = ManualClock()
    store = InMemoryOutboxStore(clock)
    sub_id, subscription = webpush_receiver.subscribe()
    store.register("browser-1", Channel.WEBPUSH, subscription)
    job = store.enqueue(
        event_id="cap-LD-1", device_id="browser-1", channel=Channel.WEBPUSH,
        address=subscription, message=WARNING,
    )  # fmt: skip
    webpush_receiver.gone(sub_id)
    sender = _sender()
    worker = OutboxWorker(store, {Channel.WEBPUSH: sender}, clock=clock)

    async def main() -> BatchReport:
        try:
            return await worker.run_once()
        finally:
            await sender.aclose()

    report = anyio.run(main)
    assert report.pruned_addresses == 1 and report.errors == {"HTTP_410": 1}
    assert store.state_of(job) is JobState.DEAD
    assert store.registrations["browser-1"] == {}


def test_429_retry_after_then_delivered(webpush_receiver: WebPushReceiver) -> None:
    clock = ManualClock()
    store = InMemoryOutboxStore(clock)
    sub_id, subscription = webpush_receiver.subscribe()
    webpush_receiver.script(sub_id, 429, "15")
    now = [0.0]
    sender = _sender(monotonic=lambda: now[0])
    assert send_all(sender, (subscription, WARNING)) == [RetryAfter(15.0, "HTTP_429")]
    now[0] += 16  # the service's Retry-After has passed for the sender's per-service gate
    webpush_receiver.script(sub_id, 429, "15")
    job = store.enqueue(
        event_id="cap-LD-1", device_id="b", channel=Channel.WEBPUSH, address=subscription,
        message=WARNING,
    )  # fmt: skip
    worker = OutboxWorker(store, {Channel.WEBPUSH: sender}, clock=clock, rng=random.Random(2))

    async def main() -> None:
        assert (await worker.run_once()).retried == 1
        now[0] += 16
        clock.advance(14)
        assert (await worker.run_once()).claimed == 0
        clock.advance(2.5)
        assert (await worker.run_once()).delivered == 1
        await sender.aclose()

    anyio.run(main)
    assert store.state_of(job) is JobState.DELIVERED
    assert len(webpush_receiver.pushes(sub_id)) == 1


def test_oversized_payload_is_refused_before_sending(webpush_receiver: WebPushReceiver) -> None:
    _sub_id, subscription = webpush_receiver.subscribe()
    big = PushMessage(data={"blob": "x" * 5000})
    [result] = send_all(_sender(), (subscription, big))
    assert isinstance(result, PermanentFailure) and result.code == "PAYLOAD_TOO_LARGE"
    assert not result.dead_token


def test_mixed_channels_one_worker(webpush_receiver, fcm, fcm_sender) -> None:  # type: ignore[no-untyped-def]
    store = InMemoryOutboxStore()
    _sub_id, subscription = webpush_receiver.subscribe()
    store.enqueue(
        event_id="e", device_id="b", channel=Channel.WEBPUSH, address=subscription,
        message=WARNING,
    )  # fmt: skip
    store.enqueue(event_id="e", device_id="p", channel=Channel.FCM, address="tok", message=WARNING)
    webpush = _sender()
    worker = OutboxWorker(store, {Channel.WEBPUSH: webpush, Channel.FCM: fcm_sender})

    async def main() -> int:
        delivered = (await worker.run_once()).delivered
        await webpush.aclose()
        return delivered

    assert anyio.run(main) == 2
    assert fcm.messages()[0].message["notification"] == {
        "title": WARNING.title,
        "body": WARNING.body,
    }
    assert msgspec.json.decode(webpush_receiver.pushes()[0].plaintext)["title"] == WARNING.title


def test_receiver_serves_https_with_a_certificate_a_client_can_trust(tmp_path: Any) -> None:
    """The benchmark's receivers serve https (as push services do); clients trust only the
    loopback certificate (`SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE` there, `verify` here)."""
    import ssl

    import httpx

    from tests.peers.http11 import loopback_certificate, server_tls

    cert, key = loopback_certificate(tmp_path)
    receiver = WebPushReceiver()
    receiver.ssl_context = server_tls(cert, key)
    with receiver:
        _sub_id, subscription = receiver.subscribe()
        assert msgspec.json.decode(subscription)["endpoint"].startswith("https://127.0.0.1:")
        assert receiver.origin.startswith("https://")
        trusting = ssl.create_default_context(cafile=str(cert))
        got = httpx.get(f"{receiver.origin}/_stats", verify=trusting, timeout=5)
        assert got.json()["requests"] == 0
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{receiver.origin}/_stats", verify=ssl.create_default_context(), timeout=5)
