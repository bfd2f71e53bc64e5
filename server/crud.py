"""Listing with scope, cursor pagination and spatial filters, shared by every collection route."""

from __future__ import annotations

import base64
import binascii
import enum
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, NoReturn, TypeVar

import msgspec
from litestar import Request, Response
from litestar.params import QueryParameter
from sqlalchemy import ColumnElement, Select, and_, case, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas.common import Feature, FeatureCollection, MultiPolygon, Polygon
from server import changes, geo
from server.auth.principal import Principal
from server.db import dialect_of
from server.errors import Conflict, InvalidInput, NotFound, Term
from server.scope import visible

GEOJSON = "application/geo+json"
T = TypeVar("T")
#: What a record of each table is called in a message (translated with it).
NOUNS: dict[str, str] = {
    "admin_areas": N_("area"),
    "organisations": N_("organisation"),
    "users": N_("user"),
    "memberships": N_("membership"),
    "grids": N_("grid"),
    "enterprises": N_("enterprise"),
    "incidents": N_("incident"),
    "tasks": N_("task"),
    "task_events": N_("task step"),
    "hazards": N_("hazard"),
    "hazard_events": N_("hazard step"),
    "check_templates": N_("check template"),
    "check_items": N_("check item"),
    "check_submissions": N_("check submission"),
    "check_assignments": N_("check assignment"),
    "check_dues": N_("due self-check"),
    "alerts": N_("alert"),
    "alert_chains": N_("warning"),
    "alert_feeds": N_("alert feed"),
    "alert_authorities": N_("warning authority"),
    "resources": N_("resource"),
    "contacts": N_("contact"),
    "devices": N_("device"),
    "media_objects": N_("media object"),
    "emergency_plans": N_("plan"),
}


def noun(model: type[Any]) -> Term:
    """What a record of `model` is called in a message, marked to be translated with it."""
    table: str = model.__tablename__
    return Term(NOUNS.get(table, table))


M = TypeVar("M")


@dataclass(frozen=True)
class ListQuery:
    """Common query parameters of a collection."""

    cursor: str | None
    limit: int
    near: tuple[float, float, float] | None
    bbox: tuple[float, float, float, float] | None
    within: Polygon | MultiPolygon | None


_area_decoder = msgspec.json.Decoder(Polygon | MultiPolygon)
_NUM = r"-?[0-9]{1,3}(\.[0-9]+)?"  # a coordinate in decimal degrees


async def provide_list_query(
    cursor: Annotated[
        str | None, QueryParameter(description="opaque cursor from next_cursor")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500, description="page size")] = 50,
    near: Annotated[
        str | None,
        QueryParameter(
            description="LON,LAT: only records within radius_m of it", pattern=f"^{_NUM},{_NUM}$"
        ),
    ] = None,
    radius_m: Annotated[float | None, QueryParameter(gt=0, description="metres, with near")] = None,
    bbox: Annotated[
        str | None,
        QueryParameter(description="W,S,E,N in WGS-84 degrees", pattern=f"^{_NUM}(,{_NUM}){{3}}$"),
    ] = None,
    within: Annotated[
        str | None, QueryParameter(description="a GeoJSON Polygon or MultiPolygon (JSON text)")
    ] = None,
) -> ListQuery:
    """Parse and validate list parameters (a Litestar dependency)."""
    area: Polygon | MultiPolygon | None = None
    if within is not None:
        try:
            area = _area_decoder.decode(within)
        except msgspec.ValidationError as exc:
            raise InvalidInput(N_("within: {reason}"), reason=str(exc), field="within") from exc
        except msgspec.DecodeError as exc:
            raise InvalidInput(N_("within must be GeoJSON text"), field="within") from exc
    if radius_m is not None and near is None:
        raise InvalidInput(N_("radius_m needs near"), field="radius_m")
    return ListQuery(
        cursor=cursor,
        limit=limit,
        near=geo.parse_near(near, radius_m) if near is not None else None,
        bbox=geo.parse_bbox(bbox) if bbox is not None else None,
        within=area,
    )


def uid_or_none(value: Any) -> uuid.UUID | None:
    """A UUID from a value (a UUID or its string), or None when it is not one."""
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def live_visible(principal: Principal, model: type[Any], *filters: Any) -> list[Any]:
    """WHERE conditions for rows of `model` that are not deleted and `principal` may see."""
    conds: list[Any] = [model.deleted_at.is_(None), *filters]
    scope = visible(principal, model)
    if scope is not None:
        conds.append(scope)
    return conds


