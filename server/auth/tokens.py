"""Short-lived access tokens (JWT, HS256) and long-lived, rotating, revocable refresh tokens.

A refresh token is bound to one device. Using it rotates it: the old token is spent and its
successor is issued. The successor is not random but derived from the old token with a keyed
hash (`successor`), so a phone whose answer was lost (a 2G link, a timeout under load) and
that retries with the old token gets exactly the successor the lost answer carried, with a
fresh access token for the same session, as long as that successor has not itself been used.
A spent token whose successor was already rotated (or revoked, expired, missing) is treated as
theft and revokes the whole session (its family). Logout and disabling a user revoke the
family, and access tokens name their family (`sid`), so they stop working at once.

The trade-off: a thief who replays a stolen, spent token before the phone's next refresh now
gets the same successor as the phone instead of ending the session at once. Both then hold
one token, and the theft is detected at the next rotation by either of them: once one refreshes
the shared successor, the other's next refresh (with it, or with the stolen token) is a reuse,
and the family is revoked. The successor depends on the secret key: after the key changes, a
retry of an answer lost under the old key is a reuse too.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
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
SUCCESSOR_CONTEXT = b"liandong-refresh-successor\0"
"""Domain separation: the key signs access tokens too, never this same input."""


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


def successor(secret: str, token: str) -> str:
    """The refresh token that rotating `token` issues: HMAC-SHA256 under the server's key,
    encoded like a login's random token (`secrets.token_urlsafe(32)`)."""
    mac = hmac.digest(secret.encode(), SUCCESSOR_CONTEXT + token.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


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


VERIFIED_KEPT = 8192
"""Access tokens whose signature a serving process has verified and keeps (about as many as
the phones that use it within a token's lifetime; ~3 MB)."""


@functools.lru_cache(maxsize=VERIFIED_KEPT)
def _verified(secret: str, token: str) -> tuple[AccessClaims, int]:
    """The claims of a token that passes every check now, and its expiry (epoch seconds).

    Kept per (key, token): a phone sends the same access token with every request for its
    lifetime, and checking its HMAC and parsing its JSON again was ~3 % of a serving process's
    CPU under a surge. Only tokens that verified are kept (an exception is not cached), so what
    is kept was signed with this key; the expiry is checked again at every use
    (`decode_access`), and whether the session is still live is the database's question on
    every request (`server.auth.middleware`)."""
    payload = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        issuer=ISSUER,
        options={"require": ["exp", "sub", "sid", "iss"]},
    )
    claims = AccessClaims(
        user_id=uuid.UUID(payload["sub"]),
        session_id=uuid.UUID(payload["sid"]),
        device_id=str(payload.get("dev", "")),
    )
    return claims, int(payload["exp"])


def decode_access(secret: str, token: str) -> AccessClaims:
    """Verify signature, expiry and issuer; raise Unauthenticated otherwise."""
    try:
        claims, exp = _verified(secret, token)
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise Unauthenticated(N_("invalid or expired access token")) from exc
    if exp <= time.time():  # as PyJWT decides it (no leeway)
        raise Unauthenticated(N_("invalid or expired access token"))
    return claims


async def issue_refresh(
    session: AsyncSession,
    user_id: uuid.UUID,
    device_id: str,
    ttl_s: int,
    family_id: uuid.UUID | None = None,
    token: str | None = None,
) -> tuple[str, uuid.UUID]:
    """Store a refresh token (hashed; a new random one unless given) and return it with its
    family id."""
    token = token or secrets.token_urlsafe(32)
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


async def _row(session: AsyncSession, token: str) -> RefreshToken | None:
    # Locked until commit (PostgreSQL; SQLite's writers queue at BEGIN IMMEDIATE): a retry that
    # overlaps the first refresh of the same token waits for it and then sees it spent.
    return (
        await session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == _hash(token)).with_for_update()
        )
    ).scalar_one_or_none()


async def rotate_refresh(
    session: AsyncSession, secret: str, token: str, device_id: str, ttl_s: int
) -> tuple[User, str, uuid.UUID]:
    """Exchange a refresh token for its successor. A spent token answers its successor again
    while that is unused (a lost answer retried); otherwise the reuse revokes the family."""
    row = await _row(session, token)
    if row is None or row.device_id != device_id:
        raise Unauthenticated(N_("unknown refresh token for this device"))
    now = utcnow()
    new_token = successor(secret, token)
    if row.revoked_at is not None:
        nxt = await _row(session, new_token)
        if nxt is None or nxt.revoked_at is not None or nxt.expires_at <= now:
            # A spent token came back after its successor was used (or the session ended):
            # someone else may hold the session. End it.
            await revoke_family(session, row.family_id)
            raise RefreshReused(N_("refresh token already used; the session was ended"))
    elif row.expires_at <= now:
        raise Unauthenticated(N_("refresh token expired"))
    user = await session.get(User, row.user_id)
    if user is None or user.disabled or user.deleted_at is not None:
        raise Unauthenticated(N_("account disabled"))
    if row.revoked_at is None:
        row.revoked_at = now
        await issue_refresh(session, user.id, device_id, ttl_s, row.family_id, new_token)
    return user, new_token, row.family_id


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
