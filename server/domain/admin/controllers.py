"""HTTP for administrators: users and the audit log."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import auth as s
from schemas.audit import AuditEntry
from schemas.common import Role
from server.auth.principal import Principal
from server.domain.auth import services as auth_svc
from server.models import AuditLog, User
from server.scope import require


class UserController(Controller):
    """Users (administrators only)."""

    path = "/api/v1/users"
    tags = ["admin"]

    @get("/", operation_id="ListUsers")
    async def list_users(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
    ) -> list[s.User]:
        """Every user."""
        require(request.user, Role.ADMIN)
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
        require(request.user, Role.ADMIN)
        return auth_svc.user_out(await auth_svc.create_user(db, request.user, data))

    @patch("/{user_id:uuid}", operation_id="UpdateUser")
    async def update_user(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        user_id: FromPath[uuid.UUID],
        data: JSONBody[s.UserPatch],
    ) -> s.User:
        """Change a user's saved language (of their pushes and exports)."""
        require(request.user, Role.ADMIN)
        user = await auth_svc.get_user(db, user_id)
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
        require(request.user, Role.ADMIN)
        user = await auth_svc.get_user(db, user_id)
        await auth_svc.disable_user(db, request.user, user)
        return auth_svc.user_out(user)


class AuditController(Controller):
    """The append-only audit log (administrators)."""

    path = "/api/v1/audit"
    tags = ["admin"]

    @get("/", operation_id="ListAudit")
    async def list_audit(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        entity: FromQuery[str | None] = None,
        entity_id: FromQuery[str | None] = None,
        before_id: FromQuery[int | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[AuditEntry]:
        """Entries newest first; page with `before_id`."""
        require(request.user, Role.ADMIN)
        stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
        if entity:
            stmt = stmt.where(AuditLog.entity == entity)
        if entity_id:
            stmt = stmt.where(AuditLog.entity_id == entity_id)
        if before_id:
            stmt = stmt.where(AuditLog.id < before_id)
        return [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor_id=r.actor_id,
                action=r.action,
                entity=r.entity,
                entity_id=r.entity_id,
                detail=r.detail,
            )
            for r in (await db.execute(stmt)).scalars()
        ]