def _encode_cursor(key: float | None, ident: uuid.UUID) -> str:
    raw = msgspec.msgpack.encode([key, ident.bytes])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float | None, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, ident = msgspec.msgpack.decode(raw, type=tuple[float | None, bytes])
        return key, uuid.UUID(bytes=ident)
    except (binascii.Error, msgspec.DecodeError, ValueError) as exc:
        raise InvalidInput(N_("cursor is not one this server issued"), field="cursor") from exc


async def list_page(
    session: AsyncSession,
    principal: Principal,
    model: type[M],
    query: ListQuery,
    geom_attr: str,
    filters: Sequence[Any] = (),
) -> tuple[list[tuple[M, float | None]], str | None]:
    """One page of `model` rows the principal may see, with distance when `near` is given.

    Without `near` rows come newest first (ids are time-ordered UUIDv7); with `near` they come
    nearest first. The cursor is a keyset position, stable under concurrent inserts.
    """
    dialect = dialect_of(session)
    column = getattr(model, geom_attr)
    ident = model.id  # type: ignore[attr-defined]
    conds = live_visible(principal, model, *filters)
    if query.bbox is not None:
        conds.append(geo.in_box(dialect, column, query.bbox))
    if query.within is not None:
        conds.append(geo.within_polygon(dialect, column, query.within))
    dist: Any = None
    if query.near is not None:
        lon, lat, radius = query.near
        dist = geo.distance_m(dialect, column, lon, lat)
        conds.append(geo.in_box(dialect, column, geo.radius_bbox(lon, lat, radius)))
        conds.append(dist <= radius)
    stmt: Select[Any] = select(model) if dist is None else select(model, dist.label("distance_m"))
    if query.cursor:
        key, last = _decode_cursor(query.cursor)
        if dist is not None and key is not None:
            conds.append(or_(dist > key, and_(dist == key, ident > last)))
        else:
            conds.append(ident < last)
    stmt = stmt.where(*conds)
    stmt = (
        stmt.order_by(dist.asc(), ident.asc()) if dist is not None else stmt.order_by(ident.desc())
    )
    rows = (await session.execute(stmt.limit(query.limit + 1))).all()
    items = [(r[0], float(r[1]) if dist is not None else None) for r in rows[: query.limit]]
    next_cursor = None
    if len(rows) > query.limit:
        last_row, last_dist = items[-1]
        next_cursor = _encode_cursor(last_dist, last_row.id)
    return items, next_cursor


async def get_visible(
    session: AsyncSession, principal: Principal, model: type[M], ident: uuid.UUID
) -> M:
    """The record, if it exists, is not deleted, and the principal may see it; else NotFound."""
    conds = live_visible(principal, model, model.id == ident)  # type: ignore[attr-defined]
    row = (await session.execute(select(model).where(*conds))).scalar_one_or_none()
    if row is None:
        raise NotFound(N_("no {record} {id}"), record=noun(model), id=ident)
    return row


async def retire_versions(session: AsyncSession, model: Any, code: str) -> list[Any]:
    """Set every active version of `code` (plans, check templates) inactive, each recorded
    for sync; 409 `already_inactive` when none is active. Returns those versions."""
    rows = list(
        (
            await session.execute(
                select(model).where(
                    model.code == code, model.active.is_(True), model.deleted_at.is_(None)
                )
            )
        ).scalars()
    )
    if not rows:
        raise Conflict(
            N_("the {record} is already retired"), record=noun(model), code="already_inactive"
        )
    for version in rows:
        version.active = False
        changes.record(session, version)
    await session.flush()
    return rows


def require_aware(**times: datetime | None) -> None:
    """Query-string times must carry their zone (bodies are checked by `AwareTime` at decode)."""
    for name, value in times.items():
        if value is not None and value.tzinfo is None:
            raise InvalidInput(N_("{name} must carry a time zone"), name=name, field=name)


def step_rank(order: Mapping[str, int], to_status: Any, from_status: Any) -> ColumnElement[int]:
    """`schemas.states.step_rank` in SQL, over these columns: where a timeline entry goes among
    those of its instant (task and hazard timelines, `TIMELINE_ORDER` and
    `HAZARD_TIMELINE_ORDER`)."""
    rank = case(dict(order), value=to_status, else_=len(order))
    return 2 * rank + case((from_status == to_status, 1), else_=0)


