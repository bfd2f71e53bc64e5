"""Administrative areas, organisations, grids, enterprises, resources and contacts: reads and
writes.

Writes of synced rows (grids, resources, contacts) are recorded in the change log
(`server.changes.record`) in the same transaction.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from geoalchemy2.shape import to_shape
from sqlalchemy import and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas import reference as s
from schemas.common import Point, Role
from schemas.ids import uuid7
from server import audit, changes, geo
from server.auth.principal import Principal
from server.crud import apply_patch, ensure_new_id, refuse_taken_id
from server.db import dialect_of
from server.domain.reference.reach import reference_areas
from server.errors import Forbidden, InvalidInput, NotFound, Term
from server.models import (
    AdminArea,
    Contact,
    Enterprise,
    Grid,
    Organisation,
    Resource,
    User,
    utcnow,
)
from server.scope import home_area_subtree, serving_areas, visible_contacts


def _area_at(dialect: str, lon: float, lat: float) -> Any:
    return (
        select(AdminArea.id)
        .where(
            AdminArea.deleted_at.is_(None),
            geo.contains_point(dialect, AdminArea.boundary, lon, lat),
        )
        .order_by(func.length(AdminArea.path).desc())
        .limit(1)
    )


def _grid_where(dialect: str, lon: float, lat: float) -> Any:
    return and_(Grid.deleted_at.is_(None), geo.contains_point(dialect, Grid.boundary, lon, lat))


def _grid_at(dialect: str, lon: float, lat: float) -> Any:
    return select(Grid.id).where(_grid_where(dialect, lon, lat)).order_by(Grid.code).limit(1)


async def locate_area(session: AsyncSession, lon: float, lat: float) -> uuid.UUID | None:
    """The deepest administrative area containing the point, if any."""
    stmt = _area_at(dialect_of(session), lon, lat)
    return (await session.execute(stmt)).scalar_one_or_none()


async def locate_grid(session: AsyncSession, lon: float, lat: float) -> uuid.UUID | None:
    """The grid containing the point, if any."""
    stmt = _grid_at(dialect_of(session), lon, lat)
    return (await session.execute(stmt)).scalar_one_or_none()


async def locate(
    session: AsyncSession, lon: float, lat: float
) -> tuple[Grid | None, uuid.UUID | None]:
    """The grid (the row: whose inspector a new report notifies, `session.get` finds it while
    the caller holds it) and the area containing the point (`locate_grid`, `locate_area`), in
    one statement."""
    dialect = dialect_of(session)
    anchor = select(literal(1).label("one")).subquery()
    stmt = (
        select(Grid, _area_at(dialect, lon, lat).scalar_subquery())
        .select_from(anchor)
        .outerjoin(Grid, _grid_where(dialect, lon, lat))
        .order_by(Grid.code)
        .limit(1)
    )
    grid, area = (await session.execute(stmt)).one()
    return grid, area


async def ensure_in_my_area(
    session: AsyncSession, p: Principal, area_id: uuid.UUID | None, what: str
) -> None:
    """Dispatchers act only inside their command area; administrators anywhere."""
    if p.role == "admin":
        return
    if area_id is not None:
        inside = await session.execute(
            select(AdminArea.id).where(
                AdminArea.id == area_id, AdminArea.id.in_(home_area_subtree(p))
            )
        )
        if inside.first() is not None:
            return
    raise Forbidden(N_("the {what} is outside your command area"), what=Term(what))


async def relocate(session: AsyncSession, p: Principal, row: Any, point: Point, what: str) -> None:
    """Move a record to `point`: its area follows, and must stay inside the actor's area."""
    lon, lat = point.coordinates
    row.area_id = await locate_area(session, lon, lat)
    await ensure_in_my_area(session, p, row.area_id, what)
    row.location = geo.point_to_db(point)


def area_out(row: AdminArea) -> s.AdminArea:
    """Wire form of an area."""
    return s.AdminArea(
        id=row.id,
        name=row.name,
        code=row.code,
        level=s.AreaLevel(row.level),
        parent_id=row.parent_id,
        boundary=geo.polygon_from_db(row.boundary),
    )


def org_out(row: Organisation) -> s.Organisation:
    """Wire form of an organisation."""
    return s.Organisation(
        id=row.id,
        name=row.name,
        kind=s.OrgKind(row.kind),
        unit_kind=s.UnitKind(row.unit_kind) if row.unit_kind else None,
        area_id=row.area_id,
        location=geo.point_from_db(row.location),
        phone=row.phone,
    )


