"""Public warnings (预警): CAP 1.2 alerts with the Chinese colour levels, their drafts and chains.

A warning is one CAP message. A dispatcher drafts it; it is published (by the drafter, or for
orange and red by a second person with the right to approve); a published message never
changes. An Update or a Cancel is a new message whose `references` name the message it
supersedes; the messages of one warning form a chain (`chain_id`, the first message's id),
whose current state is its latest published message. docs/alerts.md has the whole story.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import Area, AwareTime, Input, Name, Output, Text


class AlertColor(enum.StrEnum):
    """预警 colour levels: blue IV, yellow III, orange II, red I."""

    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"


COLOR_LEVEL = {"blue": "IV", "yellow": "III", "orange": "II", "red": "I"}
"""The Roman level of each colour (蓝 IV, 黄 III, 橙 II, 红 I)."""


class AlertStatus(enum.StrEnum):
    """CAP status. Only Actual reaches the public; Exercise and Test reach staff, marked."""

    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"


class MsgType(enum.StrEnum):
    """CAP msgType."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"


class AlertState(enum.StrEnum):
    """Where a message is in its life: a draft (editable, seen by dispatch only) or published
    (final, never changes again)."""

    DRAFT = "draft"
    PUBLISHED = "published"


class Category(enum.StrEnum):
    """CAP category."""

    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(enum.StrEnum):
    """CAP responseType: what the public should do."""

    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


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


# What a colour level means when the author does not say otherwise (SAMBRO's "priority" model):
# severity follows the colour as push/cap.py maps it; urgency and certainty rise with it.
COLOR_DEFAULTS: dict[str, tuple[Urgency, CapSeverity, Certainty]] = {
    "blue": (Urgency.FUTURE, CapSeverity.MINOR, Certainty.POSSIBLE),
    "yellow": (Urgency.EXPECTED, CapSeverity.MODERATE, Certainty.LIKELY),
    "orange": (Urgency.EXPECTED, CapSeverity.SEVERE, Certainty.LIKELY),
    "red": (Urgency.IMMEDIATE, CapSeverity.EXTREME, Certainty.OBSERVED),
}

Headline = Annotated[str, msgspec.Meta(min_length=1, max_length=140, pattern=r"^[^\x00]*$")]
Language = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")]
Url = Annotated[str, msgspec.Meta(max_length=500, pattern=r"^https?://[^\s<>\x00]+$")]


class Circle(Input):
    """A circle: centre (GeoJSON order, lon/lat) and radius in km."""

    center: tuple[
        Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)],
        Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)],
    ]
    radius_km: Annotated[float, msgspec.Meta(gt=0.0, le=1000.0)]


class CircleOut(Output):
    """A circle of a warning's area."""

    center: tuple[float, float]
    radius_km: float


class Geocode(Output):
    """A CAP geocode: `ADCODE` is the administrative division code (GB/T 2260 and below)."""

    value_name: str
    value: str


class EnglishText(Input):
    """The en-US info block's texts (the zh-CN block is always there)."""

    event: Name
    headline: Headline
    description: Text
    instruction: Text | None = None
    area_desc: Name | None = None


class AlertPatch(Input):
    """Change a draft (published messages never change): the fields sent replace the draft's.
    `status` of a new Alert defaults to Actual; an Update or Cancel keeps its warning's."""

    status: AlertStatus | msgspec.UnsetType = msgspec.UNSET
    color: AlertColor | msgspec.UnsetType = msgspec.UNSET
    category: Annotated[list[Category], msgspec.Meta(min_length=1, max_length=12)] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    response_type: Annotated[list[ResponseType], msgspec.Meta(max_length=9)] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    urgency: Urgency | msgspec.UnsetType = msgspec.UNSET
    severity: CapSeverity | msgspec.UnsetType = msgspec.UNSET
    certainty: Certainty | msgspec.UnsetType = msgspec.UNSET
    event: Name | msgspec.UnsetType = msgspec.UNSET
    headline: Headline | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    instruction: Text | msgspec.UnsetType | None = msgspec.UNSET
    area_desc: Name | msgspec.UnsetType = msgspec.UNSET
    en: EnglishText | msgspec.UnsetType | None = msgspec.UNSET
    effective: AwareTime | msgspec.UnsetType | None = msgspec.UNSET
    onset: AwareTime | msgspec.UnsetType | None = msgspec.UNSET
    expires: AwareTime | msgspec.UnsetType = msgspec.UNSET
    web: Url | msgspec.UnsetType | None = msgspec.UNSET
    contact: Name | msgspec.UnsetType | None = msgspec.UNSET
    note: Text | msgspec.UnsetType | None = msgspec.UNSET
    area: Area | msgspec.UnsetType = msgspec.UNSET
    circles: Annotated[list[Circle], msgspec.Meta(max_length=20)] | msgspec.UnsetType = (
        msgspec.UNSET
    )


