"""Residents' warning subscriptions (no account): what the public routes take and answer.

A place is never sent back: answers say how many places a subscription has, not where.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.common import Lat, Lon, Output, Point

Lang = Literal["zh_CN", "en"]
# E.164: a plus, a country code, up to 15 digits in all.
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
# FCM registration tokens are base64url-ish with ':' and run to a few hundred characters.
FcmToken = Annotated[
    str, msgspec.Meta(min_length=20, max_length=4096, pattern=r"^[A-Za-z0-9_:\-]+$")
]
B64Key = Annotated[str, msgspec.Meta(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_\-=]+$")]
MAX_PLACES = 5


class ResidentChannel(enum.StrEnum):
    """How a resident is reached. UnifiedPush is Web Push to the distributor's URL."""

    WEBPUSH = "webpush"
    UNIFIEDPUSH = "unifiedpush"
    FCM = "fcm"
    SMS = "sms"


class Place(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A point (stored rounded to ~100 m) or a named area (a village, by its id)."""

    lon: Lon | None = None
    lat: Lat | None = None
    area_id: uuid.UUID | None = None


class PushKeys(msgspec.Struct, forbid_unknown_fields=True):
    p256dh: B64Key
    auth: B64Key


class PushSubscriptionJSON(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The browser's `PushSubscription.toJSON()` (or a UnifiedPush endpoint with keys)."""

    endpoint: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
    keys: PushKeys
    expirationTime: float | None = None


class SubscriptionCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Register: one address for the channel, 1-5 places, a language (Chinese by default)."""

    channel: ResidentChannel
    places: Annotated[list[Place], msgspec.Meta(min_length=1, max_length=MAX_PLACES)]
    lang: Lang = "zh_CN"
    subscription: PushSubscriptionJSON | None = None
    fcm_token: FcmToken | None = None
    phone: Phone | None = None


class SubscriptionUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Move, change language or a rotated push subscription; any call also renews."""

    places: Annotated[list[Place], msgspec.Meta(min_length=1, max_length=MAX_PLACES)] | None = None
    lang: Lang | None = None
    subscription: PushSubscriptionJSON | None = None
    fcm_token: FcmToken | None = None


class SubscriptionConfirm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The code the SMS brought."""

    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]


class Subscription(Output):
    """A subscription as its owner sees it (places counted, never shown)."""

    id: uuid.UUID
    channel: ResidentChannel
    lang: Lang
    confirmed: bool
    places: int
    renew_by: datetime


class SubscriptionCreated(Subscription):
    """Registration's answer: keep `secret`, it is shown once and needed for every change."""

    secret: str


class PushKey(Output):
    """The VAPID public key for `pushManager.subscribe({applicationServerKey})`."""

    vapid_public_key: str | None


class DeliveryCounts(Output):
    """One channel of a warning's delivery: jobs targeted, delivered, failed, still pending, and
    superseded (replaced by a later Update or Cancel of the chain before they were sent)."""

    targeted: int
    delivered: int
    failed: int
    pending: int
    superseded: int


class DeliveryReport(Output):
    """A warning's delivery so far, per channel (webpush, fcm, sms) and in total."""

    alert_id: uuid.UUID
    channels: dict[str, DeliveryCounts]
    total: DeliveryCounts
    done: bool


class Shelter(Output):
    """A shelter near the point, with its distance."""

    id: uuid.UUID
    name: str
    address: str | None
    capacity: int | None
    phone: str | None
    location: Point
    distance_m: int
