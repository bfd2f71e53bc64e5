"""Shared wire types: GeoJSON geometry, pages, problem details, enums used across domains."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

import msgspec

Lon = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0, description="WGS-84 longitude")]
Lat = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0, description="WGS-84 latitude")]
Position = tuple[Lon, Lat]
Ring = Annotated[list[Position], msgspec.Meta(min_length=4, max_length=10_000)]
# Every time a client sends must carry its zone: stored times are UTC, and a naive time would be
# guessed. msgspec refuses a naive value at decode, naming the field.
AwareTime = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with a zone")]
# PostgreSQL cannot store NUL in text; refuse it at decode, on every door (REST and sync).
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, msgspec.Meta(max_length=4000, pattern=NO_NUL)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
AccuracyM = Annotated[float, msgspec.Meta(ge=0.0, le=100_000.0)]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are refused, not ignored."""


class Output(msgspec.Struct, kw_only=True):
    """Base of every response body."""


class Point(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="Point"):
    """A GeoJSON point in WGS-84, coordinates in (lon, lat) order."""

    coordinates: Position


class Polygon(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="Polygon"):
    """A GeoJSON polygon in WGS-84: an outer ring and optional holes, each closed."""

    coordinates: Annotated[list[Ring], msgspec.Meta(min_length=1, max_length=100)]


class MultiPolygon(
    msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="MultiPolygon"
):
    """A GeoJSON multipolygon in WGS-84."""

    coordinates: Annotated[list[list[Ring]], msgspec.Meta(min_length=1, max_length=100)]


Area = Polygon | MultiPolygon


class Feature(msgspec.Struct, tag_field="type", tag="Feature"):
    """A GeoJSON feature."""

    id: str
    geometry: Point | Polygon | MultiPolygon | None
    properties: dict[str, Any]


class FeatureCollection(msgspec.Struct, tag_field="type", tag="FeatureCollection"):
    """A GeoJSON feature collection, with the page cursor as a foreign member."""

    features: list[Feature]
    next_cursor: str | None = None


class ProblemField(Output):
    """One field at fault in a refused request."""

    field: str
    message: str


class ProblemDetails(Output):
    """RFC 9457 problem details (`application/problem+json`), the body of every error answer."""

    title: str
    status: int
    type: str = "about:blank"
    detail: str | None = None
    instance: str | None = None
    code: str | None = None
    errors: list[ProblemField] | None = None


class Language(enum.StrEnum):
    """A person's saved language for pushes and exports (the catalogues of `i18n.LANGS`)."""

    ZH_CN = "zh_CN"
    EN = "en"


Problem = ProblemDetails


class Role(enum.StrEnum):
    """What a user does; decides which routes and records they reach."""

    ADMIN = "admin"
    DISPATCHER = "dispatcher"
    RESPONDER = "responder"
    INSPECTOR = "inspector"
    ENTERPRISE_STAFF = "enterprise_staff"


class Priority(enum.StrEnum):
    """Urgency of a task."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
