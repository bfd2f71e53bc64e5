"""How the Web Push sender talks to push services: reuse, pacing, redirects and SSRF refusals.

Every case runs against real loopback receivers (tests/peers/webpush_receiver.py) that check
VAPID, TTL, Urgency and Topic and decrypt with the subscription's own keys.
"""

from __future__ import annotations

import json

import anyio
import msgspec

from push.base import Delivered, PermanentFailure, PushMessage, RetryAfter, TransientFailure
from push.webpush import WebPushSender, generate_vapid_keys, webpush_payload
from tests.integration.push.test_webpush import LOOPBACK, WARNING, send_all
from tests.peers.webpush_receiver import WebPushReceiver

SUBJECT = "mailto:ops@liandong.example"


def test_one_vapid_signature_and_one_connection_per_service_for_many_messages() -> None:
    with WebPushReceiver() as a, WebPushReceiver() as b:
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK)
        subs = [a.subscribe()[1] for _ in range(20)] + [b.subscribe()[1] for _ in range(20)]
        results = send_all(sender, *[(s, WARNING) for s in subs])
        assert all(isinstance(r, Delivered) for r in results)
        assert a.accepted == b.accepted == 20 and not a.rejections and not b.rejections
        # One JWT per push service (its origin is the audience), reused for every message.
        assert sender.vapid_signatures == 2
        assert {p.vapid_claims["aud"] for p in a.pushes()} == {a.origin}
        # Sent one after another: each service saw one kept-alive connection, not 20.
        assert a.connections == b.connections == 1


def test_ttl_urgency_and_topic_reach_the_push_service() -> None:
    normal = PushMessage(
        data={"event_id": "e1"}, title="t", collapse_key="alert:chain/with:odd chars", ttl_seconds=7
    )
    normal = msgspec.structs.replace(normal, priority="normal")
    with WebPushReceiver() as r:
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK)
        send_all(sender, (r.subscribe()[1], normal))
        [push] = r.pushes()
        assert push.headers["ttl"] == "7" and push.headers["urgency"] == "normal"
        assert len(push.headers["topic"]) <= 32 and push.headers["topic"].isascii()


def test_a_throttling_service_is_paused_as_a_whole_and_others_go_on() -> None:
    with WebPushReceiver() as slow, WebPushReceiver() as other:
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK)
        slow.throttle(1, 429, "30")
        first, second, elsewhere = send_all(
            sender,
            (slow.subscribe()[1], WARNING),
            (slow.subscribe()[1], WARNING),
            (other.subscribe()[1], WARNING),
        )
        assert first == RetryAfter(30.0, "HTTP_429")
        # The second subscriber of the same service is held back without a request ...
        assert isinstance(second, RetryAfter) and second.code == "SERVICE_BACKOFF"
        assert 29 < second.seconds <= 30
        assert slow.requests == 1
        # ... while another push service is not.
        assert isinstance(elsewhere, Delivered)


def test_server_errors_back_off_per_service_growing() -> None:
    now = [0.0]
    with WebPushReceiver() as r:
        sender = WebPushSender(
            generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK,
            monotonic=lambda: now[0], server_error_backoff_s=2,
        )  # fmt: skip
        r.throttle(2, 500, None)
        sub = r.subscribe()[1]

        async def main() -> list[object]:
            out: list[object] = [await sender.send(sub, WARNING)]
            out.append(await sender.send(sub, WARNING))  # gated: 2 s
            now[0] += 2.5
            out.append(await sender.send(sub, WARNING))  # 500 again: gated 4 s
            now[0] += 3
            out.append(await sender.send(sub, WARNING))
            now[0] += 1.5
            out.append(await sender.send(sub, WARNING))
            await sender.aclose()
            return out

        first, gated, again, still, ok = anyio.run(main)
        assert isinstance(first, TransientFailure) and first.code == "HTTP_500"
        assert isinstance(gated, RetryAfter) and gated.code == "SERVICE_BACKOFF"
        assert isinstance(again, TransientFailure)
        assert isinstance(still, RetryAfter) and 0.9 < still.seconds <= 1.0
        assert isinstance(ok, Delivered)
        assert r.requests == 3


