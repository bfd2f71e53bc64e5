"""Hazard reports (隐患)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import msgspec

from schemas.common import AccuracyM, Input, Output, Point, Text
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


class HazardPatch(Input):
    """Correct a hazard report's details; status moves through its own steps."""

    category: HazardCategory | msgspec.UnsetType = msgspec.UNSET
    severity: Severity | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
