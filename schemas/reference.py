"""Reference data: administrative areas, organisations, grids, enterprises, resources, contacts."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import NO_NUL, Input, Name, Output, Point, Polygon, Text

# An enterprise's address is stored in a 400-character column (PostgreSQL refuses more).
EnterpriseAddress = Annotated[str, msgspec.Meta(max_length=400, pattern=NO_NUL)]


class AreaLevel(enum.StrEnum):
    """Level of an administrative area."""

    CITY = "city"
    DISTRICT = "district"
    STREET = "street"
    COMMUNITY = "community"


class AdminArea(Output):
    """An administrative area with its boundary."""

    id: uuid.UUID
    name: str
    code: str
    level: AreaLevel
    parent_id: uuid.UUID | None
    boundary: Polygon | None


class AdminAreaCreate(Input):
    """Create an administrative area."""

    name: Name
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    level: AreaLevel
    parent_id: uuid.UUID | None = None
    boundary: Polygon | None = None
    id: uuid.UUID | None = None


class OrgKind(enum.StrEnum):
    """What kind of organisation."""

    COMMAND_CENTRE = "command_centre"
    LINKED_UNIT = "linked_unit"
    GRID_OFFICE = "grid_office"
    ENTERPRISE = "enterprise"


class UnitKind(enum.StrEnum):
    """Kind of linked unit (联动单位)."""

    POLICE = "police"
    FIRE = "fire"
    EMS = "ems"
    TRAFFIC = "traffic"
    POWER = "power"
    GAS = "gas"
    WATER = "water"
    RESCUE = "rescue"


class Organisation(Output):
    """An organisation: command centre, linked unit, grid office or enterprise."""

    id: uuid.UUID
    name: str
    kind: OrgKind
    unit_kind: UnitKind | None
    area_id: uuid.UUID | None
    location: Point | None
    phone: str | None


class OrganisationCreate(Input):
    """Create an organisation."""

    name: Name
    kind: OrgKind
    unit_kind: UnitKind | None = None
    area_id: uuid.UUID | None = None
    location: Point | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    id: uuid.UUID | None = None


class OrganisationPatch(Input):
    """Change an organisation (or linked unit); absent fields stay as they are."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    unit_kind: UnitKind | msgspec.UnsetType | None = msgspec.UNSET
    area_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    location: Point | msgspec.UnsetType | None = msgspec.UNSET
    phone: Annotated[str, msgspec.Meta(max_length=32)] | msgspec.UnsetType | None = msgspec.UNSET


class MemberRole(enum.StrEnum):
    """A user's part in a unit they belong to beyond their home organisation."""

    MEMBER = "member"
    LEADER = "leader"


class Member(Output):
    """Someone who belongs to a unit: by their home organisation, or by a membership."""

    user_id: uuid.UUID
    username: str
    display_name: str
    role: str
    disabled: bool
    #: True: the unit is the user's home organisation (`org_id`); False: a membership
    home: bool
    member_role: MemberRole | None = None


class MemberSet(Input):
    """Add a user to a unit (or change their part in it)."""

    role: MemberRole = MemberRole.MEMBER


class Grid(Output):
    """A patrol grid (网格) with its inspector."""

    id: uuid.UUID
    name: str
    code: str
    area_id: uuid.UUID | None
    boundary: Polygon
    inspector_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class GridCreate(Input):
    """Create a grid."""

    name: Name
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    boundary: Polygon
    inspector_id: uuid.UUID | None = None
    id: uuid.UUID | None = None


class GridPatch(Input):
    """Change a grid; absent fields stay as they are."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    boundary: Polygon | msgspec.UnsetType = msgspec.UNSET
    inspector_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


class EnterprisePatch(Input):
    """Change an enterprise; absent fields stay as they are. A new location moves its grid and
    area with it."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    location: Point | msgspec.UnsetType = msgspec.UNSET
    org_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    address: EnterpriseAddress | msgspec.UnsetType | None = msgspec.UNSET


