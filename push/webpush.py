"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291).

The device address is the browser's `PushSubscription.toJSON()` as a JSON string:
`{"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}`. pywebpush encrypts the
payload for that subscription and signs a VAPID JWT with our key; the push service (FCM for
Chrome, Mozilla autopush, Apple) stores and forwards it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.to_thread
import msgspec
import requests
import requests.adapters
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

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

__all__ = [
    "VapidKeys",
    "WebPushKeys",
    "WebPushSender",
    "WebPushSubscription",
    "classify_webpush_status",
    "generate_vapid_keys",
    "webpush_payload",
]

log = logging.getLogger(__name__)

# RFC 8291: one 4096-byte record minus 86 bytes of header, tag and padding delimiter.
MAX_PLAINTEXT_BYTES: Final = 3993
_TOPIC: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


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


def generate_vapid_keys() -> VapidKeys:
    """Create a fresh VAPID key pair (P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_raw = key.private_numbers().private_value.to_bytes(32, "big")
    public_raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return VapidKeys(_b64url(private_raw), _b64url(public_raw))


def webpush_payload(message: PushMessage) -> bytes:
    """The plaintext the service worker receives: JSON {title?, body?, data, ttl...}.

    The service worker reads `data.event_id` to ignore a duplicate, like the phone app.
    """
    body: dict[str, Any] = {"data": message.data}
    if message.title is not None:
        body["title"] = message.title
    if message.body is not None:
        body["body"] = message.body
    return msgspec.json.encode(body)


def _topic(collapse_key: str) -> str:
    # RFC 8030 Topic: at most 32 characters of the URL-safe base64 alphabet.
    if _TOPIC.match(collapse_key):
        return collapse_key
    return _b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


def classify_webpush_status(status: int | None, retry_after: str | None) -> DeliveryResult:
    """Map a push service's HTTP answer (None: no answer) to a `DeliveryResult`.

    404/410: the subscription is gone (dead, prune). 429 and 503: RetryAfter when the header is
    there, else transient. 413 and other 4xx: the message or our VAPID setup is at fault,
    permanent but the subscription stays. 5xx and no answer: transient.
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
    if 400 <= status < 500:
        return PermanentFailure(dead_token=False, code=f"HTTP_{status}")
    return TransientFailure(code=f"HTTP_{status}")


class WebPushSender:
    """`PushSender` for Web Push subscriptions, through pywebpush.

    `vapid_private_key`: base64url raw key from `generate_vapid_keys` (or DER, base64url).
    `subject`: a `mailto:` or `https:` contact for the push service operators (RFC 8292 `sub`).
    """

    channel = Channel.WEBPUSH

    def __init__(
        self,
        vapid_private_key: str,
        subject: str,
        *,
        max_concurrency: int = 32,
        timeout: float = 10.0,
        trust_env: bool = False,
    ) -> None:
        if not subject.startswith(("mailto:", "https:")):
            raise ValueError("VAPID subject must be a mailto: or https: URL")
        self._vapid = Vapid.from_string(private_key=vapid_private_key)
        self._subject = subject
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._session = requests.Session()
        self._session.trust_env = trust_env
        # No transport retries: a resend decision belongs to the outbox (see push.fcm).
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=max_concurrency, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    @staticmethod
    def parse_address(address: str) -> WebPushSubscription:
        """Decode a stored subscription; raises msgspec.ValidationError/DecodeError if bad."""
        return _SUBSCRIPTION_DECODER.decode(address)

    def send_sync(self, address: str, message: PushMessage) -> DeliveryResult:
        """Blocking single attempt; see `PushSender.send` for the promises."""
        subscription = self.parse_address(address)
        payload = webpush_payload(message)
        if len(payload) > MAX_PLAINTEXT_BYTES:
            return PermanentFailure(
                dead_token=False,
                code="PAYLOAD_TOO_LARGE",
                detail=f"{len(payload)} > {MAX_PLAINTEXT_BYTES} bytes",
            )
        headers: dict[str, str | int | float] = {"Urgency": message.priority}
        if message.collapse_key:
            headers["Topic"] = _topic(message.collapse_key)
        try:
            webpush(
                subscription_info=msgspec.to_builtins(subscription),
                data=payload.decode(),
                vapid_private_key=self._vapid,
                # pywebpush writes aud/exp into the claims dict: a fresh one per call.
                vapid_claims={"sub": self._subject},
                content_encoding="aes128gcm",
                ttl=message.ttl_seconds,
                headers=headers,
                timeout=self._timeout,
                requests_session=self._session,
            )
        except WebPushException as exc:
            result = classify_webpush_status(exc.status_code, exc.retry_after)
            if isinstance(result, PermanentFailure | TransientFailure) and exc.response is not None:
                detail = str(getattr(exc.response, "text", ""))[:300]
                if isinstance(result, PermanentFailure):
                    result = PermanentFailure(result.dead_token, result.code, detail)
                else:
                    result = TransientFailure(result.code, detail, result.ambiguous)
            return result
        except requests.RequestException as exc:
            connect_failed = isinstance(exc, requests.ConnectionError) and not isinstance(
                exc, requests.ReadTimeout
            )
            return TransientFailure(code="NETWORK", detail=str(exc), ambiguous=not connect_failed)
        return Delivered()

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        """Encrypt, sign and POST in a worker thread; never blocks the event loop."""
        return await anyio.to_thread.run_sync(
            self.send_sync, address, message, limiter=self._limiter
        )

    def close(self) -> None:
        self._session.close()
