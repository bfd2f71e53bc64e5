"""Statistics: counts and response times for the command centre (also served as CSV)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from schemas.common import Output


class Period(enum.StrEnum):
    """Bucket size for counts (UTC calendar day, ISO week starting Monday, calendar month)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class IncidentCount(Output):
    """Incidents of one type and level opened in one period."""

    period_start: str
    type: str
    level: int
    count: int


class ResponseBy(enum.StrEnum):
    """What response times are grouped by (several may be combined)."""

    UNIT_KIND = "unit_kind"
    INCIDENT_TYPE = "incident_type"
    UNIT = "unit"
    PERIOD = "period"


class ResponseTimes(Output):
    """Seconds from dispatch to accepted and to on scene, per group: linked-unit kind (the
    default), incident type, unit and/or period; fields of groups not asked for are null."""

    tasks: int
    accepted: int
    on_scene: int
    accept_p50_s: float | None
    accept_p90_s: float | None
    on_scene_p50_s: float | None
    on_scene_p90_s: float | None
    unit_kind: str | None = None
    incident_type: str | None = None
    unit_id: uuid.UUID | None = None
    unit_name: str | None = None
    period_start: str | None = None


class HazardBy(enum.StrEnum):
    """What hazard statistics are grouped by (several may be combined)."""

    SOURCE = "source"
    CATEGORY = "category"
    GRID = "grid"
    STATUS = "status"


class HazardCounts(Output):
    """Hazards of one group: how many, how many had a rectification assigned and how many of
    those were rectified (`rectification_rate` = rectified / rectification_assigned, null when
    none was assigned), and how many rectifications are overdue now (assigned, not rectified,
    past the deadline). Fields of groups not asked for are null."""

    total: int
    closed: int
    rectification_assigned: int
    rectified: int
    rectification_rate: float | None
    overdue: int
    source: str | None = None
    category: str | None = None
    grid_id: uuid.UUID | None = None
    grid_name: str | None = None
    status: str | None = None


class TaskFlag(Output):
    """An overdue or escalated task."""

    task_id: uuid.UUID
    incident_id: uuid.UUID | None
    title: str
    status: str
    unit_kind: str | None
    assignee_unit_id: uuid.UUID | None
    assignee_user_id: uuid.UUID | None
    dispatched_at: datetime | None
    deadline: datetime | None
    escalated_at: datetime | None