def grid_out(row: Grid) -> s.Grid:
    """Wire form of a grid."""
    boundary = geo.polygon_required(row.boundary)
    return s.Grid(
        id=row.id,
        name=row.name,
        code=row.code,
        area_id=row.area_id,
        boundary=boundary,
        inspector_id=row.inspector_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def enterprise_out(row: Enterprise) -> s.Enterprise:
    """Wire form of an enterprise."""
    loc = geo.point_required(row.location)
    return s.Enterprise(
        id=row.id,
        name=row.name,
        org_id=row.org_id,
        grid_id=row.grid_id,
        area_id=row.area_id,
        location=loc,
        address=row.address,
        kind=row.kind,
    )


def resource_out(row: Resource, distance_m: float | None = None) -> s.Resource:
    """Wire form of a resource."""
    loc = geo.point_required(row.location)
    return s.Resource(
        id=row.id,
        kind=s.ResourceKind(row.kind),
        name=row.name,
        location=loc,
        capacity=row.capacity,
        contact_name=row.contact_name,
        phone=row.phone,
        address=row.address,
        area_id=row.area_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        distance_m=distance_m,
    )


async def create_area(session: AsyncSession, p: Principal, data: s.AdminAreaCreate) -> AdminArea:
    """Add an area under its parent; its path extends the parent's."""
    await ensure_new_id(session, p, AdminArea, data.id)
    parent_path = "/"
    if data.parent_id is not None:
        parent = await session.get(AdminArea, data.parent_id)
        if parent is None:
            raise InvalidInput(N_("no such parent area"), field="parent_id")
        parent_path = parent.path
    ident = data.id or uuid.uuid4()
    row = AdminArea(
        id=ident,
        name=data.name,
        code=data.code,
        level=data.level.value,
        parent_id=data.parent_id,
        path=f"{parent_path}{ident.hex}/",
        boundary=geo.polygon_to_db(data.boundary, "boundary") if data.boundary else None,
    )
    session.add(row)
    await session.flush()
    audit.record(session, p, "create", "area", row.id, code=data.code)
    return row


async def create_org(
    session: AsyncSession, p: Principal, data: s.OrganisationCreate
) -> Organisation:
    """Add an organisation."""
    await ensure_new_id(session, p, Organisation, data.id)
    if data.kind is s.OrgKind.LINKED_UNIT and data.unit_kind is None:
        raise InvalidInput(N_("a linked unit needs unit_kind"), field="unit_kind")
    row = Organisation(
        name=data.name,
        kind=data.kind.value,
        unit_kind=data.unit_kind.value if data.unit_kind else None,
        area_id=data.area_id,
        location=geo.point_to_db(data.location) if data.location else None,
        phone=data.phone,
    )
    if data.id:
        row.id = data.id
    session.add(row)
    await session.flush()
    audit.record(session, p, "create", "organisation", row.id, name=data.name)
    return row


async def create_grid(session: AsyncSession, p: Principal, data: s.GridCreate) -> Grid:
    """Add a grid; its area is the one containing the polygon's centre."""
    await ensure_new_id(session, p, Grid, data.id)
    boundary = geo.polygon_to_db(data.boundary, "boundary")
    c = to_shape(boundary).representative_point()
    row = Grid(
        name=data.name,
        code=data.code,
        boundary=boundary,
        inspector_id=data.inspector_id,
        area_id=await locate_area(session, c.x, c.y),
    )
    if data.id:
        row.id = data.id
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "create", "grid", row.id, code=data.code)
    return row


async def patch_grid(session: AsyncSession, p: Principal, row: Grid, data: s.GridPatch) -> Grid:
    """Change a grid."""
    changed: dict[str, Any] = {}
    if data.name is not msgspec.UNSET:
        row.name = changed["name"] = data.name
    if data.boundary is not msgspec.UNSET:
        row.boundary = geo.polygon_to_db(data.boundary, "boundary")
        changed["boundary"] = True
    if data.inspector_id is not msgspec.UNSET:
        row.inspector_id = changed["inspector_id"] = data.inspector_id
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "update", "grid", row.id, **changed)
    return row


async def create_enterprise(
    session: AsyncSession, p: Principal, data: s.EnterpriseCreate
) -> Enterprise:
    """Register an enterprise; staff of `org_id` (an enterprise organisation) act for it."""
    await ensure_new_id(session, p, Enterprise, data.id)
    if data.org_id is not None:
        org = await session.get(Organisation, data.org_id)
        if org is None or org.kind != s.OrgKind.ENTERPRISE:
            raise InvalidInput(N_("org_id must be an enterprise organisation"), field="org_id")
    lon, lat = data.location.coordinates
    grid, area_id = await locate(session, lon, lat)
    row = Enterprise(
        name=data.name,
        grid_id=grid.id if grid else None,
        area_id=area_id,
        org_id=data.org_id,
        location=geo.point_to_db(data.location),
        address=data.address,
        kind=data.kind,
    )
    if data.id:
        row.id = data.id
    session.add(row)
    await session.flush()
    audit.record(session, p, "create", "enterprise", row.id, name=data.name)
    return row


