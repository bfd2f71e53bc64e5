"""Every route is authenticated unless listed as public here; the user is re-checked each time."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from i18n import N_
from schemas.common import Role
from server.auth.principal import Principal
from server.auth.tokens import ACCOUNT, decode_access
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
        # live, one statement built once, outside a transaction (`read_engine`).
        params = {"user_id": claims.user_id, "session_id": claims.session_id, "now": utcnow()}
        async with connection.app.state.read_engine.connect() as conn:
            row = (await conn.execute(ACCOUNT, params)).one_or_none()
        if row is None or row.disabled or row.deleted_at is not None:
            raise Unauthenticated(N_("account disabled or removed"))
        if not row.live:
            raise Unauthenticated(N_("session ended (logged out or revoked)"))
        principal = Principal(
            user_id=claims.user_id,
            username=row.username,
            role=Role(row.role),
            org_id=row.org_id,
            area_id=row.area_id,
            session_id=claims.session_id,
            device_id=claims.device_id,
            language=row.language,
        )
        return AuthenticationResult(user=principal, auth=token)