def test_redirects_are_never_followed() -> None:
    with WebPushReceiver() as r, WebPushReceiver() as elsewhere:
        sub_id, sub = r.subscribe()
        _, target = elsewhere.subscribe()
        r.script(sub_id, 307, headers={"Location": json.loads(target)["endpoint"]})
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK)
        [result] = send_all(sender, (sub, WARNING))
        assert isinstance(result, PermanentFailure) and result.code == "HTTP_307"
        assert not result.dead_token
        assert elsewhere.requests == 0


def _with_endpoint(subscription: str, endpoint: str) -> str:
    data = json.loads(subscription)
    data["endpoint"] = endpoint
    return json.dumps(data)


def test_private_and_loopback_endpoints_are_refused_at_send_time() -> None:
    with WebPushReceiver() as r:
        sub = r.subscribe()[1]
        port = r.port
        # No allow-list: the loopback receiver is exactly what an attacker would point us at.
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT)
        cases = [
            f"http://127.0.0.1:{port}/push/x",  # plain http
            f"https://127.0.0.1:{port}/push/x",  # loopback literal
            f"https://[::ffff:127.0.0.1]:{port}/push/x",  # the same, IPv4-mapped
            "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
            "https://10.0.0.7/push/x",  # private
            f"https://localhost:{port}/push/x",  # a name: refused when resolved, at connect
        ]
        results = send_all(sender, *[(_with_endpoint(sub, c), WARNING) for c in cases])
        for case, result in zip(cases, results, strict=True):
            assert isinstance(result, PermanentFailure), case
            assert result.code == "ENDPOINT_REFUSED" and result.dead_token, (case, result)
        assert r.requests == 0 and r.connections == 0


def test_each_message_keeps_its_own_payload_and_headers_when_interleaved() -> None:
    """The sender builds a message's plaintext and headers once per message object; messages
    sent in turn (two languages of one warning, another warning) must never borrow another's."""
    zh = PushMessage(data={"event_id": "w1", "lang": "zh_CN"}, title="暴雨红色预警", ttl_seconds=60)
    en = msgspec.structs.replace(zh, data={"event_id": "w1", "lang": "en"}, title="Rainstorm")
    other = PushMessage(
        data={"event_id": "w2"}, title="t", collapse_key="chain2", ttl_seconds=9, priority="normal"
    )
    with WebPushReceiver() as r:
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK)
        sent = [(r.subscribe(), m) for m in (zh, en, other, zh, other, en)]
        results = send_all(sender, *[(sub, m) for (_, sub), m in sent])
        assert all(isinstance(x, Delivered) for x in results)
        for (sub_id, _), message in sent:
            [push] = r.pushes(sub_id)
            assert push.json() == json.loads(webpush_payload(message))
            assert push.headers["ttl"] == str(message.ttl_seconds)
            assert push.headers["urgency"] == message.priority
            assert push.headers.get("topic") == message.collapse_key


def test_endpoint_rules_hold_after_a_service_s_endpoints_were_checked() -> None:
    """The sender short-cuts the syntax check for endpoints under a push service's checked
    `scheme://authority/`; the length and fragment rules still apply to them, and an authority
    with user info is another prefix that takes the full check."""
    with WebPushReceiver() as r:
        sub = r.subscribe()[1]
        origin = r.origin
        sender = WebPushSender(generate_vapid_keys().private_key, SUBJECT, allow_hosts=LOOPBACK)
        [first] = send_all(sender, (sub, WARNING))
        assert isinstance(first, Delivered)
        cases = [
            f"{origin}/push/x#fragment",
            f"{origin}/push/{'a' * 2100}",
            origin.replace("://", "://user@") + "/push/x",
            origin.replace("://", "://user:secret@") + "/push/x",
        ]
        results = send_all(sender, *[(_with_endpoint(sub, c), WARNING) for c in cases])
        for case, result in zip(cases, results, strict=True):
            assert isinstance(result, PermanentFailure), case
            assert result.code == "ENDPOINT_REFUSED" and result.dead_token, (case, result)
        assert r.requests == 1