async def patch_enterprise(
    session: AsyncSession, p: Principal, row: Enterprise, data: s.EnterprisePatch
) -> Enterprise:
    """Change an enterprise; a new location moves its grid and area with it."""
    if data.org_id is not msgspec.UNSET and data.org_id is not None:
        org = await session.get(Organisation, data.org_id)
        if org is None or org.kind != s.OrgKind.ENTERPRISE:
            raise InvalidInput(N_("org_id must be an enterprise organisation"), field="org_id")
    changed = apply_patch(row, data, ("name", "org_id", "address"))
    if data.location is not msgspec.UNSET:
        lon, lat = data.location.coordinates
        row.location = geo.point_to_db(data.location)
        grid, row.area_id = await locate(session, lon, lat)
        row.grid_id = grid.id if grid else None
        changed.update(location=[lon, lat], grid_id=row.grid_id, area_id=row.area_id)
    await session.flush()
    audit.record(session, p, "update", "enterprise", row.id, **changed)
    return row


async def create_resource(session: AsyncSession, p: Principal, data: s.ResourceCreate) -> Resource:
    """Add a resource at a point."""
    await ensure_new_id(session, p, Resource, data.id)
    lon, lat = data.location.coordinates
    area_id = await locate_area(session, lon, lat)
    await ensure_in_my_area(session, p, area_id, N_("resource"))
    row = Resource(
        kind=data.kind.value,
        name=data.name,
        location=geo.point_to_db(data.location),
        capacity=data.capacity,
        contact_name=data.contact_name,
        phone=data.phone,
        address=data.address,
        area_id=area_id,
    )
    if data.id:
        row.id = data.id
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "create", "resource", row.id, kind=data.kind.value)
    return row


async def patch_resource(
    session: AsyncSession, p: Principal, row: Resource, data: s.ResourcePatch
) -> Resource:
    """Change a resource (inside the dispatcher's area, before and after)."""
    await ensure_in_my_area(session, p, row.area_id, N_("resource"))
    changed = apply_patch(row, data, ("name", "capacity", "contact_name", "phone", "address"))
    if data.location is not msgspec.UNSET:
        await relocate(session, p, row, data.location, N_("resource"))
        changed["location"] = data.location.coordinates
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "update", "resource", row.id, **changed)
    return row


# -- contacts (通讯录) -----------------------------------------------------------------------


def contact_out(row: Contact) -> s.Contact:
    """Wire form of a contact."""
    return s.Contact(
        id=row.id,
        kind=s.ContactKind(row.kind),
        name=row.name,
        name_en=row.name_en,
        phone=row.phone,
        org_id=row.org_id,
        user_id=row.user_id,
        role_title=row.role_title,
        area_ids=[uuid.UUID(a) for a in row.area_ids or []],
        duty=row.duty,
        notes=row.notes,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _contacts_i_read(session: AsyncSession, p: Principal) -> Any:
    """The SQL condition on the contacts `p` reads (None: all): what their phone holds."""
    if p.role is Role.ADMIN:
        return None
    areas = await session.run_sync(lambda sync: reference_areas(sync, p))
    return visible_contacts(p, dialect_of(session), areas)


def _encode_cursor(ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(ident.bytes).decode().rstrip("=")


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(N_("cursor is not one this server issued"), field="cursor") from exc


async def list_contacts(
    session: AsyncSession,
    p: Principal,
    *,
    cursor: str | None,
    limit: int,
    kind: s.ContactKind | None = None,
    duty: bool | None = None,
    area_id: uuid.UUID | None = None,
) -> tuple[list[Contact], str | None]:
    """One page of the contacts `p` reads, newest first; optionally only one kind, only duty
    lines (or only others), or only those serving `area_id` (or everywhere)."""
    conds: list[Any] = [Contact.deleted_at.is_(None)]
    mine = await _contacts_i_read(session, p)
    if mine is not None:
        conds.append(mine)
    if kind is not None:
        conds.append(Contact.kind == kind.value)
    if duty is not None:
        conds.append(Contact.duty.is_(duty))
    if area_id is not None:
        conds.append(serving_areas(dialect_of(session), [area_id]))
    if cursor:
        conds.append(Contact.id < _decode_cursor(cursor))
    stmt = select(Contact).where(*conds).order_by(Contact.id.desc()).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars())
    nxt = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], nxt


