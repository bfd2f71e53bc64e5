"""A Web Push service and browser on loopback, verifying and decrypting for real.

It plays both ends a real Web Push message touches after it leaves us:

- the *browser*: `subscribe()` generates a P-256 key pair and a 16-byte auth secret and returns a
  `PushSubscription` JSON whose endpoint points here;
- the *push service*: `POST /push/{id}` must carry `TTL`, `Content-Encoding: aes128gcm` and
  `Authorization: vapid t=<JWT>, k=<public key>`; the JWT's ES256 signature is verified against
  `k`, `aud` must be this origin, `exp` in the future and at most 24 h away (RFC 8292), `sub` a
  mailto:/https: URL. The body is then decrypted with the subscription's private key and auth
  secret (RFC 8291, via http_ece) and the plaintext recorded.

Answers: 201 Created with a Location, 400/401/403 for a protocol or VAPID error (the recorded
`rejections` say why), or whatever a test scripts per subscription (410 Gone, 429 + Retry-After).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Subscriber:
    sub_id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    scripted: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    always: tuple[int, dict[str, str]] | None = None


@dataclass(frozen=True)
class ReceivedPush:
    """A push that passed VAPID checks and decrypted."""

    sub_id: str
    plaintext: bytes
    headers: dict[str, str]
    vapid_claims: dict[str, Any]
    vapid_public_key: str
    at: float = field(default_factory=time.perf_counter)

    def json(self) -> Any:
        return json.loads(self.plaintext)


class WebPushReceiver:
    """Start/stop like `FcmStandIn`; `subscribe()` returns the subscription JSON string."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Condition()
        self._subscribers: dict[str, _Subscriber] = {}
        self._ids = itertools.count(1)
        self.received: list[ReceivedPush] = []
        self.rejections: list[tuple[int, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebPushReceiver:
        handler = type("_BoundHandler", (_Handler,), {"receiver": self})
        server = ThreadingHTTPServer((self._host, self._port), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> WebPushReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self._host}:{self._server.server_address[1]}"

    def subscribe(self) -> tuple[str, str]:
        """Act as a browser: new keys and secret. Returns (sub_id, subscription JSON)."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        sub_id = f"s{next(self._ids)}-{_b64url(os.urandom(6))}"
        with self._lock:
            self._subscribers[sub_id] = _Subscriber(sub_id, key, auth)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        subscription = {
            "endpoint": f"{self.origin}/push/{sub_id}",
            "expirationTime": None,
            "keys": {"p256dh": _b64url(public), "auth": _b64url(auth)},
        }
        return sub_id, json.dumps(subscription)

    def script(self, sub_id: str, status: int, retry_after: str | None = None) -> None:
        """Answer the next push for `sub_id` with `status` (after verifying it)."""
        headers = {"Retry-After": retry_after} if retry_after else {}
        with self._lock:
            self._subscribers[sub_id].scripted.append((status, headers))

    def gone(self, sub_id: str) -> None:
        """The user unsubscribed: every later push gets 410 Gone."""
        with self._lock:
            self._subscribers[sub_id].always = (410, {})

    def pushes(self, sub_id: str | None = None) -> list[ReceivedPush]:
        with self._lock:
            return [p for p in self.received if sub_id is None or p.sub_id == sub_id]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    # -- the push service ------------------------------------------------------------------------

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
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(k))
            claims: dict[str, Any] = jwt.decode(
                token,
                key=public,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp", "sub"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            raise _Reject(403, f"vapid JWT rejected: {exc}") from exc
        if claims["exp"] > time.time() + 24 * 3600:
            raise _Reject(403, "vapid exp more than 24 hours ahead")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise _Reject(403, "vapid sub must be mailto: or https:")
        return claims, k

    def _handle(
        self, sub_id: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str]]:
        with self._lock:
            subscriber = self._subscribers.get(sub_id)
        if subscriber is None:
            return 404, {}
        if "ttl" not in headers:
            raise _Reject(400, "TTL header is required")
        if headers.get("content-encoding") != "aes128gcm":
            raise _Reject(415, "Content-Encoding must be aes128gcm")
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
        with self._lock:
            if subscriber.always is not None:
                return subscriber.always
            if subscriber.scripted:
                return subscriber.scripted.popleft()
            self.received.append(ReceivedPush(sub_id, plaintext, headers, claims, k))
            self._lock.notify_all()
        return 201, {"Location": f"{self.origin}/message/{len(self.received)}"}


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Handler(BaseHTTPRequestHandler):
    receiver: ClassVar[WebPushReceiver]
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        if not self.path.startswith("/push/"):
            self._reply(404, {})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, extra = self.receiver._handle(self.path[len("/push/") :], headers, body)
        except _Reject as exc:
            with self.receiver._lock:
                self.receiver.rejections.append((exc.status, exc.reason))
            self._reply(exc.status, {}, exc.reason.encode())
            return
        self._reply(status, extra)