def apply_patch(row: Any, data: msgspec.Struct, names: Sequence[str]) -> dict[str, Any]:
    """Copy the fields of `names` that the patch actually sent onto `row` (enums as their
    stored value); return them."""
    changed: dict[str, Any] = {}
    for name in names:
        value = getattr(data, name)
        if value is not msgspec.UNSET:
            value = value.value if isinstance(value, enum.Enum) else value
            setattr(row, name, value)
            changed[name] = value
    return changed


Reader = Callable[[AsyncSession, Principal, uuid.UUID], Awaitable[Any]]


async def refuse_taken_id(
    session: AsyncSession,
    principal: Principal,
    model: type[Any],
    ident: uuid.UUID,
    read: Reader | None = None,
) -> NoReturn:
    """A create's client-chosen id is taken (and not by the caller's own retry): answer what a
    read of that id would, so a create reveals nothing a read does not (docs/api.md, "Ids").

    The caller cannot read the record (another's, out of area, deleted): the read's own answer,
    404 `not_found` (or 403 for a role that reads none of these). The caller can read it: 409
    `conflict`, "already exists", which the read would show anyway. `read` is the entity's
    read when it is not `get_visible`."""
    if read is not None:
        await read(session, principal, ident)
    else:
        await get_visible(session, principal, model, ident)
    raise Conflict(N_("a {record} with this id already exists"), record=noun(model), field="id")


_ABSENT = "crud_known_absent"


def note_absent(session: Any, model: type[Any], ids: Iterable[uuid.UUID]) -> None:
    """Remember, for the session's current transaction, that rows `ids` of `model` were just
    read and are not there (a sync push reads and locks its rows before applying them), so
    `get_row` need not ask again, once. Pass the synchronous `Session`."""
    tx = session.get_transaction()
    owner, known = session.info.get(_ABSENT, (None, set()))
    if owner is not tx:
        known = set()
        session.info[_ABSENT] = (tx, known)
    known.update((model, i) for i in ids)


async def get_row(session: AsyncSession, model: type[Any], ident: uuid.UUID) -> Any:
    """`session.get(model, ident)`, without a statement when this transaction just found the
    row absent (`note_absent`). That knowledge answers once: the caller is about to create the
    row, so a later call asks the database again (the row may exist by then)."""
    sync = session.sync_session
    owner, known = sync.info.get(_ABSENT, (None, set()))
    if owner is sync.get_transaction() and (model, ident) in known:
        known.discard((model, ident))
        return None
    return await session.get(model, ident)


async def ensure_new_id(
    session: AsyncSession, principal: Principal, model: type[Any], ident: uuid.UUID | None
) -> None:
    """Refuse a client-chosen id that is already taken, before anything is written: 409 if the
    caller may read that record, else the read's 404 (`refuse_taken_id`)."""
    if ident is not None and await session.get(model, ident) is not None:
        await refuse_taken_id(session, principal, model, ident)


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """A page of items; `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None


def respond(
    request: Request[Any, Any, Any],
    items: list[T],
    next_cursor: str | None,
    geometry: Callable[[T], Any],
) -> Response[Page[T]]:
    """JSON page, or a GeoJSON FeatureCollection when the client accepts geo+json first."""
    best = request.accept.best_match(["application/json", GEOJSON], default="application/json")
    if best == GEOJSON:
        features = []
        for item in items:
            props = msgspec.to_builtins(item)
            geom = geometry(item)
            for key in ("location", "boundary", "area"):
                if props.get(key) is not None and msgspec.to_builtins(geom) == props[key]:
                    props.pop(key)
                    break
            features.append(Feature(id=str(props.get("id")), geometry=geom, properties=props))
        body = FeatureCollection(features=features, next_cursor=next_cursor)
        return Response(content=msgspec.json.encode(body), media_type=GEOJSON)  # type: ignore[arg-type]
    return Response(Page(items=items, next_cursor=next_cursor), media_type="application/json")


REPLAYED = "Idempotent-Replayed"
"""Header on the answer to a retried create or step: the first result, nothing new made."""


def created(body: T, fresh: bool) -> Response[T]:
    """The answer to a create or a step with a client id: 201 when this call made it, 200 and
    `Idempotent-Replayed: true` when a retry found the first result (so a client can tell)."""
    if fresh:
        return Response(body, status_code=201)
    return Response(body, status_code=200, headers={REPLAYED: "true"})
