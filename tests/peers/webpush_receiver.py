"""A Web Push service and its browsers on loopback, verifying and decrypting for real.

It plays both ends a real Web Push message touches after it leaves us, for one subscriber or
for thousands (one receiver = one push service; start several for several services):

- the *browser*: `subscribe()` generates a P-256 key pair and a 16-byte auth secret and returns a
  `PushSubscription` JSON whose endpoint points here. With a `seed`, `derived_subscription(seed,
  origin, sub_id)` computes the same keys on both sides from the id, so a receiver in another
  process (the benchmark's) decrypts for subscriptions it never saw registered;
- the *push service*: `POST /push/{id}` must carry `TTL` (a non-negative integer), `Content-
  Encoding: aes128gcm`, `Authorization: vapid t=<JWT>, k=<public key>`, and when present a valid
  `Urgency` (very-low, low, normal, high) and `Topic` (1-32 base64url characters, RFC 8030); the
  JWT's ES256 signature is verified against `k` (each distinct token once: a push service may cache
  a verified token), `aud` must be this origin, `exp` in the future and at most 24 h away (RFC
  8292), `sub` a mailto:/https: URL. The body (at most 4,096 bytes) is then decrypted with the
  subscription's private key and auth secret (RFC 8291, via http_ece) and the plaintext recorded.

Answers: 201 Created with a Location, 400/401/403/413/415 for a protocol or VAPID error (the
recorded `rejections` say why), or whatever a test scripts per subscription (410 Gone, 429 +
Retry-After) or for the whole service (`throttle`). `GET /_stats` returns the counters, and
`duplicates`: deliveries of an `event_id` a subscription had already received;
`GET /_events?event=E`: subscribers that got `E` and repeats of it; `POST /_derive` with a
JSON list of subscriber ids derives their keys ahead (seeded receivers). Runnable as a
process: `python -m tests.peers.webpush_receiver --seed S [--tls CERT KEY]` prints `PORT <n>`
(with `--tls` it serves https, as every real push service does: `http11.loopback_certificate`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import re
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.http11 import LoopbackHttpServer, _Request, server_tls

_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_URGENCY = frozenset({"very-low", "low", "normal", "high"})
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derived_keys(seed: str, sub_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    digest = hashlib.sha256(f"key|{seed}|{sub_id}".encode()).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    auth = hashlib.sha256(f"auth|{seed}|{sub_id}".encode()).digest()[:16]
    return ec.derive_private_key(scalar, ec.SECP256R1()), auth


def _subscription_json(
    origin: str, sub_id: str, key: ec.EllipticCurvePrivateKey, auth: bytes
) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return json.dumps(
        {
            "endpoint": f"{origin}/push/{sub_id}",
            "expirationTime": None,
            "keys": {"p256dh": _b64url(public), "auth": _b64url(auth)},
        }
    )


def derived_subscription(seed: str, origin: str, sub_id: str) -> str:
    """The subscription JSON a receiver started with `seed` at `origin` accepts for `sub_id`."""
    key, auth = _derived_keys(seed, sub_id)
    return _subscription_json(origin, sub_id, key, auth)


@dataclass
class _Subscriber:
    sub_id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    scripted: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    always: tuple[int, dict[str, str]] | None = None


@dataclass(frozen=True)
class ReceivedPush:
    """A push that passed every check and decrypted."""

    sub_id: str
    plaintext: bytes
    headers: dict[str, str]
    vapid_claims: dict[str, Any]
    vapid_public_key: str
    at: float = field(default_factory=time.perf_counter)

    def json(self) -> Any:
        return json.loads(self.plaintext)


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebPushReceiver(LoopbackHttpServer):
    """Start/stop like `FcmStandIn`; `subscribe()` returns (sub_id, subscription JSON)."""

    server_name = b"webpush-receiver"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: str | None = None,
        record: bool = True,
    ) -> None:
        super().__init__(host=host, port=port)
        self._seed = seed
        self._origin: tuple[object, str] | None = None
        self._record = record
        self._lock = threading.Condition()
        self._subscribers: dict[str, _Subscriber] = {}
        self._ids = itertools.count(1)
        self._tokens: dict[str, tuple[dict[str, Any], str]] = {}  # verified JWT -> claims, k
        self._throttle: deque[tuple[int, dict[str, str]]] = deque()
        self._seen: dict[tuple[str, str], int] = {}  # (sub_id, event_id) -> deliveries
        self._per_event: dict[str, list[int]] = {}  # event_id -> [subscribers, repeats]
        self.received: list[ReceivedPush] = []
        self.rejections: list[tuple[int, str]] = []
        self.accepted = 0
        self.requests = 0
        self.duplicates = 0
        self.first_at: float | None = None  # wall clock (time.time), comparable across processes
        self.last_at: float | None = None

    @property
    def origin(self) -> str:
        # Cached per socket: `port` asks the socket (a system call), and every push checks its
        # `aud` against the origin.
        if self._origin is None or self._origin[0] is not self._socket:
            scheme = "http" if self.ssl_context is None else "https"
            self._origin = (self._socket, f"{scheme}://{self._host}:{self.port}")
        return self._origin[1]

    def subscribe(self) -> tuple[str, str]:
        """Act as a browser: new keys and secret. Returns (sub_id, subscription JSON)."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        sub_id = f"s{next(self._ids)}-{_b64url(os.urandom(6))}"
        with self._lock:
            self._subscribers[sub_id] = _Subscriber(sub_id, key, auth)
        return sub_id, _subscription_json(self.origin, sub_id, key, auth)

    def script(
        self,
        sub_id: str,
        status: int,
        retry_after: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next push for `sub_id` with `status` (after verifying it)."""
        headers = dict(headers or {})
        if retry_after:
            headers["Retry-After"] = retry_after
        with self._lock:
            self._subscriber(sub_id).scripted.append((status, headers))

    def gone(self, sub_id: str) -> None:
        """The user unsubscribed: every later push gets 410 Gone."""
        with self._lock:
            self._subscriber(sub_id).always = (410, {})

    def throttle(self, count: int, status: int = 429, retry_after: str | None = "1") -> None:
        """The whole service answers the next `count` pushes with `status` (after checks)."""
        headers = {"Retry-After": retry_after} if retry_after else {}
        with self._lock:
            self._throttle.extend([(status, headers)] * count)

    def pushes(self, sub_id: str | None = None) -> list[ReceivedPush]:
        with self._lock:
            return [p for p in self.received if sub_id is None or p.sub_id == sub_id]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` pushes were accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.accepted < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "rejections": len(self.rejections),
                "rejection_sample": self.rejections[:3],
                "distinct": len(self._seen),
                "first_at": self.first_at,
                "last_at": self.last_at,
                "process_cpu_s": time.process_time(),
                "connections": self.connections,
            }

    def event_counts(self, event_id: str) -> dict[str, int]:
        """How many subscribers got `event_id`, and how many deliveries of it were repeats."""
        with self._lock:
            distinct, repeats = self._per_event.get(event_id, [0, 0])
        return {"distinct": distinct, "repeats": repeats}

    def received_keys(self) -> dict[tuple[str, str], int]:
        """(sub_id, event_id) -> how many times it was delivered."""
        with self._lock:
            return dict(self._seen)

    # -- the push service (called on the server's loop thread) -----------------------------------

    def _subscriber(self, sub_id: str) -> _Subscriber:
        found = self._subscribers.get(sub_id)
        if found is None and self._seed is not None:
            key, auth = _derived_keys(self._seed, sub_id)
            found = self._subscribers[sub_id] = _Subscriber(sub_id, key, auth)
        if found is None:
            raise KeyError(sub_id)
        return found

    def _verify_vapid(self, authorization: str | None) -> tuple[dict[str, Any], str]:
        if not authorization or not authorization.lower().startswith("vapid "):
            raise _Reject(401, "missing vapid Authorization")
        params: dict[str, str] = {}
        for part in authorization[6:].split(","):
            name, _, value = part.strip().partition("=")
            params[name] = value
        token, k = params.get("t"), params.get("k")
        if not token or not k:
            raise _Reject(401, "vapid Authorization needs t= and k=")
        cached = self._tokens.get(token)
        if cached is not None and cached[1] == k:
            claims = cached[0]
        else:
            try:
                public = ec.EllipticCurvePublicKey.from_encoded_point(
                    ec.SECP256R1(), _b64url_decode(k)
                )
                claims = jwt.decode(
                    token,
                    key=public,
                    algorithms=["ES256"],
                    audience=self.origin,
                    options={"require": ["aud", "exp", "sub"]},
                )
            except (ValueError, jwt.PyJWTError) as exc:
                raise _Reject(403, f"vapid JWT rejected: {exc}") from exc
            self._tokens[token] = (claims, k)
        now = time.time()
        if claims["exp"] <= now:
            raise _Reject(403, "vapid JWT expired")
        if claims["exp"] > now + 24 * 3600:
            raise _Reject(403, "vapid exp more than 24 hours ahead")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise _Reject(403, "vapid sub must be mailto: or https:")
        return claims, k

    @staticmethod
    def _check_headers(headers: dict[str, str], body: bytes) -> None:
        ttl = headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            raise _Reject(400, "TTL header is required (a non-negative integer)")
        urgency = headers.get("urgency")
        if urgency is not None and urgency not in _URGENCY:
            raise _Reject(400, f"bad Urgency {urgency!r}")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC.match(topic):
            raise _Reject(400, f"bad Topic {topic!r}")
        if headers.get("content-encoding") != "aes128gcm":
            raise _Reject(415, "Content-Encoding must be aes128gcm")
        if len(body) > 4096:
            raise _Reject(413, "payload larger than 4096 bytes")

    def _push(
        self, sub_id: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.requests += 1
            try:
                subscriber = self._subscriber(sub_id)
            except KeyError:
                return 404, {}
        self._check_headers(headers, body)
        claims, k = self._verify_vapid(headers.get("authorization"))
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=subscriber.private_key,
                auth_secret=subscriber.auth_secret,
                version="aes128gcm",
            )
        except (http_ece.ECEException, ValueError) as exc:
            raise _Reject(400, f"cannot decrypt: {exc}") from exc
        try:
            event_id = str(json.loads(plaintext).get("data", {}).get("event_id", ""))
        except (ValueError, AttributeError):
            event_id = ""
        with self._lock:
            if subscriber.always is not None:
                return subscriber.always
            if subscriber.scripted:
                return subscriber.scripted.popleft()
            if self._throttle:
                return self._throttle.popleft()
            key = (sub_id, event_id)
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
            counts = self._per_event.setdefault(event_id, [0, 0])
            counts[1 if seen else 0] += 1
            if seen and event_id:
                self.duplicates += 1
            self.accepted += 1
            now = time.time()
            self.first_at = self.first_at or now
            self.last_at = now
            if self._record:
                self.received.append(ReceivedPush(sub_id, plaintext, headers, claims, k))
            self._lock.notify_all()
            number = self.accepted
        return 201, {"Location": f"{self.origin}/message/{number}"}

    def _respond(self, request: _Request, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        if request.method == "GET" and request.target == "/_stats":
            return 200, self.stats(), {}
        if request.method == "GET" and request.target.startswith("/_events?event="):
            event_id = urllib.parse.unquote(request.target.split("=", 1)[1])
            return 200, self.event_counts(event_id), {}
        if request.method == "POST" and request.target == "/_derive" and self._seed is not None:
            # The benchmark names its subscribers before the clock starts, as a push service
            # knows its subscriptions before a message comes: their keys are derived now.
            ids = json.loads(raw)
            with self._lock:
                for sub_id in ids:
                    self._subscriber(sub_id)
            return 200, {"derived": len(ids)}, {}
        if request.method != "POST" or not request.target.startswith("/push/"):
            return 404, {}, {}
        try:
            status, extra = self._push(request.target[len("/push/") :], request.headers, raw)
        except _Reject as exc:
            with self._lock:
                self.rejections.append((exc.status, exc.reason))
            return exc.status, {"reason": exc.reason}, {}
        return status, {}, extra


def main() -> None:
    parser = argparse.ArgumentParser(description="Web Push service + browsers on loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", required=True, help="derive subscriber keys from this")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve https")
    args = parser.parse_args()
    receiver = WebPushReceiver(port=args.port, seed=args.seed, record=False)
    if args.tls:
        receiver.ssl_context = server_tls(Path(args.tls[0]), Path(args.tls[1]))
    receiver.start()
    print(f"PORT {receiver.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
