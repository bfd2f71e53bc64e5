"""Emergency plans (预案): versioned documents that turn an incident into dispatched tasks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import Input, Name, Output, Priority, Text
from schemas.dispatch import IncidentType, Level

Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]
UnitKindName = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=30 * 24 * 3600)]


class TaskTemplate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to dispatch to one kind of linked unit when the plan runs.

    `required_count` units of `unit_kind` get one task each (the nearest first);
    `accept_window_s` overrides the server's escalation window; `reassign_on_decline` sends a
    declined task on to the next nearest unit of the kind.
    """

    key: Key
    unit_kind: UnitKindName
    title: Name
    instructions: Text | None = None
    priority: Priority = Priority.HIGH
    deadline_offset_s: Seconds | None = None
    required_count: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1
    accept_window_s: Annotated[int, msgspec.Meta(ge=10, le=24 * 3600)] | None = None
    reassign_on_decline: bool = True


Templates = Annotated[list[TaskTemplate], msgspec.Meta(min_length=1, max_length=50)]


class PlanCreate(Input):
    """A new plan (version 1). `min_level`: the least severe level it covers (II covers I, II)."""

    code: Key
    name: Name
    incident_type: IncidentType
    min_level: Level
    templates: Templates
    description: Text | None = None


class PlanUpdate(Input):
    """The next version of a plan; absent fields are copied from the current version."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    incident_type: IncidentType | msgspec.UnsetType = msgspec.UNSET
    min_level: Level | msgspec.UnsetType = msgspec.UNSET
    templates: Templates | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class Plan(Output):
    """One version of an emergency plan."""

    id: uuid.UUID
    code: str
    version: int
    name: str
    description: str | None
    incident_type: IncidentType
    min_level: int
    active: bool
    templates: list[TaskTemplate]
    created_by: uuid.UUID | None
    created_at: datetime


class PlanRun(Output):
    """One slot a plan dispatched for an incident."""

    id: uuid.UUID
    incident_id: uuid.UUID
    plan_id: uuid.UUID
    plan_code: str
    template_key: str
    slot: int
    task_id: uuid.UUID | None
    tried_unit_ids: list[uuid.UUID]
    created_at: datetime
