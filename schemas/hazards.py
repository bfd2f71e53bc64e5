"""Hazard reports (隐患)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import msgspec

from schemas.common import AccuracyM, AwareTime, Input, Output, Point, Text
from schemas.media import MediaStatus, Sha256
from schemas.states import HazardStatus


class HazardCategory(enum.StrEnum):
    """What kind of hazard."""

    FIRE = "fire"
    ELECTRICAL = "electrical"
    GAS = "gas"
    HAZARDOUS_CHEMICALS = "hazardous_chemicals"
    STRUCTURAL = "structural"
    FLOOD = "flood"
    LANDSLIDE = "landslide"
    ROAD = "road"
    OTHER = "other"


class Severity(enum.StrEnum):
    """How serious a hazard is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Hazard(Output):
    """A hazard report and its place in the closed loop."""

    id: uuid.UUID
    category: HazardCategory
    severity: Severity
    description: str
    location: Point
    accuracy_m: float | None
    status: HazardStatus
    reporter_id: uuid.UUID | None
    grid_id: uuid.UUID | None
    area_id: uuid.UUID | None
    enterprise_id: uuid.UUID | None
    photo_ids: list[uuid.UUID]
    rectify_org_id: uuid.UUID | None
    rectify_deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    distance_m: float | None = None
    reported_at: datetime | None = None
    rectify_enterprise_id: uuid.UUID | None = None
    overdue: bool = False
    status_reason: str | None = None
    photos: list[HazardPhoto] = msgspec.field(default_factory=list)
    missing_photos: list[str] = msgspec.field(default_factory=list)
    evidence_flags: list[str] = msgspec.field(default_factory=list)
    source: HazardSource = msgspec.field(default_factory=lambda: HazardSource.GRID_INSPECTION)
    check_submission_id: uuid.UUID | None = None
    check_item_id: uuid.UUID | None = None


class PhotoKind(enum.StrEnum):
    """When a photo was attached to a hazard."""

    REPORT = "report"
    RECTIFICATION = "rectification"
    REINSPECTION = "reinspection"
    OTHER = "other"


class EvidenceFlag(enum.StrEnum):
    """Why a photo's EXIF does not back the report up (flagged, never refused)."""

    FAR_FROM_POINT = "far_from_point"
    TIME_MISMATCH = "time_mismatch"
    NO_GPS = "no_gps"
    NO_TIME = "no_time"


class HazardPhoto(Output):
    """A photo of a hazard, whether its bytes are here, and what its EXIF says about it.

    `flags` holds `EvidenceFlag` values; `distance_m` is from the EXIF position to the reported
    point and `time_offset_s` from the capture time to the report (or step) time.
    """

    media_id: uuid.UUID
    sha256: str
    status: MediaStatus
    kind: PhotoKind
    flags: list[str] = msgspec.field(default_factory=list)
    distance_m: float | None = None
    time_offset_s: float | None = None


class HazardCreate(Input):
    """Report a hazard; the grid is derived from the point."""

    category: HazardCategory
    severity: Severity
    description: Text
    location: Point
    accuracy_m: AccuracyM | None = None
    enterprise_id: uuid.UUID | None = None
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    id: uuid.UUID | None = None
    photo_sha256: list[Sha256] = msgspec.field(default_factory=list)
    reported_at: AwareTime | None = None
    # Dispatch may record a third-party inspection's (or another) finding; everyone else's
    # reports take their source from who they are (docs/hazards.md).
    source: HazardSource | None = None


class HazardPatch(Input):
    """Correct a hazard report's details; status moves through its own steps.

    A corrected `location` moves the hazard to the grid and area around it. `photo_ids` names
    photos to add (declared media ids); photos are never removed, which is also how sync merges
    the hazard's `photo_ids` (append-only)."""

    category: HazardCategory | msgspec.UnsetType = msgspec.UNSET
    severity: Severity | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    location: Point | msgspec.UnsetType = msgspec.UNSET
    accuracy_m: AccuracyM | msgspec.UnsetType | None = msgspec.UNSET
    photo_ids: list[uuid.UUID] | msgspec.UnsetType = msgspec.UNSET


class HazardTransition(Input):
    """One step of the closed loop. What each step needs (docs/hazards.md):

    - `rejected`, `reopened`: a reason in `note`;
    - `rectification_assigned`: `assignee_enterprise_id` or `assignee_org_id`, and `deadline`;
    - `rectified`: after-photos (`photo_sha256` or `photo_ids`), stored or at least declared.

    `id` makes a retried step a no-op; `at` is the phone's time of the step.
    """

    to_status: HazardStatus
    note: Text | None = None
    photo_sha256: list[Sha256] = msgspec.field(default_factory=list)
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    assignee_enterprise_id: uuid.UUID | None = None
    assignee_org_id: uuid.UUID | None = None
    deadline: AwareTime | None = None
    at: AwareTime | None = None
    id: uuid.UUID | None = None


class HazardEvent(Output):
    """One entry of a hazard's timeline: a status step or an escalation."""

    id: uuid.UUID
    hazard_id: uuid.UUID
    kind: str
    from_status: HazardStatus | None
    to_status: HazardStatus
    at: datetime
    actor_id: uuid.UUID | None
    note: str | None
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class HazardStatsRow(Output):
    """How many hazards one grid has in one status."""

    grid_id: uuid.UUID | None
    status: HazardStatus
    count: int


class HazardStats(Output):
    """Counts per grid and status (within the caller's scope and filters)."""

    items: list[HazardStatsRow]
    total: int


class OverdueGroup(Output):
    """Overdue rectifications of one grid assigned to one organisation (unit or enterprise)."""

    grid_id: uuid.UUID | None
    rectify_org_id: uuid.UUID | None
    count: int
    hazard_ids: list[uuid.UUID]


class HazardSource(enum.StrEnum):
    """Where a hazard came from (the four sources county platforms track; docs/hazards.md):

    - `self_reported`: an enterprise reported its own hazard (enterprise staff, by hand);
    - `enterprise_inspection`: a failed item of the enterprise's weekly self-check opened it;
    - `grid_inspection`: found in the field by a grid inspector or a responder;
    - `third_party_inspection`: recorded by dispatch from a third-party inspection's findings.
    """

    SELF_REPORTED = "self_reported"
    ENTERPRISE_INSPECTION = "enterprise_inspection"
    GRID_INSPECTION = "grid_inspection"
    THIRD_PARTY_INSPECTION = "third_party_inspection"
