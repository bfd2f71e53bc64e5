"""Every route is authenticated unless listed as public here; the user is re-checked each time."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import select

from i18n import N_
from schemas.common import Role
from server.auth.principal import Principal
from server.auth.tokens import decode_access, live_session
from server.db import dialect_of
from server.errors import Unauthenticated
from server.models import User, utcnow

EXCLUDE_REGEX = [
    r"^/healthz$",
    r"^/readyz$",
    r"^/api/v1/auth/(login|refresh)$",
    r"^/schema",
    r"^/api/v1/public/",
    r"^/residents(/|$)",
]


class AuthMiddleware(AbstractAuthenticationMiddleware):
    """Bearer access token -> Principal, or 401 with problem details."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(N_("missing bearer token"))
        settings = connection.app.state.settings
        claims = decode_access(settings.secret_key, token.strip())
        # One round trip per request: the user and whether the token's session is still live.
        stmt = select(User, live_session(claims.session_id, utcnow())).where(
            User.id == claims.user_id
        )
        async with connection.app.state.sessionmaker() as session:
            if dialect_of(session) == "postgresql":
                # One statement needs no transaction: without one, no BEGIN and no ROLLBACK
                # round trip around it (two of a pull's sixteen in the surge of 29 November).
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            row = (await session.execute(stmt)).one_or_none()
        if row is None or row[0].disabled or row[0].deleted_at is not None:
            raise Unauthenticated(N_("account disabled or removed"))
        user, live = row
        if not live:
            raise Unauthenticated(N_("session ended (logged out or revoked)"))
        principal = Principal(
            user_id=user.id,
            username=user.username,
            role=Role(user.role),
            org_id=user.org_id,
            area_id=user.area_id,
            session_id=claims.session_id,
            device_id=claims.device_id,
            language=user.language,
        )
        return AuthenticationResult(user=principal, auth=token)
