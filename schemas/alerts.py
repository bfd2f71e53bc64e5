"""Public warnings, CAP 1.2 shaped, with the Chinese colour levels."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import msgspec

from schemas.common import Area, AwareTime, Input, Name, Output, Text


class AlertColor(enum.StrEnum):
    """预警 colour levels: blue IV, yellow III, orange II, red I."""

    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"


class MsgType(enum.StrEnum):
    """CAP msgType."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"


class Urgency(enum.StrEnum):
    """CAP urgency."""

    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class CapSeverity(enum.StrEnum):
    """CAP severity."""

    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(enum.StrEnum):
    """CAP certainty."""

    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


class Alert(Output):
    """A public warning."""

    id: uuid.UUID
    identifier: str
    msg_type: MsgType
    references: str | None
    event: str
    color: AlertColor
    urgency: Urgency
    severity: CapSeverity
    certainty: Certainty
    headline: str
    description: str | None
    instruction: str | None
    language: str
    area_desc: str
    area: Area
    sent: datetime
    expires: datetime | None
    created_at: datetime
    updated_at: datetime


class AlertCreate(Input):
    """Publish a warning."""

    event: Name
    color: AlertColor
    urgency: Urgency
    certainty: Certainty
    headline: Name
    area_desc: Name
    area: Area
    msg_type: MsgType = MsgType.ALERT
    references: Name | None = None
    description: Text | None = None
    instruction: Text | None = None
    language: str = "zh-CN"
    expires: AwareTime | None = None
    severity: CapSeverity | msgspec.UnsetType = msgspec.UNSET
    id: uuid.UUID | None = None
