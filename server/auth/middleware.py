"""Every route is authenticated unless listed as public here; the user is re-checked each time."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from i18n import N_
from schemas.common import Role
from server.auth.principal import Principal
from server.auth.tokens import decode_access
from server.errors import Unauthenticated
from server.models import utcnow

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
        # One round trip per request: the account and whether the token's session is still
        # live, one statement built once, outside a transaction (`server.db.ReadOne`).
        params = {"user_id": claims.user_id, "session_id": claims.session_id, "now": utcnow()}
        row = await connection.app.state.account_read(params)
        if row is None:
            raise Unauthenticated(N_("account disabled or removed"))
        username, role, org_id, area_id, language, disabled, deleted_at, live = row
        if disabled or deleted_at is not None:
            raise Unauthenticated(N_("account disabled or removed"))
        if not live:
            raise Unauthenticated(N_("session ended (logged out or revoked)"))
        principal = Principal(
            user_id=claims.user_id,
            username=username,
            role=Role(role),
            org_id=org_id,
            area_id=area_id,
            session_id=claims.session_id,
            device_id=claims.device_id,
            language=language,
        )
        return AuthenticationResult(user=principal, auth=token)
