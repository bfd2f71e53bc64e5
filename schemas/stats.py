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


class ResponseTimes(Output):
    """Seconds from dispatch to accepted and to on scene, per linked-unit kind."""

    unit_kind: str
    tasks: int
    accepted: int
    on_scene: int
    accept_p50_s: float | None
    accept_p90_s: float | None
    on_scene_p50_s: float | None
    on_scene_p90_s: float | None


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
