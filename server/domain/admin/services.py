"""Administration: edit and deactivate organisations, units, enterprises and grids; who belongs
to which unit; re-enable a user, reset a password.

Every function is an administrator's action (controllers and the CLI check the role) and
writes one audit entry in the request's transaction. Deactivating is a soft delete
(`deleted_at`): a deactivated unit is no longer dispatched to (`nearest_units` skips it), a
deactivated grid no longer takes hazards (`locate_grid`), and lists leave them out; reactivating
clears it. Grids are synced, so their writes are recorded in the change log.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas import auth as auth_s
from schemas import reference as s
from schemas.common import Role
from server import audit, changes, geo
from server.auth import tokens
from server.auth.passwords import hash_password_async
from server.auth.principal import Principal
from server.crud import apply_patch, noun
from server.domain.checks import schedule
from server.errors import Conflict, InvalidInput, NotFound
from server.models import (
    AdminArea,
    Device,
    Enterprise,
    Grid,
    Membership,
    Organisation,
    User,
    utcnow,
)

#: What an administrator may deactivate, by the name the routes and the audit log use.
DEACTIVATABLE: dict[str, type[Any]] = {
    "organisation": Organisation,
    "enterprise": Enterprise,
    "grid": Grid,
}
_SYNCED = (Grid,)


async def get_any(session: AsyncSession, model: type[Any], ident: uuid.UUID) -> Any:
    """A record by id, deactivated or not (administrators see both), else NotFound."""
    row = await session.get(model, ident)
    if row is None:
        raise NotFound(N_("no {record} {id}"), record=noun(model), id=ident)
    return row


async def set_active(
    session: AsyncSession, p: Principal | None, model: type[Any], ident: uuid.UUID, active: bool
) -> Any:
    """Deactivate (soft-delete) or reactivate an organisation, enterprise or grid; 409 when it
    already is in that state."""
    row = await get_any(session, model, ident)
    if (row.deleted_at is None) == active:
        raise Conflict(
            N_("the {record} is already active")
            if active
            else N_("the {record} is already deactivated"),
            record=noun(model),
            code="already_active" if active else "already_inactive",
        )
    row.deleted_at = None if active else utcnow()
    await session.flush()
    if isinstance(row, _SYNCED):
        changes.record(session, row)
    if isinstance(row, Enterprise) and not active:
        await schedule.close_enterprise(session, row.id)
    entity = next(k for k, v in DEACTIVATABLE.items() if v is model)
    audit.record(session, p, "reactivate" if active else "deactivate", entity, row.id)
    return row


async def _check_area(session: AsyncSession, area_id: uuid.UUID | None, field: str) -> None:
    if area_id is not None:
        found = await session.get(AdminArea, area_id)
        if found is None or found.deleted_at is not None:
            raise InvalidInput(N_("no such area"), field=field)


async def patch_org(
    session: AsyncSession, p: Principal, row: Organisation, data: s.OrganisationPatch
) -> Organisation:
    """Change an organisation; a linked unit keeps a unit kind."""
    if data.area_id is not msgspec.UNSET:
        await _check_area(session, data.area_id, "area_id")
    changed = apply_patch(row, data, ("name", "unit_kind", "area_id", "phone"))
    if row.kind == s.OrgKind.LINKED_UNIT and row.unit_kind is None:
        raise InvalidInput(N_("a linked unit needs unit_kind"), field="unit_kind")
    if data.location is not msgspec.UNSET:
        row.location = geo.point_to_db(data.location) if data.location else None
        changed["location"] = data.location.coordinates if data.location else None
    await session.flush()
    audit.record(session, p, "update", "organisation", row.id, **changed)
    return row


# -- who belongs to which unit ---------------------------------------------------------------


async def members(session: AsyncSession, org: Organisation) -> list[s.Member]:
    """Everyone who belongs to `org`: its home members, then its memberships, by username."""
    home = await session.execute(
        select(User).where(User.org_id == org.id, User.deleted_at.is_(None)).order_by(User.username)
    )
    out = [
        s.Member(
            user_id=u.id,
            username=u.username,
            display_name=u.display_name,
            role=u.role,
            disabled=u.disabled,
            home=True,
        )
        for u in home.scalars()
    ]
    joined = await session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.org_id == org.id,
            Membership.deleted_at.is_(None),
            User.deleted_at.is_(None),
        )
        .order_by(User.username)
    )
    out.extend(
        s.Member(
            user_id=u.id,
            username=u.username,
            display_name=u.display_name,
            role=u.role,
            disabled=u.disabled,
            home=False,
            member_role=s.MemberRole(role),
        )
        for u, role in joined.all()
    )
    return out


async def _membership(
    session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID
) -> Membership | None:
    found = await session.execute(
        select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )
    return found.scalar_one_or_none()


async def add_member(
    session: AsyncSession, p: Principal | None, org: Organisation, user: User, data: s.MemberSet
) -> bool:
    """Make `user` a member of `org` (a unit beyond their home organisation), or change their
    part in it; True when the membership is new. Idempotent."""
    if org.deleted_at is not None:
        raise Conflict(N_("the {record} is already deactivated"), record=noun(Organisation))
    if user.org_id == org.id:
        raise Conflict(
            N_("the user already belongs to this organisation as their home organisation"),
            field="user_id",
            code="home_organisation",
        )
    row = await _membership(session, org.id, user.id)
    fresh = row is None or row.deleted_at is not None
    if row is None:
        row = Membership(user_id=user.id, org_id=org.id, role=data.role.value)
        session.add(row)
    row.deleted_at = None
    row.role = data.role.value
    await session.flush()
    audit.record(session, p, "add_member", "organisation", org.id, user_id=user.id, role=row.role)
    return fresh


async def remove_member(
    session: AsyncSession, p: Principal | None, org: Organisation, user: User
) -> None:
    """End `user`'s membership of `org` (their home organisation is changed on the user)."""
    row = await _membership(session, org.id, user.id)
    if row is None or row.deleted_at is not None:
        raise NotFound(N_("the user is not a member of this organisation"))
    row.deleted_at = utcnow()
    await session.flush()
    audit.record(session, p, "remove_member", "organisation", org.id, user_id=user.id)


