"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291).

The device address is the browser's `PushSubscription.toJSON()` as a JSON string:
`{"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}`. A UnifiedPush
distributor (ntfy and others) gives the same form: a capability URL plus keys, and takes the
same request. The push service (Mozilla autopush, Microsoft's for Edge, FCM for Chrome, a
UnifiedPush distributor) stores and forwards the message.

How `WebPushSender` sends, and why (a warning fan-out sends 100,000 of these in a minute):

- **one aiohttp session, connections kept alive per push service**. pywebpush's `webpush()`
  builds a request, and unless handed a session opens a new TLS connection, per message
  (~20 ms on loopback); aiohttp's pooled HTTP/1.1 keep-alive costs ~0.2 ms of CPU a request,
  httpx ~3 ms (measured on this machine, 16 lanes, 1 KB bodies). `limit_per_host` bounds the
  connections to one service;
- **the VAPID JWT is signed once per push service** (the audience is the endpoint's origin) and
  reused until `vapid_refresh_s` before it expires (`vapid_ttl_s`, at most 24 h by RFC 8292);
  pywebpush re-signs per call and mutates the caller's claims dict (pywebpush#79);
- **encryption on `cryptography` directly** (`encrypt_payload`): a fresh ECDH key pair and salt
  per message, as RFC 8291 requires; ~0.28 ms of CPU (pywebpush's http_ece ~0.4 ms; the test
  receivers decrypt with http_ece, so each checks the other);
- `TTL` is the message's `ttl_seconds` (the warning's seconds until expiry), `Urgency` its
  priority, `Topic` its collapse key (hashed to 32 base64url characters if longer), so an
  undelivered older message of the same warning chain is replaced, not stacked;
- **never follows redirects** and connects only to public addresses (push/endpoints.py checks
  every resolved address at connect time; hosts listed in `allow_hosts` are exempt, for tests);
- **backs off per push service**: a 429/503 with Retry-After, or repeated 5xx, closes the gate
  to that service (not just the one subscription) until the time has passed; sends to it in the
  meantime return `RetryAfter` at once without touching the network, so the outbox reschedules
  them instead of hammering a service that asked us to slow down.

Each `send` is one attempt with a typed result (push/base.py); the outbox decides the rest.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from push.base import (
    Channel,
    Delivered,
    DeliveryResult,
    PermanentFailure,
    PushMessage,
    RetryAfter,
    TransientFailure,
    parse_retry_after,
)
from push.endpoints import (
    MAX_URL_CHARS,
    EndpointRefused,
    GuardedResolver,
    check_url,
    refused_address,
)

__all__ = [
    "MAX_PLAINTEXT_BYTES",
    "VapidKeys",
    "WebPushKeys",
    "WebPushSender",
    "WebPushSubscription",
    "classify_webpush_status",
    "encrypt_payload",
    "generate_vapid_keys",
    "topic_header",
    "webpush_payload",
]

log = logging.getLogger(__name__)

# RFC 8291: one 4096-byte record minus 86 bytes of header, tag and padding delimiter.
MAX_PLAINTEXT_BYTES: Final = 3993
RECORD_SIZE: Final = 4096
_TOPIC: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_MESSAGES_CACHED: Final = 64  # distinct messages whose plaintext and headers a sender keeps
_PREFIXES_CACHED: Final = 1024  # push services whose endpoints' syntax check is short-cut


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WebPushKeys(msgspec.Struct, frozen=True):
    p256dh: str
    auth: str


