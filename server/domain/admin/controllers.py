"""HTTP for administrators: users, organisations, units and their members, enterprises, grids,
and the audit log (which dispatchers read for their own area)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import auth as s
from schemas import reference as rs
from schemas.audit import AuditEntry
from schemas.common import Role
from server.auth.principal import Principal
from server.crud import require_aware
from server.domain.admin import services as svc
from server.domain.auth import services as auth_svc
from server.domain.reference import services as ref_svc
from server.exports import Format, csv_response, wants_csv
from server.models import AuditLog, Enterprise, Grid, Organisation, User
from server.scope import home_area_subtree, require


def admins_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the administrators' controllers: 403 for every other role. Litestar's
    automatic OPTIONS (public, answered without a user) passes."""
    if connection.scope.get("method") != "OPTIONS":
        require(connection.user, Role.ADMIN)


M = TypeVar("M")
T = TypeVar("T")


async def _set_active(
    db: AsyncSession,
    p: Principal,
    model: type[M],
    ident: uuid.UUID,
    active: bool,
    out: Callable[[M], T],
) -> T:
    """Deactivate or reactivate one record (`svc.set_active`) and answer it with `out`."""
    row: M = await svc.set_active(db, p, model, ident, active)
    return out(row)


class UserController(Controller):
    """Users (administrators only)."""

    path = "/api/v1/users"
    tags = ["admin"]
    guards = [admins_only]

    @get("/", operation_id="ListUsers")
    async def list_users(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
    ) -> list[s.User]:
        """Every user."""
        rows = await db.execute(select(User).order_by(User.username).limit(limit))
        return [auth_svc.user_out(u) for u in rows.scalars()]

    @post("/", operation_id="CreateUser")
    async def create_user(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.UserCreate],
    ) -> s.User:
        """Add a user."""
        return auth_svc.user_out(await auth_svc.create_user(db, request.user, data))

    @patch("/{user_id:uuid}", operation_id="UpdateUser")
    async def update_user(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        user_id: FromPath[uuid.UUID],
        data: JSONBody[s.UserPatch],
    ) -> s.User:
        """Change a user's name, role, home organisation or area (the next request already
        sees them), or the saved language of their pushes and exports."""
        user = await auth_svc.get_user(db, user_id)
        await svc.update_user(db, request.user, user, data)
        if data.language is not msgspec.UNSET:
            await auth_svc.set_language(db, request.user, user, data.language)
        return auth_svc.user_out(user)

    @post("/{user_id:uuid}/disable", operation_id="DisableUser", status_code=200)
    async def disable_user(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        user_id: FromPath[uuid.UUID],
    ) -> s.User:
        """Disable an account; its sessions end at once."""
        user = await auth_svc.get_user(db, user_id)
        await auth_svc.disable_user(db, request.user, user)
        return auth_svc.user_out(user)

    @post("/{user_id:uuid}/enable", operation_id="EnableUser", status_code=200)
    async def enable_user(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        user_id: FromPath[uuid.UUID],
    ) -> s.User:
        """Re-enable a disabled account (409 when it is active)."""
        user = await auth_svc.get_user(db, user_id)
        return auth_svc.user_out(await svc.enable_user(db, request.user, user))

    @post("/{user_id:uuid}/password", operation_id="ResetUserPassword", status_code=200)
    async def reset_password(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        user_id: FromPath[uuid.UUID],
        data: JSONBody[s.PasswordReset],
    ) -> s.User:
        """Set a new password; the user is signed out everywhere (every session and device)."""
        user = await auth_svc.get_user(db, user_id)
        return auth_svc.user_out(await svc.reset_password(db, request.user, user, data.password))


class OrganisationAdminController(Controller):
    """Edit, deactivate and reactivate organisations and linked units; manage unit members."""

    path = "/api/v1/organisations"
    tags = ["admin"]
    guards = [admins_only]

    @patch("/{org_id:uuid}", operation_id="UpdateOrganisation")
    async def patch_org(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
        data: JSONBody[rs.OrganisationPatch],
    ) -> rs.Organisation:
        """Change an organisation (administrators)."""
        row = await svc.get_any(db, Organisation, org_id)
        return ref_svc.org_out(await svc.patch_org(db, request.user, row, data))

    @post("/{org_id:uuid}/deactivate", operation_id="DeactivateOrganisation", status_code=200)
    async def deactivate(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
    ) -> rs.Organisation:
        """Deactivate: no task is dispatched to it and lists leave it out (administrators)."""
        return await _set_active(db, request.user, Organisation, org_id, False, ref_svc.org_out)

    @post("/{org_id:uuid}/reactivate", operation_id="ReactivateOrganisation", status_code=200)
    async def reactivate(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
    ) -> rs.Organisation:
        """Undo a deactivation (administrators)."""
        return await _set_active(db, request.user, Organisation, org_id, True, ref_svc.org_out)

    @get("/{org_id:uuid}/members", operation_id="ListOrganisationMembers")
    async def members(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
    ) -> list[rs.Member]:
        """Who belongs to the unit: home members, then members by membership."""
        return await svc.members(db, await svc.get_any(db, Organisation, org_id))

    @put("/{org_id:uuid}/members/{user_id:uuid}", operation_id="AddOrganisationMember")
    async def add_member(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
        user_id: FromPath[uuid.UUID],
        data: JSONBody[rs.MemberSet],
    ) -> Response[list[rs.Member]]:
        """Add a user to the unit, or change their part in it: 201 when new, else 200."""
        org = await svc.get_any(db, Organisation, org_id)
        user = await auth_svc.get_user(db, user_id)
        fresh = await svc.add_member(db, request.user, org, user, data)
        return Response(await svc.members(db, org), status_code=201 if fresh else 200)

    @delete("/{org_id:uuid}/members/{user_id:uuid}", operation_id="RemoveOrganisationMember")
    async def remove_member(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
        user_id: FromPath[uuid.UUID],
    ) -> None:
        """End a membership (a home member moves by changing the user's organisation)."""
        org = await svc.get_any(db, Organisation, org_id)
        await svc.remove_member(db, request.user, org, await auth_svc.get_user(db, user_id))


