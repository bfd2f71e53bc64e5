"""HTTP for sign-in, sessions and the user's devices."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from i18n import N_
from schemas import auth as s
from schemas.devices import Device, DeviceRegister, PushChannel
from server.auth.address import client_address
from server.auth.principal import Principal
from server.auth.tokens import RefreshReused
from server.config import Settings
from server.domain.auth import services as svc
from server.errors import Unauthenticated


class AuthController(Controller):
    """Login, refresh, logout and who-am-I."""

    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/login", operation_id="Login", status_code=200)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[s.LoginRequest],
        settings: NamedDependency[Settings],
    ) -> s.TokenPair:
        """Sign in on a device: a short-lived access token and a device-bound refresh token."""
        ip = client_address(request)
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        # Its own transaction: a failed attempt must be recorded even though we answer 401.
        async with maker() as session:
            try:
                pair = await svc.login(session, settings, data, ip)
            except svc.LoginRefused:
                await session.commit()
                raise Unauthenticated(N_("wrong username or password")) from None
            await session.commit()
        return pair

    @post("/refresh", operation_id="Refresh", status_code=200)
    async def refresh(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[s.RefreshRequest],
        settings: NamedDependency[Settings],
    ) -> s.TokenPair:
        """Exchange a refresh token for a new pair. The old refresh token is spent; presented
        again while its successor is unused (an answer lost on the way), it answers that same
        successor again; presented after that, the session ends."""
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        # Its own transaction: revoking a session on token reuse must stick though we answer 401.
        async with maker() as session:
            try:
                pair = await svc.refresh(session, settings, data)
            except RefreshReused:
                await session.commit()
                raise
            await session.commit()
        return pair

    @post("/logout", operation_id="Logout", status_code=204)
    async def logout(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> None:
        """End this device's session."""
        await svc.logout(db, request.user)

    @get("/me", operation_id="Me")
    async def me(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> s.User:
        """The signed-in user."""
        return svc.user_out(await svc.get_user(db, request.user.user_id))

    @patch("/me", operation_id="UpdateMe")
    async def update_me(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.MePatch],
    ) -> s.User:
        """Change what the signed-in user may change about themself: the language their pushes
        (and exports) are written in."""
        user = await svc.get_user(db, request.user.user_id)
        if data.language is not msgspec.UNSET:
            await svc.set_language(db, request.user, user, data.language)
        return svc.user_out(user)


class DeviceController(Controller):
    """The signed-in user's devices and push registrations."""

    path = "/api/v1/devices"
    tags = ["devices"]

    @post("/", operation_id="RegisterDevice", status_code=200)
    async def register(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[DeviceRegister],
    ) -> Device:
        """Register this device's push token."""
        row = await svc.register_device(db, request.user, data)
        return Device(
            id=row.id,
            device_id=row.device_id,
            channel=PushChannel(row.channel) if row.channel else None,
            platform=row.platform,
            last_seen_at=row.last_seen_at,
        )

    @delete("/{device_id:str}", operation_id="UnregisterDevice")
    async def unregister(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        device_id: FromPath[str],
    ) -> None:
        """Stop pushes to a device."""
        await svc.unregister_device(db, request.user, device_id)