class WebPushSubscription(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A browser's PushSubscription JSON (extra fields such as expirationTime are ignored)."""

    endpoint: str
    keys: WebPushKeys


_SUBSCRIPTION_DECODER: Final = msgspec.json.Decoder(WebPushSubscription)


@dataclass(frozen=True, slots=True)
class VapidKeys:
    """A VAPID key pair.

    `private_key` is the raw 32-byte P-256 scalar, base64url: what `WebPushSender` takes (keep it
    secret, in configuration). `application_server_key` is the uncompressed public point,
    base64url: what the web page passes to `pushManager.subscribe({applicationServerKey})`.
    """

    private_key: str
    application_server_key: str


def _private_key(raw_b64: str) -> ec.EllipticCurvePrivateKey:
    raw = _b64url_decode(raw_b64)
    if len(raw) == 32:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    key = serialization.load_der_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("VAPID key must be a P-256 private key")
    return key


def _public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def generate_vapid_keys() -> VapidKeys:
    """Create a fresh VAPID key pair (P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_raw = key.private_numbers().private_value.to_bytes(32, "big")
    return VapidKeys(_b64url(private_raw), _b64url(_public_raw(key)))


def application_server_key(vapid_private_key: str) -> str:
    """The public key (base64url, uncompressed point) that belongs to a configured private key."""
    return _b64url(_public_raw(_private_key(vapid_private_key)))


def webpush_payload(message: PushMessage) -> bytes:
    """The plaintext the service worker receives: JSON {title?, body?, data}.

    The service worker reads `data.event_id` to ignore a duplicate, like the phone app.
    """
    body: dict[str, Any] = {"data": message.data}
    if message.title is not None:
        body["title"] = message.title
    if message.body is not None:
        body["body"] = message.body
    return msgspec.json.encode(body)


def topic_header(collapse_key: str) -> str:
    """RFC 8030 Topic: at most 32 characters of the URL-safe base64 alphabet."""
    if _TOPIC.match(collapse_key):
        return collapse_key
    return _b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    # RFC 5869 expand with one output block (length <= 32), which is all RFC 8291 needs;
    # `hmac.digest` is the one-shot C HMAC (a quarter of `hmac.new(...).digest()`'s cost).
    return hmac.digest(prk, info + b"\x01", "sha256")[:length]


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return _hkdf_expand(hmac.digest(salt, ikm, "sha256"), info, length)


def encrypt_payload(plaintext: bytes, subscription: WebPushSubscription) -> bytes:
    """RFC 8291 aes128gcm body for this subscription: a fresh ECDH key pair and salt per message,
    one record. Written on `cryptography` directly: http_ece's general code (any record size,
    several versions) cost ~0.4 ms a message against ~0.28 ms here, and the receiver in the
    tests decrypts every message with http_ece, so the two are checked against each other."""
    ua_public = _b64url_decode(subscription.keys.p256dh)
    auth = _b64url_decode(subscription.keys.auth)
    if len(auth) != 16:
        raise ValueError("auth secret must be 16 bytes")
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    as_public = _public_raw(ephemeral)
    shared = ephemeral.exchange(ec.ECDH(), ua_key)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + ua_public + as_public, 32)
    salt = os.urandom(16)
    prk = hmac.digest(salt, ikm, "sha256")  # one extract for both keys (same salt and ikm)
    cek = _hkdf_expand(prk, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf_expand(prk, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: the last record
    return salt + struct.pack("!LB", RECORD_SIZE, len(as_public)) + as_public + record


def classify_webpush_status(status: int | None, retry_after: str | None) -> DeliveryResult:
    """Map a push service's HTTP answer (None: no answer) to a `DeliveryResult`.

    404/410: the subscription is gone (dead, prune). 429 and 503: RetryAfter when the header is
    there, else transient. 3xx (never followed), 413 and other 4xx: the message or our VAPID
    setup is at fault, permanent but the subscription stays. 5xx and no answer: transient.
    """
    if status is None:
        return TransientFailure(code="NETWORK", ambiguous=True)
    if status in (200, 201, 202):
        return Delivered()
    if status in (404, 410):
        return PermanentFailure(dead_token=True, code=f"HTTP_{status}")
    if status in (429, 503):
        seconds = parse_retry_after(retry_after)
        if seconds is not None:
            return RetryAfter(seconds=seconds, code=f"HTTP_{status}")
        return TransientFailure(code=f"HTTP_{status}")
    if 300 <= status < 500:
        return PermanentFailure(dead_token=False, code=f"HTTP_{status}")
    return TransientFailure(code=f"HTTP_{status}")


class _Vapid:
    """A VAPID `Authorization` header per audience, signed once and reused until near expiry."""

    def __init__(self, private_key: str, subject: str, ttl_s: int, refresh_s: int) -> None:
        if not subject.startswith(("mailto:", "https:")):
            raise ValueError("VAPID subject must be a mailto: or https: URL")
        if not 0 < refresh_s < ttl_s <= 24 * 3600:
            raise ValueError("need 0 < vapid_refresh_s < vapid_ttl_s <= 24 h (RFC 8292)")
        self._key = _private_key(private_key)
        self._k = _b64url(_public_raw(self._key))
        self._subject = subject
        self._ttl_s = ttl_s
        self._refresh_s = refresh_s
        self._cache: dict[str, tuple[float, str]] = {}
        self.signed = 0  # how many JWTs were signed (tests prove the reuse)

    def header(self, audience: str, now: float) -> str:
        cached = self._cache.get(audience)
        if cached is not None and cached[0] - self._refresh_s > now:
            return cached[1]
        exp = int(now) + self._ttl_s
        claims = {"aud": audience, "exp": exp, "sub": self._subject}
        token = jwt.encode(claims, self._key, algorithm="ES256")
        value = f"vapid t={token}, k={self._k}"
        self._cache[audience] = (float(exp), value)
        self.signed += 1
        return value


@dataclass(slots=True)
class _Gate:
    """Per push service: closed until `until` (monotonic); `failures` in a row (5xx)."""

    until: float = 0.0
    failures: int = 0


class WebPushSender:
    """`PushSender` for Web Push and UnifiedPush subscriptions (module doc says how it sends).

    `vapid_private_key`: base64url raw key from `generate_vapid_keys` (or DER, base64url).
    `subject`: a `mailto:` or `https:` contact for the push service operators (RFC 8292 `sub`).
    `allow_hosts`: hosts that may be reached over plain http and on non-public addresses
    (loopback receivers in tests; `LIANDONG_PUSH_TEST_HOSTS`); empty in production.
    """

    channel = Channel.WEBPUSH

    def __init__(
        self,
        vapid_private_key: str,
        subject: str,
        *,
        max_concurrency: int = 64,
        per_service_connections: int = 32,
        timeout: float = 10.0,
        allow_hosts: Collection[str] = (),
        vapid_ttl_s: int = 12 * 3600,
        vapid_refresh_s: int = 3600,
        server_error_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vapid = _Vapid(vapid_private_key, subject, vapid_ttl_s, vapid_refresh_s)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limit = max_concurrency
        self._per_host = per_service_connections
        self._allow = frozenset(h.lower() for h in allow_hosts)
        self._backoff_s = server_error_backoff_s
        self._max_backoff_s = max_backoff_s
        self._gates: dict[str, _Gate] = {}
        self._monotonic = monotonic
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked: dict[str, str | None] = {}  # origin -> refusal reason (None: fine)
        self._messages: dict[int, tuple[PushMessage, bytes, dict[str, str]]] = {}
        self._prefixes: dict[str, str] = {}  # "scheme://authority/" checked -> its origin

    @property
    def vapid_signatures(self) -> int:
        """How many VAPID JWTs this sender has signed so far."""
        return self._vapid.signed

    @staticmethod
    def parse_address(address: str) -> WebPushSubscription:
        """Decode a stored subscription; raises msgspec.ValidationError/DecodeError if bad."""
        return _SUBSCRIPTION_DECODER.decode(address)

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._per_host,
                resolver=GuardedResolver(self._allow),
                ttl_dns_cache=60,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=False,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # push services' cookies are not kept
            )
            self._loop = loop
        return self._session

    def _prepared(self, message: PushMessage) -> tuple[bytes, dict[str, str]]:
        """The plaintext and the headers that are the same for every subscriber of `message`,
        built once per message object: a fan-out sends one `PushMessage` (per language) to
        thousands (the SQL outbox decodes one object per distinct message of a claim). Keyed
        by identity, holding the message, so an id is never reused while cached."""
        key = id(message)
        cached = self._messages.get(key)
        if cached is not None:
            return cached[1], cached[2]
        headers = {
            "TTL": str(message.ttl_seconds),
            "Urgency": message.priority,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            # Given here, aiohttp adds none of its own; a `skip_auto_headers` list instead costs
            # a sorted header copy per request. No compressed answers: we read only error text.
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "User-Agent": "liandong-push",
        }
        if message.collapse_key:
            headers["Topic"] = topic_header(message.collapse_key)
        payload = webpush_payload(message)
        if len(self._messages) >= _MESSAGES_CACHED:
            self._messages.clear()
        self._messages[key] = (message, payload, headers)
        return payload, headers

    def _refusal(self, endpoint: str) -> tuple[str, str | None]:
        """(origin, refusal) for an endpoint: syntax rules, and IP literals checked here
        (aiohttp does not ask the resolver for them); names are checked at connect time.

        Fast path: an endpoint beginning with the literal `scheme://authority/` of one that
        passed `check_url` has that scheme, host and port and no user info (the authority ends
        at the first "/"), so only the length and fragment rules are left to check; a push
        service's endpoints all share one such prefix. Anything else takes the full check.
        """
        cut = endpoint.find("/", endpoint.find("//") + 2) + 1
        origin = self._prefixes.get(endpoint[:cut]) if cut else None
        if origin is not None and "#" not in endpoint and len(endpoint) <= MAX_URL_CHARS:
            return origin, self._checked[origin]
        try:
            checked = check_url(endpoint, allow_hosts=self._allow)
        except EndpointRefused as exc:
            return endpoint, f"{exc.reason}: {exc.detail}"
        origin = checked.origin
        if origin not in self._checked:
            reason = None
            host = checked.host
            if host not in self._allow and _is_ip(host) and refused_address(host):
                reason = f"private_address: {host}"
            self._checked[origin] = reason
        parts = urlsplit(endpoint)
        prefix = f"{parts.scheme}://{parts.netloc}/"
        if endpoint.startswith(prefix) and len(self._prefixes) < _PREFIXES_CACHED:
            self._prefixes[prefix] = origin
        return origin, self._checked[origin]

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        """Encrypt, sign (cached) and POST once; never raises for what the service answers."""
        subscription = self.parse_address(address)
        origin, refusal = self._refusal(subscription.endpoint)
        if refusal is not None:
            return PermanentFailure(dead_token=True, code="ENDPOINT_REFUSED", detail=refusal)
        now = self._monotonic()
        gate = self._gates.get(origin)
        if gate is not None and gate.until > now:
            return RetryAfter(seconds=gate.until - now, code="SERVICE_BACKOFF")
        payload, message_headers = self._prepared(message)
        if len(payload) > MAX_PLAINTEXT_BYTES:
            return PermanentFailure(
                dead_token=False,
                code="PAYLOAD_TOO_LARGE",
                detail=f"{len(payload)} > {MAX_PLAINTEXT_BYTES} bytes",
            )
        try:
            body = encrypt_payload(payload, subscription)
        except ValueError as exc:
            # Keys that are not a P-256 point / 16-byte secret: the subscription is unusable.
            return PermanentFailure(dead_token=True, code="BAD_KEYS", detail=str(exc))
        headers = {**message_headers, "Authorization": self._vapid.header(origin, time.time())}
        session = self._session_here()
        try:
            async with session.post(
                subscription.endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                detail = "" if status < 300 else (await response.text(errors="replace"))[:300]
        except aiohttp.ClientConnectorError as exc:
            cause: BaseException | None = exc.os_error
            while cause is not None and not isinstance(cause, EndpointRefused):
                cause = cause.__cause__
            if isinstance(cause, EndpointRefused):
                return PermanentFailure(True, "ENDPOINT_REFUSED", f"{cause.reason}: {cause}")
            return TransientFailure(code="NETWORK", detail=str(exc), ambiguous=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return TransientFailure(code="NETWORK", detail=repr(exc), ambiguous=True)
        result = classify_webpush_status(status, retry_after)
        self._pace(origin, status, result)
        match result:
            case PermanentFailure(dead_token=dead, code=code):
                return PermanentFailure(dead, code, detail)
            case TransientFailure(code=code, ambiguous=ambiguous):
                return TransientFailure(code, detail, ambiguous)
        return result

    def _pace(self, origin: str, status: int, result: DeliveryResult) -> None:
        """Open or close the per-service gate after an answer."""
        gate = self._gates.setdefault(origin, _Gate())
        now = self._monotonic()
        if isinstance(result, RetryAfter):
            gate.until = max(gate.until, now + min(result.seconds, self._max_backoff_s))
        elif status == 429 or status >= 500:
            gate.failures += 1
            delay = min(self._max_backoff_s, self._backoff_s * 2 ** (gate.failures - 1))
            gate.until = max(gate.until, now + delay)
        elif status < 300:
            gate.failures = 0

    async def aclose(self) -> None:
        """Close the pooled connections (on the loop that opened them)."""
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
