"""Devices and their push registrations."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import Input, Output


class PushChannel(enum.StrEnum):
    """How a device receives pushes."""

    FCM = "fcm"
    WEBPUSH = "webpush"


class DeviceRegister(Input):
    """Register (or refresh) this device's push token."""

    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    channel: PushChannel
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    platform: Annotated[str, msgspec.Meta(max_length=32)] = "android"


class Device(Output):
    """A registered device."""

    id: uuid.UUID
    device_id: str
    channel: PushChannel | None
    platform: str
    last_seen_at: datetime | None
