"""Per-field merge rules and the registry of synced entities.

An entity syncs because it is declared here, not because the engine knows about it: later issues
add entities with `register(EntitySpec(...))` and nothing in `sync/` changes.

Each field carries a `FieldRule` that the merge in `sync.merge` applies:

- `LWW`: last writer wins by hybrid logical clock, ties broken by device id, so every node that
  sees the same two writes picks the same winner. The loser is kept as a conflict record.
- `STATE_MACHINE`: the field follows a state machine from `schemas.states`. A legal step is
  applied; a stale value whose rank is not above the current one loses (kept as a conflict, never
  reverting a later status); a jump forward that the machine does not allow is refused.
- `APPEND_ONLY`: a list whose items (dicts with an `"id"` key, or scalars such as media ids) are
  unioned; nothing is ever removed by a client, so concurrent appends never conflict.
- `SERVER_OWNED`: only the server writes it; a client write is refused.

`ValueKind` is a light type check done before merging so malformed values are refused with a
typed reason instead of reaching storage.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.states import (
    HAZARD_RANK,
    HAZARD_TRANSITIONS,
    TASK_RANK,
    TASK_TRANSITIONS,
    HazardStatus,
    IncidentStatus,
    TaskStatus,
)


class FieldRule(enum.StrEnum):
    """How concurrent writes to one field merge."""

    LWW = "lww"
    STATE_MACHINE = "state"
    APPEND_ONLY = "append"
    SERVER_OWNED = "server"


class ValueKind(enum.StrEnum):
    """The JSON shape a field's value must have (checked on every client write)."""

    ANY = "any"
    STR = "str"
    INT = "int"
    NUMBER = "number"
    BOOL = "bool"
    UUID = "uuid"
    DATETIME = "datetime"
    POINT = "point"
    LIST = "list"
    DICT = "dict"


@dataclass(frozen=True, slots=True)
class StateMachine:
    """A status field's machine: allowed steps and the rank used to spot stale values."""

    name: str
    values: frozenset[str]
    transitions: Mapping[str, frozenset[str]]
    rank: Mapping[str, int]

    def can_step(self, old: str, new: str) -> bool:
        """True when `old -> new` is an allowed step (staying put is not a step)."""
        return new in self.transitions.get(old, frozenset())


def _machine(
    name: str,
    enum_cls: type[enum.StrEnum],
    transitions: Mapping[Any, frozenset[Any]],
    rank: Mapping[Any, int],
) -> StateMachine:
    return StateMachine(
        name=name,
        values=frozenset(str(v) for v in enum_cls),
        transitions={str(k): frozenset(str(x) for x in v) for k, v in transitions.items()},
        rank={str(k): r for k, r in rank.items()},
    )


TASK_MACHINE = _machine("task", TaskStatus, TASK_TRANSITIONS, TASK_RANK)
HAZARD_MACHINE = _machine("hazard", HazardStatus, HAZARD_TRANSITIONS, HAZARD_RANK)