class AlertDraft(AlertPatch):
    """A new warning message: an Alert, or an Update/Cancel of a published one.

    For an Alert, `color`, `category`, `event`, `headline`, `description`, `area_desc`,
    `expires` and an area (`area` and/or `circles`) are required. An Update or a Cancel names
    the message it supersedes in `references` (our alert ids) and starts from that message's
    content: what it does not send is copied (a Cancel also defaults to responseType AllClear).
    Urgency, severity and certainty follow the colour unless given. `authority_id` is the
    organisation that sends it (default: the author's own)."""

    id: uuid.UUID | None = None
    msg_type: MsgType = MsgType.ALERT
    references: Annotated[list[uuid.UUID], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    authority_id: uuid.UUID | None = None


class InfoText(Output):
    """One language's texts of a warning (one CAP info block)."""

    language: str
    event: str
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    sender_name: str | None = None
    area_desc: str | None = None


class AlertRef(Output):
    """A message this one supersedes: our id (None when we never held it) and its CAP key."""

    id: uuid.UUID | None
    sender: str
    identifier: str
    sent: datetime


class PublicAlert(Output):
    """A published warning as the public sees it (`/api/v1/public/alerts`)."""

    id: uuid.UUID
    chain_id: uuid.UUID
    identifier: str
    sender: str
    sent: datetime | None
    status: AlertStatus
    msg_type: MsgType
    scope: str
    references: list[AlertRef]
    color: AlertColor | None
    level: str | None
    category: list[str]
    response_type: list[str]
    urgency: str
    severity: str
    certainty: str
    effective: datetime | None
    onset: datetime | None
    expires: datetime | None
    web: str | None
    contact: str | None
    infos: list[InfoText]
    area: Area
    circles: list[CircleOut]
    geocodes: list[Geocode]
    imported: bool
    cap_url: str


class Alert(PublicAlert):
    """A warning message as staff see it: the public view plus its workflow."""

    state: AlertState
    current: bool
    superseded_by: uuid.UUID | None
    authority_id: uuid.UUID | None
    area_id: uuid.UUID | None
    note: str | None
    needs_approval: bool
    drafted_by: uuid.UUID | None
    approved_by: uuid.UUID | None
    published_by: uuid.UUID | None
    published_at: datetime | None
    source_url: str | None
    created_at: datetime
    updated_at: datetime


class Authority(Output):
    """An organisation that sends warnings: its CAP sender id, names and approval rule."""

    org_id: uuid.UUID
    sender: str
    name: str
    name_en: str | None
    web: str | None
    contact: str | None
    approval_colors: list[AlertColor]
    approver_ids: list[uuid.UUID]


# Python's `\s` and JSON Schema's (ECMA-262) differ (\x1c-\x1f, \x85, \ufeff): name them all, so
# the OpenAPI document refuses exactly what the server does.
CapSender = Annotated[
    str,
    msgspec.Meta(min_length=3, max_length=200, pattern=r"^[^\s\x1c-\x1f\x85\ufeff,<&]+$"),
]


class AuthorityPut(Input):
    """Make an organisation a warning authority, or change it. Orange and red always need a
    second person's approval; `approval_colors` may add blue and yellow. `approver_ids` are the
    dispatchers with the right to approve (administrators always have it)."""

    sender: CapSender
    name: Name
    name_en: Name | None = None
    web: Url | None = None
    contact: Name | None = None
    approval_colors: Annotated[list[AlertColor], msgspec.Meta(max_length=4)] = msgspec.field(
        default_factory=list
    )
    approver_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=200)] = msgspec.field(
        default_factory=list
    )


class Feed(Output):
    """Another authority's CAP feed this server polls."""

    id: uuid.UUID
    url: str
    enabled: bool
    last_polled_at: datetime | None
    last_error: str | None
    imported: int
    created_at: datetime


class FeedCreate(Input):
    """Poll a CAP feed (Atom or RSS whose entries link CAP documents, or one CAP document)."""

    url: Url
    enabled: bool = True
    id: uuid.UUID | None = None


class ImportResult(Output):
    """What an import did: the alert it made (or found: the same sender and identifier)."""

    alert: Alert
    created: bool


class PollResult(Output):
    """What one poll of a feed did."""

    feed_id: uuid.UUID
    imported: int
    known: int
    refused: list[str]