class Enterprise(Output):
    """An enterprise under safety supervision."""

    id: uuid.UUID
    name: str
    org_id: uuid.UUID | None
    grid_id: uuid.UUID | None
    area_id: uuid.UUID | None
    location: Point
    address: str | None
    kind: str | None = None


EnterpriseKind = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$", examples=["mall"])
]


class EnterpriseCreate(Input):
    """Register an enterprise; its grid and area follow from its location. `kind` (e.g.
    `hazardous_chemicals`, `mall`) lets self-check templates be assigned by kind."""

    name: Name
    location: Point
    org_id: uuid.UUID | None = None
    address: EnterpriseAddress | None = None
    id: uuid.UUID | None = None
    kind: EnterpriseKind | None = None


class ResourceKind(enum.StrEnum):
    """Kind of reference resource."""

    SHELTER = "shelter"
    DEPOT = "depot"
    TEAM = "team"


class Resource(Output):
    """A shelter (避难场所), supply depot (物资储备库) or rescue team."""

    id: uuid.UUID
    kind: ResourceKind
    name: str
    location: Point
    capacity: int | None
    contact_name: str | None
    phone: str | None
    address: str | None
    area_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    distance_m: float | None = None


class ResourceCreate(Input):
    """Create a resource."""

    kind: ResourceKind
    name: Name
    location: Point
    capacity: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] | None = None
    contact_name: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    address: Text | None = None
    id: uuid.UUID | None = None


class ResourcePatch(Input):
    """Change a resource; absent fields stay as they are."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    location: Point | msgspec.UnsetType = msgspec.UNSET
    capacity: Annotated[int, msgspec.Meta(ge=0, le=10000000)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    contact_name: Annotated[str, msgspec.Meta(max_length=100)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    phone: Annotated[str, msgspec.Meta(max_length=32)] | msgspec.UnsetType | None = msgspec.UNSET
    address: Text | msgspec.UnsetType | None = msgspec.UNSET


class ContactKind(enum.StrEnum):
    """Whose number a contact is."""

    UNIT_DUTY = "unit_duty"  # a linked unit's duty line (110, 119, 120, ...)
    ORG_DUTY = "org_duty"  # another organisation's duty line (command centre, depot, ...)
    PERSON = "person"


Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^\+?[0-9][0-9 ()-]*$")]
ContactName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
RoleTitle = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
AreaIds = Annotated[list[uuid.UUID], msgspec.Meta(max_length=200)]


class Contact(Output):
    """A phone number to call (通讯录): a duty line or a person, and the areas it serves.

    `name_en` is the English name when an administrator entered one; `area_ids` empty means it
    serves everywhere; `duty` marks the duty lines that warnings reach by SMS.
    """

    id: uuid.UUID
    kind: ContactKind
    name: str
    name_en: str | None
    phone: str
    org_id: uuid.UUID | None
    user_id: uuid.UUID | None
    role_title: str | None
    area_ids: list[uuid.UUID]
    duty: bool
    notes: str | None
    created_at: datetime
    updated_at: datetime


class ContactCreate(Input):
    """Create a contact; a retried create with the same `id` returns the first result."""

    kind: ContactKind
    name: ContactName
    phone: Phone
    name_en: ContactName | None = None
    org_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    role_title: RoleTitle | None = None
    area_ids: AreaIds = msgspec.field(default_factory=list)
    duty: bool = False
    notes: Text | None = None
    id: uuid.UUID | None = None


class ContactPatch(Input):
    """Change a contact; absent fields stay as they are."""

    kind: ContactKind | msgspec.UnsetType = msgspec.UNSET
    name: ContactName | msgspec.UnsetType = msgspec.UNSET
    phone: Phone | msgspec.UnsetType = msgspec.UNSET
    name_en: ContactName | msgspec.UnsetType | None = msgspec.UNSET
    org_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    user_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    role_title: RoleTitle | msgspec.UnsetType | None = msgspec.UNSET
    area_ids: AreaIds | msgspec.UnsetType = msgspec.UNSET
    duty: bool | msgspec.UnsetType = msgspec.UNSET
    notes: Text | msgspec.UnsetType | None = msgspec.UNSET