# -- users -------------------------------------------------------------------------------------


async def sign_out_everywhere(session: AsyncSession, user_id: uuid.UUID) -> None:
    """End every session of the user (refresh-token families; their access tokens fail at once
    since every request checks its family) and stop pushes to their devices."""
    await tokens.revoke_user(session, user_id)
    await session.execute(
        update(Device).where(Device.user_id == user_id).values(token=None, channel=None)
    )


async def enable_user(session: AsyncSession, p: Principal | None, user: User) -> User:
    """Re-enable a disabled account (it signs in again with its password)."""
    if not user.disabled:
        raise Conflict(
            N_("the {record} is already active"), record=noun(User), code="already_active"
        )
    user.disabled = False
    await session.flush()
    audit.record(session, p, "enable", "user", user.id)
    return user


async def reset_password(
    session: AsyncSession, p: Principal | None, user: User, password: str
) -> User:
    """Set a new password; the user is signed out everywhere."""
    user.password_hash = await hash_password_async(password)
    await sign_out_everywhere(session, user.id)
    await session.flush()
    audit.record(session, p, "reset_password", "user", user.id)
    return user


async def update_user(
    session: AsyncSession, p: Principal | None, user: User, data: auth_s.UserPatch
) -> User:
    """Change a user's name, role, home organisation or area (what is not given stays; the
    language is `auth.services.set_language`'s). The next request already sees the new role
    and area (each request reloads the user); a responder or enterprise member keeps an
    organisation."""
    if data.org_id is not msgspec.UNSET and data.org_id is not None:
        org = await session.get(Organisation, data.org_id)
        if org is None or org.deleted_at is not None:
            raise InvalidInput(N_("no such organisation"), field="org_id")
    if data.area_id is not msgspec.UNSET:
        await _check_area(session, data.area_id, "area_id")
    names = ("display_name", "role", "org_id", "area_id")
    before = {name: getattr(user, name) for name in names}
    sent = apply_patch(user, data, names)
    changed = {name: value for name, value in sent.items() if before[name] != value}
    if user.role in (Role.RESPONDER, Role.ENTERPRISE_STAFF) and user.org_id is None:
        raise InvalidInput(
            N_("a {role} belongs to an organisation"), role=user.role, field="org_id"
        )
    await session.flush()
    if changed:
        audit.record(session, p, "update", "user", user.id, **changed)
    return user
