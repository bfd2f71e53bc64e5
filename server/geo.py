"""Geometry between the wire (GeoJSON Structs), shapely and the two spatial databases.

Coordinates are WGS-84 (EPSG:4326), GeoJSON order (lon, lat). Distances are metres on the
ellipsoid on both backends (PostGIS geography, SpatiaLite `ST_Distance(a, b, 1)`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from geoalchemy2 import Geography
from geoalchemy2.elements import WKBElement
from geoalchemy2.shape import from_shape, to_shape
from shapely import MultiPolygon as ShMultiPolygon
from shapely import Point as ShPoint
from shapely import Polygon as ShPolygon
from shapely.geometry import mapping, shape
from shapely.validation import explain_validity
from sqlalchemy import ColumnElement, Table, and_, bindparam, cast, func, text
from sqlalchemy.orm import InstrumentedAttribute

from i18n import N_
from schemas.common import MultiPolygon, Point, Polygon
from server.errors import InvalidInput

SRID = 4326
EARTH_M_PER_DEG = 111_320.0
MAX_RADIUS_M = 500_000.0
_bind_ids = itertools.count()


def point_to_db(p: Point) -> WKBElement:
    """A wire point as a database value."""
    lon, lat = p.coordinates
    return from_shape(ShPoint(lon, lat), srid=SRID)


def point_from_db(value: Any) -> Point | None:
    """A database point as a wire point."""
    if value is None:
        return None
    geom = to_shape(value)
    return Point(coordinates=(geom.x, geom.y))


class MissingGeometry(ValueError):
    """A NOT NULL geometry column came back empty: the database is inconsistent."""


def point_required(value: Any) -> Point:
    """A database point that must be present."""
    p = point_from_db(value)
    if p is None:
        raise MissingGeometry("point is missing")
    return p


def _shapely_area(area: Polygon | MultiPolygon, field: str) -> ShPolygon | ShMultiPolygon:
    for ring_set in [area.coordinates] if isinstance(area, Polygon) else area.coordinates:
        for ring in ring_set:
            if ring[0] != ring[-1]:
                raise InvalidInput(N_("a polygon ring must be closed (first == last)"), field=field)
    geom = shape({"type": area.__struct_config__.tag, "coordinates": area.coordinates})
    if not geom.is_valid:
        raise InvalidInput(
            N_("invalid polygon: {reason}"), reason=explain_validity(geom), field=field
        )
    if geom.is_empty or geom.area == 0:
        raise InvalidInput(N_("polygon has no area"), field=field)
    if not isinstance(geom, ShPolygon | ShMultiPolygon):
        raise InvalidInput(N_("expected a polygon"), field=field)
    return geom


def polygon_to_db(area: Polygon, field: str = "area") -> WKBElement:
    """A validated wire polygon as a database value; self-intersections are refused."""
    return from_shape(_shapely_area(area, field), srid=SRID)


def multipolygon_to_db(area: Polygon | MultiPolygon, field: str = "area") -> WKBElement:
    """A validated polygon or multipolygon stored as a MULTIPOLYGON."""
    geom = _shapely_area(area, field)
    if isinstance(geom, ShPolygon):
        geom = ShMultiPolygon([geom])
    return from_shape(geom, srid=SRID)


def area_from_db(value: Any) -> Polygon | MultiPolygon | None:
    """A database polygon/multipolygon as a wire value (a one-part multipolygon as a polygon)."""
    if value is None:
        return None
    geom = to_shape(value)
    if isinstance(geom, ShMultiPolygon) and len(geom.geoms) == 1:
        geom = geom.geoms[0]
    gj = mapping(geom)
    if gj["type"] == "Polygon":
        return Polygon(coordinates=[[(x, y) for x, y, *_ in ring] for ring in gj["coordinates"]])
    return MultiPolygon(
        coordinates=[[[(x, y) for x, y, *_ in ring] for ring in poly] for poly in gj["coordinates"]]
    )


def area_required(value: Any) -> Polygon | MultiPolygon:
    """A database area that must be present."""
    area = area_from_db(value)
    if area is None:
        raise MissingGeometry("area is missing")
    return area


def polygon_from_db(value: Any) -> Polygon | None:
    """A database polygon as a wire polygon (None when absent)."""
    area = area_from_db(value)
    if area is not None and not isinstance(area, Polygon):
        raise MissingGeometry("expected a polygon, found a multipolygon")
    return area


def polygon_required(value: Any) -> Polygon:
    """A database polygon that must be present."""
    area = polygon_from_db(value)
    if area is None:
        raise MissingGeometry("polygon is missing")
    return area


# ---- query parameters ------------------------------------------------------------------------


def parse_near(near: str, radius_m: float | None) -> tuple[float, float, float]:
    """`near=LON,LAT` with `radius_m` into (lon, lat, radius)."""
    try:
        lon_s, lat_s = near.split(",")
        lon, lat = float(lon_s), float(lat_s)
    except ValueError as exc:
        raise InvalidInput(N_("near must be LON,LAT"), field="near") from exc
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or math.isnan(lon) or math.isnan(lat):
        raise InvalidInput(N_("near: coordinates out of range"), field="near")
    if radius_m is None:
        raise InvalidInput(N_("radius_m is required with near"), field="radius_m")
    if not (0 < radius_m <= MAX_RADIUS_M):
        raise InvalidInput(
            N_("radius_m must be in (0, {max}]"), max=f"{MAX_RADIUS_M:.0f}", field="radius_m"
        )
    return lon, lat, radius_m


def parse_point(point: str | None) -> tuple[float, float] | None:
    """`point=LON,LAT` (WGS-84 degrees) as a tuple, None when absent (the public warning routes
    and the residents' stream)."""
    if point is None:
        return None
    try:
        lon_s, lat_s = point.split(",")
        lon, lat = float(lon_s), float(lat_s)
    except ValueError:
        raise InvalidInput(N_("point is LON,LAT in WGS-84 degrees"), field="point") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or math.isnan(lon + lat):
        raise InvalidInput(N_("point is outside WGS-84 bounds"), field="point")
    return lon, lat


def parse_bbox(bbox: str) -> tuple[float, float, float, float]:
    """`bbox=W,S,E,N` into a validated tuple."""
    try:
        w, s, e, n = (float(x) for x in bbox.split(","))
    except ValueError as exc:
        raise InvalidInput(N_("bbox must be W,S,E,N"), field="bbox") from exc
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InvalidInput(N_("bbox: need -180<=W<E<=180 and -90<=S<N<=90"), field="bbox")
    return w, s, e, n


def radius_bbox(lon: float, lat: float, radius_m: float) -> tuple[float, float, float, float]:
    """A lon/lat box that surely contains the circle (for the index pre-filter)."""
    dlat = radius_m / EARTH_M_PER_DEG * 1.01
    coslat = max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-6)
    dlon = min(radius_m / (EARTH_M_PER_DEG * coslat) * 1.01, 180.0)
    return (
        max(lon - dlon, -180.0),
        max(lat - dlat, -90.0),
        min(lon + dlon, 180.0),
        min(lat + dlat, 90.0),
    )