async def get_contact(session: AsyncSession, p: Principal, ident: uuid.UUID) -> Contact:
    """A live contact `p` reads; else NotFound (existence is not leaked)."""
    conds: list[Any] = [Contact.id == ident, Contact.deleted_at.is_(None)]
    mine = await _contacts_i_read(session, p)
    if mine is not None:
        conds.append(mine)
    row = (await session.execute(select(Contact).where(*conds))).scalar_one_or_none()
    if row is None:
        raise NotFound(N_("no contact {id}"), id=ident)
    return row


async def _check_areas(session: AsyncSession, p: Principal, area_ids: Sequence[uuid.UUID]) -> None:
    """Every area exists; a dispatcher names at least one, all inside their command area."""
    wanted = set(area_ids)
    if wanted:
        found = await session.execute(
            select(AdminArea.id).where(AdminArea.id.in_(wanted), AdminArea.deleted_at.is_(None))
        )
        if set(found.scalars()) != wanted:
            raise InvalidInput(N_("area_ids names an area that does not exist"), field="area_ids")
    if p.role is Role.ADMIN:
        return
    if not wanted:
        raise Forbidden(N_("only administrators manage contacts that serve everywhere"))
    inside = await session.execute(
        select(func.count(AdminArea.id)).where(
            AdminArea.id.in_(wanted), AdminArea.id.in_(home_area_subtree(p))
        )
    )
    if inside.scalar_one() != len(wanted):
        raise Forbidden(N_("the contact serves an area outside your command area"))


async def _check_links(
    session: AsyncSession, org_id: uuid.UUID | None, user_id: uuid.UUID | None
) -> None:
    if org_id is not None and await session.get(Organisation, org_id) is None:
        raise InvalidInput(N_("no such organisation"), field="org_id")
    if user_id is not None and await session.get(User, user_id) is None:
        raise InvalidInput(N_("no such user"), field="user_id")


def _area_strs(area_ids: Sequence[uuid.UUID]) -> list[str]:
    return sorted({str(a) for a in area_ids})


def _stored_areas(row: Contact) -> list[uuid.UUID]:
    return [uuid.UUID(a) for a in row.area_ids or []]


async def create_contact(
    session: AsyncSession, p: Principal, data: s.ContactCreate
) -> tuple[Contact, bool]:
    """Add a contact (administrators; dispatchers for areas inside their command area).

    Returns the contact and whether this call made it: a create retried by the same user with
    the same `id` returns the first result; an id taken otherwise is a conflict."""
    if data.id is not None:
        existing = await session.get(Contact, data.id)
        if existing is not None:
            if existing.created_by != p.user_id or existing.deleted_at is not None:
                await refuse_taken_id(session, p, Contact, data.id, get_contact)
            return existing, False
    await _check_areas(session, p, data.area_ids)
    await _check_links(session, data.org_id, data.user_id)
    row = Contact(
        id=data.id or uuid7(),
        kind=data.kind.value,
        name=data.name,
        name_en=data.name_en,
        phone=data.phone,
        org_id=data.org_id,
        user_id=data.user_id,
        role_title=data.role_title,
        area_ids=_area_strs(data.area_ids),
        duty=data.duty,
        notes=data.notes,
        created_by=p.user_id,
    )
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "create", "contact", row.id, kind=row.kind, area_ids=row.area_ids)
    return row, True


async def patch_contact(
    session: AsyncSession, p: Principal, row: Contact, data: s.ContactPatch
) -> Contact:
    """Change a contact (a dispatcher: one serving only their area, before and after)."""
    await _check_areas(session, p, _stored_areas(row))
    if data.area_ids is not msgspec.UNSET:
        await _check_areas(session, p, data.area_ids)
    org_id = row.org_id if data.org_id is msgspec.UNSET else data.org_id
    user_id = row.user_id if data.user_id is msgspec.UNSET else data.user_id
    await _check_links(session, org_id, user_id)
    names = ("kind", "name", "name_en", "phone", "org_id", "user_id", "role_title", "duty", "notes")
    changed = {k: str(v) for k, v in apply_patch(row, data, names).items()}
    if data.area_ids is not msgspec.UNSET:
        row.area_ids = _area_strs(data.area_ids)
        changed["area_ids"] = ",".join(row.area_ids)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "update", "contact", row.id, **changed)
    return row


async def delete_contact(session: AsyncSession, p: Principal, row: Contact) -> None:
    """Soft-delete a contact (it stays as a sync tombstone)."""
    await _check_areas(session, p, _stored_areas(row))
    row.deleted_at = utcnow()
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "delete", "contact", row.id)
