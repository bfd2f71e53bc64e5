"""What every push provider must do, and the typed answer it gives.

A provider adapter (`push.fcm.FcmSender`, `push.webpush.WebPushSender`) is thin: it turns a
`PushMessage` into one provider request for one device address and classifies the provider's
answer into a `DeliveryResult`. Everything that decides *what to do* with that answer (retry,
back off, prune, give up) lives above it, in `push.outbox`.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "Channel",
    "Delivered",
    "DeliveryResult",
    "PermanentFailure",
    "PushMessage",
    "PushSender",
    "RetryAfter",
    "TransientFailure",
    "parse_retry_after",
]


class Channel(StrEnum):
    """A push transport. The value is what the outbox stores in its `channel` column."""

    FCM = "fcm"
    WEBPUSH = "webpush"
    SMS = "sms"


class PushMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One notification, independent of the transport that carries it.

    It is a msgspec Struct so the outbox can store it as JSON (`msgspec.json.encode`) and read it
    back with `msgspec.json.decode(raw, type=PushMessage)`; new fields must get defaults so rows
    written by an older server still decode.

    - `data`: string keys and string values (FCM refuses anything else). The phone app reads
      `data["event_id"]` to drop a duplicate it has already shown.
    - `title` / `body`: optional visible notification. Responder tasks are sent as data-only
      messages so the app decides how to ring; public warnings carry a title and body.
    - `collapse_key`: messages with the same key replace each other while still queued at the
      push service (FCM `android.collapse_key`, Web Push `Topic` header).
    - `ttl_seconds`: how long the push service keeps the message for an offline device;
      0 means "now or never".
    - `priority`: "high" wakes the device (FCM android priority high, Web Push `Urgency: high`).
    """

    data: dict[str, str] = msgspec.field(default_factory=dict)
    title: str | None = None
    body: str | None = None
    collapse_key: str | None = None
    ttl_seconds: int = 3600
    priority: Literal["high", "normal"] = "high"

    def __post_init__(self) -> None:
        # msgspec runs __post_init__ on decode too, so a bad row is refused at the edge.
        if self.ttl_seconds < 0:
            raise ValueError("ttl_seconds must be >= 0")
        for key, value in self.data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("PushMessage.data keys and values must be str")


@dataclass(frozen=True, slots=True)
class Delivered:
    """The push service accepted the message for the device (not: the device displayed it)."""

    provider_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """The service is overloaded or throttling us and said when to come back.

    `seconds` is the service's Retry-After, already converted from an HTTP date when needed.
    The outbox never retries earlier than this.
    """

    seconds: float
    code: str


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """Sending this message to this address will never work.

    `dead_token` says the address itself is gone (uninstalled app, expired subscription, token
    from another sender): the outbox prunes it at once. With `dead_token=False` the message is
    at fault (too large, malformed) and the address stays.
    """

    dead_token: bool
    code: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TransientFailure:
    """Something went wrong that may go away: retry with backoff.

    `ambiguous` is True when the request may have reached the service before it failed (a read
    timeout or a dropped connection after sending): the retry can then deliver a duplicate, which
    the phone drops by `event_id`.
    """

    code: str
    detail: str = ""
    ambiguous: bool = False


DeliveryResult = Delivered | RetryAfter | PermanentFailure | TransientFailure


@runtime_checkable
class PushSender(Protocol):
    """Sends one message to one device address.

    Promises:
    - never raises for anything the provider answered or for a network failure; every outcome is
      a `DeliveryResult` (it may raise for programming errors, e.g. a malformed address the
      caller should have validated);
    - makes exactly one attempt: no hidden retry loops or sleeps, so the outbox alone decides
      when to try again (a single reconnect before any byte was sent is allowed);
    - is safe to call concurrently from many tasks.
    """

    channel: Channel

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        """Deliver `message` to `address` (an FCM token or a Web Push subscription JSON)."""
        ...


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse an HTTP Retry-After value (delta-seconds or an HTTP date) into seconds from now.

    Returns None when the header is absent or unreadable; never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds):
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; parsedate_to_datetime leaves "-0000" naive.
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