class EnterpriseAdminController(Controller):
    """Edit, deactivate and reactivate enterprises."""

    path = "/api/v1/enterprises"
    tags = ["admin"]
    guards = [admins_only]

    @post("/{enterprise_id:uuid}/deactivate", operation_id="DeactivateEnterprise", status_code=200)
    async def deactivate(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        enterprise_id: FromPath[uuid.UUID],
    ) -> rs.Enterprise:
        """Deactivate an enterprise (administrators)."""
        return await _set_active(
            db, request.user, Enterprise, enterprise_id, False, ref_svc.enterprise_out
        )

    @post("/{enterprise_id:uuid}/reactivate", operation_id="ReactivateEnterprise", status_code=200)
    async def reactivate(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        enterprise_id: FromPath[uuid.UUID],
    ) -> rs.Enterprise:
        """Undo a deactivation (administrators)."""
        return await _set_active(
            db, request.user, Enterprise, enterprise_id, True, ref_svc.enterprise_out
        )


class GridAdminController(Controller):
    """Deactivate and reactivate grids (edit: `PATCH /grids/{id}`)."""

    path = "/api/v1/grids"
    tags = ["admin"]
    guards = [admins_only]

    @post("/{grid_id:uuid}/deactivate", operation_id="DeactivateGrid", status_code=200)
    async def deactivate(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        grid_id: FromPath[uuid.UUID],
    ) -> rs.Grid:
        """Deactivate a grid: new hazards there take no grid (administrators)."""
        return await _set_active(db, request.user, Grid, grid_id, False, ref_svc.grid_out)

    @post("/{grid_id:uuid}/reactivate", operation_id="ReactivateGrid", status_code=200)
    async def reactivate(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        grid_id: FromPath[uuid.UUID],
    ) -> rs.Grid:
        """Undo a deactivation (administrators)."""
        return await _set_active(db, request.user, Grid, grid_id, True, ref_svc.grid_out)


AUDIT_FIELDS = ("id", "at", "actor_id", "action", "entity", "entity_id", "area_id", "detail")


class AuditController(Controller):
    """The append-only audit log: administrators read all of it, dispatchers their area's."""

    path = "/api/v1/audit"
    tags = ["admin"]

    @get("/", operation_id="ListAudit")
    async def list_audit(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        entity: FromQuery[str | None] = None,
        entity_id: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        actor_id: FromQuery[uuid.UUID | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        before_id: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=100_000, description="at most 1000 as JSON")
        ] = 100,
        format: FromQuery[Format | None] = None,
    ) -> Response[list[AuditEntry]]:
        """Entries newest first; page with `before_id`. A dispatcher reads the entries of their
        command area (and their own). `format=csv` (or `Accept: text/csv`) downloads them."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        require_aware(since=since, until=until)
        csv = wants_csv(request, format)
        stmt = (
            select(AuditLog).order_by(AuditLog.id.desc()).limit(limit if csv else min(limit, 1000))
        )
        if request.user.role is Role.DISPATCHER:
            stmt = stmt.where(
                or_(
                    AuditLog.area_id.in_(home_area_subtree(request.user)),
                    AuditLog.actor_id == request.user.user_id,
                )
            )
        for column, value in (
            (AuditLog.entity, entity),
            (AuditLog.entity_id, entity_id),
            (AuditLog.action, action),
            (AuditLog.actor_id, actor_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(AuditLog.at >= since)
        if until is not None:
            stmt = stmt.where(AuditLog.at < until)
        if before_id:
            stmt = stmt.where(AuditLog.id < before_id)
        rows = [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor_id=r.actor_id,
                action=r.action,
                entity=r.entity,
                entity_id=r.entity_id,
                detail=r.detail,
                area_id=r.area_id,
            )
            for r in (await db.execute(stmt)).scalars()
        ]
        if csv:
            return csv_response(request, rows, AUDIT_FIELDS, "audit")
        return Response(msgspec.to_builtins(rows))