# ---- dialect-aware SQL -----------------------------------------------------------------------


def _envelope(dialect: str, w: float, s: float, e: float, n: float) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.BuildMbr(w, s, e, n, SRID)
    return func.ST_MakeEnvelope(w, s, e, n, SRID)


def in_box(
    dialect: str, column: InstrumentedAttribute[Any], box: tuple[float, float, float, float]
) -> ColumnElement[bool]:
    """Rows whose geometry intersects the box, using the spatial index on both backends."""
    w, s, e, n = box
    if dialect == "sqlite":
        table = column.class_.__table__
        if not isinstance(table, Table):
            raise TypeError("spatial filters need a mapped table")
        # SpatiaLite's R-tree is reached through the SpatialIndex virtual table. Bind names
        # are numbered so that two box filters can share one statement.
        k = next(_bind_ids)
        idx = text(
            f"{table.name}.ROWID IN (SELECT ROWID FROM SpatialIndex WHERE "  # noqa: S608
            f"f_table_name = :t{k} AND f_geometry_column = :c{k} AND "
            f"search_frame = BuildMbr(:w{k}, :s{k}, :e{k}, :n{k}, 4326))"
        ).bindparams(
            bindparam(f"t{k}", table.name),
            bindparam(f"c{k}", column.key),
            bindparam(f"w{k}", w),
            bindparam(f"s{k}", s),
            bindparam(f"e{k}", e),
            bindparam(f"n{k}", n),
        )
        return and_(idx, func.ST_Intersects(column, _envelope(dialect, w, s, e, n)) == 1)
    return and_(
        column.op("&&")(_envelope(dialect, w, s, e, n)),
        func.ST_Intersects(column, _envelope(dialect, w, s, e, n)),
    )


def distance_m(
    dialect: str, column: InstrumentedAttribute[Any], lon: float, lat: float
) -> ColumnElement[float]:
    """Geodesic distance in metres from the point to the geometry."""
    pt = func.ST_GeomFromText(f"POINT({lon!r} {lat!r})", SRID)
    if dialect == "sqlite":
        return func.ST_Distance(column, pt, 1)
    return func.ST_Distance(cast(column, Geography), cast(pt, Geography))


def within_polygon(
    dialect: str, column: InstrumentedAttribute[Any], area: Polygon | MultiPolygon
) -> ColumnElement[bool]:
    """Rows whose geometry intersects the polygon (index-assisted by its bounding box)."""
    geom = _shapely_area(area, "polygon")
    w, s, e, n = geom.bounds
    poly = func.ST_GeomFromText(geom.wkt, SRID)
    test = func.ST_Intersects(column, poly)
    box = in_box(dialect, column, (w, s, e, n))
    return and_(box, test == 1 if dialect == "sqlite" else test)


def contains_point(
    dialect: str, column: InstrumentedAttribute[Any], lon: float, lat: float
) -> ColumnElement[bool]:
    """Rows whose polygon contains the point (a point on the boundary does not count)."""
    return _point_test(dialect, column, lon, lat, func.ST_Contains)


def covers_point(
    dialect: str, column: InstrumentedAttribute[Any], lon: float, lat: float
) -> ColumnElement[bool]:
    """Rows whose area covers the point, its boundary included (ST_Intersects)."""
    return _point_test(dialect, column, lon, lat, func.ST_Intersects)


def _point_test(
    dialect: str, column: InstrumentedAttribute[Any], lon: float, lat: float, fn: Any
) -> ColumnElement[bool]:
    pt = func.ST_GeomFromText(f"POINT({lon!r} {lat!r})", SRID)
    test = fn(column, pt)
    eps = 1e-9
    box = in_box(dialect, column, (lon - eps, lat - eps, lon + eps, lat + eps))
    return and_(box, test == 1 if dialect == "sqlite" else test)
