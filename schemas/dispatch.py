"""Incidents and the tasks dispatched for them."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import AccuracyM, AwareTime, Input, Name, Output, Point, Polygon, Priority, Text
from schemas.states import IncidentStatus, TaskStatus

Level = Annotated[
    int, msgspec.Meta(ge=1, le=4, description="1=I 特别重大, 2=II 重大, 3=III 较大, 4=IV 一般")
]


class IncidentType(enum.StrEnum):
    """Type of incident."""

    FIRE = "fire"
    TRAFFIC_ACCIDENT = "traffic_accident"
    HAZMAT_LEAK = "hazmat_leak"
    GAS_LEAK = "gas_leak"
    FLOOD = "flood"
    LANDSLIDE = "landslide"
    EARTHQUAKE = "earthquake"
    POWER_OUTAGE = "power_outage"
    PUBLIC_HEALTH = "public_health"
    OTHER = "other"


class IncidentSource(enum.StrEnum):
    """Where the report came from."""

    HOTLINE = "hotline"
    FIELD_REPORT = "field_report"
    SENSOR = "sensor"
    OTHER = "other"


class Incident(Output):
    """An incident and where it is."""

    id: uuid.UUID
    type: IncidentType
    level: int
    title: str
    description: str | None
    location: Point
    area: Polygon | None
    area_id: uuid.UUID | None
    status: IncidentStatus
    source: IncidentSource
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    distance_m: float | None = None
    hazard_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class IncidentCreate(Input):
    """Open an incident. `id` may be chosen by the client (UUIDv7) so a retry never duplicates."""

    type: IncidentType
    level: Level
    title: Name
    location: Point
    description: Text | None = None
    area: Polygon | None = None
    source: IncidentSource = IncidentSource.HOTLINE
    id: uuid.UUID | None = None
    hazard_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )


class IncidentPatch(Input):
    """Change an incident; absent fields stay as they are."""

    title: Name | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType | None = msgspec.UNSET
    level: Level | msgspec.UnsetType = msgspec.UNSET
    location: Point | msgspec.UnsetType = msgspec.UNSET
    area: Polygon | msgspec.UnsetType | None = msgspec.UNSET
    status: IncidentStatus | msgspec.UnsetType = msgspec.UNSET
    hazard_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=100)] | msgspec.UnsetType = (
        msgspec.UNSET
    )


class TaskEvent(Output):
    """One step of a task's timeline."""

    id: uuid.UUID
    task_id: uuid.UUID
    from_status: TaskStatus | None
    to_status: TaskStatus
    at: datetime
    actor_id: uuid.UUID | None
    device_id: str | None
    location: Point | None
    accuracy_m: float | None
    note: str | None
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class Task(Output):
    """A task dispatched to a person or a unit."""

    id: uuid.UUID
    incident_id: uuid.UUID | None
    title: str
    description: str | None
    location: Point
    priority: Priority
    deadline: datetime | None
    assignee_user_id: uuid.UUID | None
    assignee_unit_id: uuid.UUID | None
    status: TaskStatus
    area_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    distance_m: float | None = None
    plan_id: uuid.UUID | None = None
    template_key: str | None = None
    dispatched_at: datetime | None = None
    accept_by: datetime | None = None
    escalated_at: datetime | None = None


class TaskCreate(Input):
    """Dispatch a task. At least one assignee (a person or a unit) is required."""

    title: Name
    location: Point
    incident_id: uuid.UUID | None = None
    description: Text | None = None
    priority: Priority = Priority.NORMAL
    deadline: AwareTime | None = None
    assignee_user_id: uuid.UUID | None = None
    assignee_unit_id: uuid.UUID | None = None
    id: uuid.UUID | None = None


class TaskPatch(Input):
    """Change a task (dispatch only); status changes go through transitions."""

    title: Name | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType | None = msgspec.UNSET
    location: Point | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | msgspec.UnsetType = msgspec.UNSET
    deadline: AwareTime | msgspec.UnsetType | None = msgspec.UNSET
    assignee_user_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    assignee_unit_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


class TaskTransition(Input):
    """Move a task along its status machine, stamped with device and GPS fix."""

    to_status: TaskStatus
    device_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    location: Point | None = None
    accuracy_m: AccuracyM | None = None
    note: Text | None = None
    at: AwareTime | None = None
    id: uuid.UUID | None = None
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class TaskNote(Input):
    """A progress note on a task without a status change, with the fix and photos."""

    note: Text
    device_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    location: Point | None = None
    accuracy_m: AccuracyM | None = None
    at: AwareTime | None = None
    id: uuid.UUID | None = None
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class PositionReport(Input):
    """A responder's last known position (also carried by every transition with a location)."""

    location: Point
    accuracy_m: AccuracyM | None = None
    at: AwareTime | None = None
    device_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class ResponderPosition(Output):
    """A responder, where they were last seen and what they are working on."""

    user_id: uuid.UUID
    display_name: str
    location: Point | None
    accuracy_m: float | None
    at: datetime | None
    current_task_id: uuid.UUID | None


class UnitPosition(Output):
    """A linked unit, its base, its responders and its open tasks."""

    unit_id: uuid.UUID
    name: str
    unit_kind: str | None
    location: Point | None
    open_task_ids: list[uuid.UUID]
    responders: list[ResponderPosition]
