"""Short-lived access tokens (JWT, HS256) and long-lived, rotating, revocable refresh tokens.

A refresh token is bound to one device. Using it rotates it; presenting an already-rotated token
is treated as theft and revokes the whole session (its family). Logout and disabling a user
revoke the family, and access tokens name their family (`sid`), so they stop working at once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from sqlalchemy import DateTime, Uuid, bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas.ids import uuid7
from server.errors import Unauthenticated
from server.models import RefreshToken, User, utcnow

ALGORITHM = "HS256"
ISSUER = "liandong"


class RefreshReused(Unauthenticated):
    """A spent refresh token came back; the family was revoked and that must be committed."""


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    device_id: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def encode_access(
    secret: str, user_id: uuid.UUID, session_id: uuid.UUID, device_id: str, ttl_s: int
) -> str:
    """A signed access token valid for `ttl_s` seconds."""
    now = utcnow()
    payload: dict[str, Any] = {
        "sub": str(user_id),
        "sid": str(session_id),
        "dev": device_id,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_s)).timestamp()),
        "iss": ISSUER,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_access(secret: str, token: str) -> AccessClaims:
    """Verify signature, expiry and issuer; raise Unauthenticated otherwise."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "sid", "iss"]},
        )
        return AccessClaims(
            user_id=uuid.UUID(payload["sub"]),
            session_id=uuid.UUID(payload["sid"]),
            device_id=str(payload.get("dev", "")),
        )
    except (jwt.PyJWTError, ValueError, KeyError) as exc:
        raise Unauthenticated(N_("invalid or expired access token")) from exc


async def issue_refresh(
    session: AsyncSession,
    user_id: uuid.UUID,
    device_id: str,
    ttl_s: int,
    family_id: uuid.UUID | None = None,
) -> tuple[str, uuid.UUID]:
    """Store a new refresh token (hashed) and return it with its family id."""
    token = secrets.token_urlsafe(32)
    family = family_id or uuid7()
    session.add(
        RefreshToken(
            user_id=user_id,
            device_id=device_id,
            token_hash=_hash(token),
            family_id=family,
            expires_at=utcnow() + timedelta(seconds=ttl_s),
        )
    )
    await session.flush()
    return token, family


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    """End a session: every refresh token of the family stops working."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """End every session of a user."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def rotate_refresh(
    session: AsyncSession, token: str, device_id: str, ttl_s: int
) -> tuple[User, str, uuid.UUID]:
    """Exchange a refresh token for a new one; reuse of a rotated token revokes the family."""
    row = (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == _hash(token)))
    ).scalar_one_or_none()
    if row is None or row.device_id != device_id:
        raise Unauthenticated(N_("unknown refresh token for this device"))
    if row.revoked_at is not None:
        # A rotated token came back: someone else may hold the session. End it.
        await revoke_family(session, row.family_id)
        raise RefreshReused(N_("refresh token already used; the session was ended"))
    if row.expires_at <= utcnow():
        raise Unauthenticated(N_("refresh token expired"))
    user = await session.get(User, row.user_id)
    if user is None or user.disabled or user.deleted_at is not None:
        raise Unauthenticated(N_("account disabled"))
    row.revoked_at = utcnow()
    new_token, family = await issue_refresh(session, user.id, device_id, ttl_s, row.family_id)
    return user, new_token, family


ACCOUNT = select(
    User.username,
    User.role,
    User.org_id,
    User.area_id,
    User.language,
    User.disabled,
    User.deleted_at,
    # the session is live: its refresh-token family has an unrevoked, unexpired token
    exists()
    .where(
        RefreshToken.family_id == bindparam("session_id", type_=Uuid),
        RefreshToken.revoked_at.is_(None),
        RefreshToken.expires_at > bindparam("now", type_=DateTime(timezone=True)),
    )
    .label("live"),
).where(User.id == bindparam("user_id", type_=Uuid))
"""What every authenticated request reads, in one statement built once: the account and
whether the access token's session is live. Parameters: `user_id`, `session_id`, `now`."""