# schemas/states.py has no rank map for incidents; incidents are read-only to phones, so the
# rank only orders server writes. CONTAINED and RESPONDING share a rank because either may
# follow the other.
_INCIDENT_RANK = {
    IncidentStatus.OPEN: 0,
    IncidentStatus.RESPONDING: 1,
    IncidentStatus.CONTAINED: 1,
    IncidentStatus.CLOSED: 2,
}
INCIDENT_MACHINE = _machine(
    "incident",
    IncidentStatus,
    {
        IncidentStatus.OPEN: frozenset({IncidentStatus.RESPONDING, IncidentStatus.CLOSED}),
        IncidentStatus.RESPONDING: frozenset({IncidentStatus.CONTAINED, IncidentStatus.CLOSED}),
        IncidentStatus.CONTAINED: frozenset({IncidentStatus.RESPONDING, IncidentStatus.CLOSED}),
        IncidentStatus.CLOSED: frozenset(),
    },
    _INCIDENT_RANK,
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One synced field: its merge rule, value kind, and state machine if it has one."""

    rule: FieldRule
    kind: ValueKind = ValueKind.ANY
    nullable: bool = True
    machine: StateMachine | None = None

    def check(self, value: Any) -> str | None:
        """Return None when `value` fits this field, else a short human reason."""
        if value is None:
            return None if self.nullable else "must not be null"
        if self.machine is not None:
            if not isinstance(value, str) or value not in self.machine.values:
                return f"not a {self.machine.name} status"
            return None
        if self.rule is FieldRule.APPEND_ONLY:
            return _check_items(value)
        return _KIND_CHECKS[self.kind](value)


_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
# RFC 3339 with an explicit offset: times on the wire are timezone-aware.
_DT_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$",
)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_point(v: Any) -> str | None:
    if not isinstance(v, dict) or v.get("type") != "Point":
        return "not a GeoJSON Point"
    coords = v.get("coordinates")
    if not isinstance(coords, list) or len(coords) not in (2, 3):
        return "Point needs [lon, lat]"
    if not all(_is_number(c) for c in coords):
        return "coordinates must be numbers"
    lon, lat = coords[0], coords[1]
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        return "coordinates out of WGS-84 range"
    return None


def _check_items(v: Any) -> str | None:
    if not isinstance(v, list):
        return "append-only field takes a list of items"
    for item in v:
        if isinstance(item, dict):
            if not isinstance(item.get("id"), str | int) or isinstance(item.get("id"), bool):
                return "append-only items need a string or integer 'id'"
        elif not isinstance(item, str | int) or isinstance(item, bool):
            return "append-only items are ids or objects with an 'id'"
    return None


_KIND_CHECKS: Mapping[ValueKind, Callable[[Any], str | None]] = {
    ValueKind.ANY: lambda v: None,
    ValueKind.STR: lambda v: None if isinstance(v, str) else "not a string",
    ValueKind.INT: lambda v: (
        None if isinstance(v, int) and not isinstance(v, bool) else "not an integer"
    ),
    ValueKind.NUMBER: lambda v: None if _is_number(v) else "not a finite number",
    ValueKind.BOOL: lambda v: None if isinstance(v, bool) else "not a boolean",
    ValueKind.UUID: lambda v: (
        None if isinstance(v, str) and _UUID_RE.match(v) else "not a UUID string"
    ),
    ValueKind.DATETIME: lambda v: (
        None if isinstance(v, str) and _DT_RE.match(v) else "not an RFC 3339 UTC time"
    ),
    ValueKind.POINT: _check_point,
    ValueKind.LIST: lambda v: None if isinstance(v, list) else "not a list",
    ValueKind.DICT: lambda v: None if isinstance(v, dict) else "not an object",
}


def item_key(item: Any) -> Any:
    """Identity of an append-only item: its `"id"` if it is an object, else the item itself."""
    if isinstance(item, dict):
        return ("id", item.get("id"))
    return item


def lww(kind: ValueKind = ValueKind.ANY, *, nullable: bool = True) -> FieldSpec:
    """A last-writer-wins field."""
    return FieldSpec(FieldRule.LWW, kind, nullable)


def status(machine: StateMachine) -> FieldSpec:
    """A status field following `machine`."""
    return FieldSpec(FieldRule.STATE_MACHINE, ValueKind.STR, nullable=False, machine=machine)


def append_only() -> FieldSpec:
    """An append-only collection of items."""
    return FieldSpec(FieldRule.APPEND_ONLY, ValueKind.LIST, nullable=False)


def server_owned(kind: ValueKind = ValueKind.ANY) -> FieldSpec:
    """A field only the server writes."""
    return FieldSpec(FieldRule.SERVER_OWNED, kind)


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """A synced entity.

    `client_writable=False` makes every client mutation of the entity a refusal (reference data);
    `client_deletable` allows a client delete (a tombstone that wins over concurrent edits).
    `scope_doc` says in words which scopes carry the entity; the server's policy computes them.
    """

    name: str
    fields: Mapping[str, FieldSpec]
    client_writable: bool = True
    client_deletable: bool = False
    scope_doc: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


class Registry:
    """Name -> EntitySpec. The engine looks entities up here and nowhere else."""

    def __init__(self) -> None:
        self._specs: dict[str, EntitySpec] = {}

    def register(self, spec: EntitySpec) -> EntitySpec:
        """Add `spec`; a second entity with the same name is a programming error."""
        if spec.name in self._specs:
            raise ValueError(f"entity {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> EntitySpec | None:
        """The spec of entity `name`, or None."""
        return self._specs.get(name)

    def __getitem__(self, name: str) -> EntitySpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[EntitySpec]:
        return iter(self._specs.values())


REGISTRY = Registry()
register = REGISTRY.register

K = ValueKind

register(
    EntitySpec(
        name="task",
        fields={
            "incident_id": lww(K.UUID),
            "title": lww(K.STR),
            "description": lww(K.STR),
            "location": lww(K.POINT),
            # The REST priority is a word (schemas.common.Priority), not a number.
            "priority": lww(K.STR),
            "deadline": lww(K.DATETIME),
            "assignee_user_id": lww(K.UUID),
            "assignee_unit_id": lww(K.UUID),
            "status": status(TASK_MACHINE),
            "timeline": append_only(),
            "area_id": server_owned(K.UUID),
            "plan_id": server_owned(K.UUID),
            "dispatched_at": server_owned(K.DATETIME),
            "accept_by": server_owned(K.DATETIME),
            # No `updated_at` on the domain entities: every change would carry the server's row
            # time to every phone; `version` orders changes and the timeline dates each step.
            "created_at": server_owned(K.DATETIME),
        },
        client_deletable=True,
        scope_doc="the assignee unit's and assignee user's scopes, and its area (dispatch); "
        "devices move it with `task_step`",
    )
)

register(
    EntitySpec(
        name="incident",
        fields={
            "type": lww(K.STR),
            "level": lww(K.INT),
            "title": lww(K.STR),
            "description": lww(K.STR),
            "location": lww(K.POINT),
            "area_id": lww(K.UUID),
            "status": status(INCIDENT_MACHINE),
            "source": lww(K.STR),
            "created_at": server_owned(K.DATETIME),
        },
        client_writable=False,
        scope_doc="scopes of units holding one of its tasks, and its area",
    )
)

register(
    EntitySpec(
        name="hazard",
        fields={
            # The names and meanings of REST's `schemas.hazards.Hazard` (one definition).
            "category": lww(K.STR),
            "severity": lww(K.STR),
            "description": lww(K.STR),
            "location": lww(K.POINT),
            "accuracy_m": lww(K.NUMBER),
            "reported_at": lww(K.DATETIME),
            # Steps go through `hazard_step` (the closed loop's rules); a device never writes
            # `status` or `timeline` directly. The machine orders the server's own writes.
            "status": status(HAZARD_MACHINE),
            "status_reason": server_owned(K.STR),
            "reporter_id": server_owned(K.UUID),
            "grid_id": server_owned(K.UUID),
            "area_id": server_owned(K.UUID),
            "enterprise_id": lww(K.UUID),
            "rectify_org_id": server_owned(K.UUID),
            "rectify_enterprise_id": server_owned(K.UUID),
            "rectify_deadline": server_owned(K.DATETIME),
            "overdue": server_owned(K.BOOL),
            "photo_ids": append_only(),
            # Where it came from (set by the server from who reports and how, or by dispatch):
            # `schemas.hazards.HazardSource`; a self-check's hazard names its submission/item.
            "source": server_owned(K.STR),
            "check_submission_id": server_owned(K.UUID),
            "check_item_id": server_owned(K.UUID),
            # At the report only, as REST's `HazardCreate`: photos named by hash are declared
            # (pending until their bytes arrive), so an offline phone need not declare first.
            "photo_sha256": lww(K.LIST),
            "timeline": append_only(),
            "created_at": server_owned(K.DATETIME),
        },
        client_deletable=True,
        scope_doc="its grid's scope, its enterprise's scope, its reporter's own scope, its area",
    )
)

register(
    EntitySpec(
        name="media",
        fields={
            "sha256": server_owned(K.STR),
            "content_type": server_owned(K.STR),
            "size": server_owned(K.INT),
            "width": server_owned(K.INT),
            "height": server_owned(K.INT),
            "status": server_owned(K.STR),  # pending until the bytes arrive, then stored
            "uploaded_by": server_owned(K.UUID),
            # The scopes of the hazards the photo is attached to: it travels with them.
            "shared_with": server_owned(K.LIST),
            "created_at": server_owned(K.DATETIME),
        },
        # Photos are declared and uploaded through the API (tus, checked by hash and content);
        # a device attaches them to a hazard through the hazard's `photos`.
        client_writable=False,
        scope_doc="its uploader's own scope and the scopes of the hazards it is attached to",
    )
)

register(
    EntitySpec(
        name="check_template",
        fields={
            "code": lww(K.STR),
            "name": lww(K.STR),
            "version": lww(K.INT),
            # [{id, position, text, category}] in position order; a template never changes
            # after publication (a new version is a new template).
            "items": lww(K.LIST),
            "active": lww(K.BOOL),
        },
        client_writable=False,
        scope_doc="reference data for everyone (`ref`)",
    )
)

register(
    EntitySpec(
        name="check_submission",
        fields={
            "enterprise_id": lww(K.UUID),
            "template_id": lww(K.UUID),
            "week": lww(K.STR),
            # [{item_id, result, note?, photo_ids}]: one value for the whole checklist, filled
            # by one safety officer; a half-merged checklist would be worse than a kept
            # conflict. A submission is final: a device creates it once, never edits it.
            "results": lww(K.LIST, nullable=False),
            "submitted_by": server_owned(K.UUID),
            "submitted_at": server_owned(K.DATETIME),
            "grid_id": server_owned(K.UUID),  # the enterprise's, for the inspector's scope
            "area_id": server_owned(K.UUID),  # the enterprise's, for dispatch's scope
        },
        scope_doc="its enterprise's scope, its enterprise's grid and area scopes",
    )
)

register(
    EntitySpec(
        name="check_due",
        fields={
            # One enterprise's check of one template for one ISO week, written by the server
            # (the week opens, the reminder, the missed flag, the submission): read-only.
            "enterprise_id": server_owned(K.UUID),
            "template_id": server_owned(K.UUID),
            "template_code": server_owned(K.STR),
            "week": server_owned(K.STR),
            "due_at": server_owned(K.DATETIME),  # the end of the due day
            "status": server_owned(K.STR),  # due | done | missed
            "submission_id": server_owned(K.UUID),
            "submitted_at": server_owned(K.DATETIME),
            "reminded_at": server_owned(K.DATETIME),
            "missed_at": server_owned(K.DATETIME),
            "grid_id": server_owned(K.UUID),
            "area_id": server_owned(K.UUID),
        },
        client_writable=False,
        scope_doc="its enterprise's scope, its enterprise's grid and area scopes",
    )
)

register(
    EntitySpec(
        name="grid",
        fields={
            "name": lww(K.STR),
            "code": lww(K.STR),
            "area": lww(K.DICT),
            "inspector_ids": lww(K.LIST),
        },
        client_writable=False,
        scope_doc="its inspectors' scopes",
    )
)

register(
    EntitySpec(
        name="resource",
        fields={
            "kind": lww(K.STR),
            "name": lww(K.STR),
            "location": lww(K.POINT),
            "address": lww(K.STR),
            "capacity": lww(K.INT),
            "contact": lww(K.STR),
            "phone": lww(K.STR),
            "details": lww(K.DICT),
            "area_id": server_owned(K.UUID),  # its deepest area: the `refarea:` scope
        },
        client_writable=False,
        scope_doc="reference data of its area (`refarea:A`; no area: `ref`), read by users of "
        "that area, of its neighbours and of their tasks' areas",
    )
)

register(
    EntitySpec(
        name="alert",
        # A public warning (CAP 1.2), one record per warning (id = its first message's id),
        # holding its current message: an Update replaces the values, a Cancel deletes the
        # record. Every field is the server's; docs/sync-protocol.md lists what each means.
        fields={
            "message_id": lww(K.UUID),
            "identifier": lww(K.STR),
            "sender": lww(K.STR),
            "sent": lww(K.DATETIME),
            "status": lww(K.STR),
            "msg_type": lww(K.STR),
            "references": lww(K.LIST),
            "color": lww(K.STR),
            "level": lww(K.STR),
            "category": lww(K.LIST),
            "response_type": lww(K.LIST),
            "urgency": lww(K.STR),
            "severity": lww(K.STR),
            "certainty": lww(K.STR),
            "effective": lww(K.DATETIME),
            "onset": lww(K.DATETIME),
            "expires": lww(K.DATETIME),
            "web": lww(K.STR),
            "contact": lww(K.STR),
            "texts": lww(K.DICT),
            "area": lww(K.DICT),
            "circles": lww(K.LIST),
            "geocodes": lww(K.LIST),
            "area_ids": lww(K.LIST),
            "imported": lww(K.BOOL),
            "cap_url": lww(K.STR),
        },
        client_writable=False,
        scope_doc="the deepest areas it covers (`refarea:A`), read by users of those areas, of "
        "their neighbours and above them; administrators all (`refall`)",
    )
)


# ------------------------------------------------------------------ steps: field actions offline
# A step is a command a device creates once (op `c`) with its own id; the server applies it with
# the same domain function the REST endpoint calls, and its effect syncs back in the task's or
# hazard's record (status, timeline, ...). Steps themselves are in no scope: never pulled. Their
# fields are the REST request's (`TaskTransition`/`TaskNote`, `HazardTransition`,
# `PositionReport`) plus the id of the record they act on.

register(
    EntitySpec(
        name="task_step",
        fields={
            "task_id": lww(K.UUID, nullable=False),
            # None: a progress note without a status change (REST: POST /tasks/{id}/notes).
            "to_status": lww(K.STR),
            "note": lww(K.STR),
            "at": lww(K.DATETIME),
            "location": lww(K.POINT),
            "accuracy_m": lww(K.NUMBER),
            "device_id": lww(K.STR),
            "photo_ids": lww(K.LIST),
        },
        scope_doc="none (a command; its effect syncs in the task)",
    )
)

register(
    EntitySpec(
        name="hazard_step",
        fields={
            "hazard_id": lww(K.UUID, nullable=False),
            "to_status": lww(K.STR, nullable=False),
            "note": lww(K.STR),
            "photo_ids": lww(K.LIST),
            "photo_sha256": lww(K.LIST),
            "assignee_enterprise_id": lww(K.UUID),
            "assignee_org_id": lww(K.UUID),
            "deadline": lww(K.DATETIME),
            "at": lww(K.DATETIME),
        },
        scope_doc="none (a command; its effect syncs in the hazard)",
    )
)

register(
    EntitySpec(
        name="position_fix",
        fields={
            "location": lww(K.POINT, nullable=False),
            "accuracy_m": lww(K.NUMBER),
            "at": lww(K.DATETIME),
            "device_id": lww(K.STR),
        },
        scope_doc="none (the last fix per user shows on dispatch's map)",
    )
)

STEP_ENTITIES = frozenset({"task_step", "hazard_step", "position_fix"})
"""Entities that are commands: created once, applied by a domain action, never pulled."""


# ------------------------------------------------------------- reference data scoped by area
# Read-only to devices; scopes in server/domain/sync/reference_scopes.py.

register(
    EntitySpec(
        name="contact",
        fields={
            "kind": lww(K.STR),
            "name": lww(K.STR),
            "name_en": lww(K.STR),
            "phone": lww(K.STR),
            "org_id": lww(K.UUID),
            "user_id": lww(K.UUID),
            "role_title": lww(K.STR),
            "area_ids": lww(K.LIST),
            "duty": lww(K.BOOL),
            "notes": lww(K.STR),
            "created_at": server_owned(K.DATETIME),
            "updated_at": server_owned(K.DATETIME),
        },
        client_writable=False,
        scope_doc="`refarea:A` for each area it serves (none: `ref`), like resources",
    )
)

register(
    EntitySpec(
        name="plan",
        fields={
            "code": lww(K.STR),
            "version": lww(K.INT),
            "name": lww(K.STR),
            "description": lww(K.STR),
            "incident_type": lww(K.STR),
            "min_level": lww(K.INT),
            "active": lww(K.BOOL),
            # The task templates as REST's `schemas.plans.TaskTemplate` dicts.
            "templates": lww(K.LIST),
            "unit_kinds": server_owned(K.LIST),
            "created_at": server_owned(K.DATETIME),
            "updated_at": server_owned(K.DATETIME),
        },
        client_writable=False,
        scope_doc="`plans` (dispatch); while active, `plankind:K` for each unit kind its "
        "templates dispatch (responders of units of that kind)",
    )
)
