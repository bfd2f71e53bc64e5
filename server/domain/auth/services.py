"""Login with throttling, refresh rotation, logout; users and their devices."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import i18n
from i18n import N_
from schemas import auth as s
from schemas.common import Language, Role
from schemas.devices import DeviceRegister
from server import audit
from server.auth import tokens
from server.auth.passwords import hash_password_async, verify_password_async
from server.auth.principal import Principal
from server.config import Settings
from server.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from server.models import Device, LoginFailure, User, utcnow


def user_out(row: User) -> s.User:
    """Wire form of a user."""
    return s.User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        role=Role(row.role),
        org_id=row.org_id,
        area_id=row.area_id,
        disabled=row.disabled,
        created_at=row.created_at,
        language=Language(i18n.normalize(row.language)),
    )


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def device_key(device_id: str) -> str:
    """Where a proven device's failures are counted (in place of an address)."""
    return "device:" + hashlib.sha256(device_id.encode()).hexdigest()[:32]


async def _proven_device(
    session: AsyncSession, user: User | None, data: s.LoginRequest
) -> Device | None:
    """The user's device row if the request carries the secret of its last sign-in."""
    if user is None or data.device_secret is None:
        return None
    row = (
        await session.execute(
            select(Device).where(Device.user_id == user.id, Device.device_id == data.device_id)
        )
    ).scalar_one_or_none()
    if row is None or row.login_secret_hash is None:
        return None
    if not hmac.compare_digest(row.login_secret_hash, _secret_hash(data.device_secret)):
        return None
    return row


def _seconds_until(moment: datetime) -> int:
    return max(1, math.ceil((moment - utcnow()).total_seconds()))


async def _throttle(
    session: AsyncSession, settings: Settings, username: str, key: str, address: str | None
) -> None:
    """429 while this user's sign-ins from `key` (an address, or a proven device) must wait,
    or while `address` (None for a proven device) is over its cap for all users.

    Growing delays, not a lock: after `login_max_failures` failures in the window, each
    further attempt waits `login_delay_s * 2^(n - max)` (at most the window) after the last
    failure. Failures from one address never hold back another address or a proven device.
    """
    now = utcnow()
    since = now - timedelta(seconds=settings.login_window_s)
    n, last = (
        await session.execute(
            select(func.count(), func.max(LoginFailure.at)).where(
                LoginFailure.username == username, LoginFailure.ip == key, LoginFailure.at > since
            )
        )
    ).one()
    if n >= settings.login_max_failures and last is not None:
        doublings = min(n - settings.login_max_failures, 30)
        wait = min(settings.login_delay_s * 2**doublings, float(settings.login_window_s))
        until = _aware(last) + timedelta(seconds=wait)
        if until > now:
            raise TooManyRequests(
                N_("too many failed sign-ins for this user from here; wait before trying again"),
                retry_after=_seconds_until(until),
            )
    if address is None:
        return
    cap = settings.login_address_cap or settings.login_max_failures * 10
    count, first = (
        await session.execute(
            select(func.count(), func.min(LoginFailure.at)).where(
                LoginFailure.ip == address, LoginFailure.at > since
            )
        )
    ).one()
    if count >= cap and first is not None:
        raise TooManyRequests(
            N_("too many failed sign-ins from this address; wait before trying again"),
            retry_after=_seconds_until(_aware(first) + timedelta(seconds=settings.login_window_s)),
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def issue_pair(
    session: AsyncSession, settings: Settings, user: User, device_id: str
) -> s.TokenPair:
    """A fresh session for this device."""
    refresh, family = await tokens.issue_refresh(
        session, user.id, device_id, settings.refresh_ttl_s
    )
    access = tokens.encode_access(
        settings.secret_key, user.id, family, device_id, settings.access_ttl_s
    )
    return s.TokenPair(access_token=access, refresh_token=refresh, expires_in=settings.access_ttl_s)


class LoginRefused(Exception):
    """Wrong credentials; the failure must be committed even though the request fails."""


async def login(
    session: AsyncSession, settings: Settings, data: s.LoginRequest, ip: str
) -> s.TokenPair:
    """Check credentials (throttled per user and address, and per address) and open a device
    session; the answer carries a new `device_secret` for this device's next sign-in.

    A request with the secret of this device's last sign-in is counted per user and device
    instead, and not held back by failures from any address. Raises LoginRefused after
    recording the failure in `session` (the caller commits it).
    """
    user = (
        await session.execute(select(User).where(User.username == data.username))
    ).scalar_one_or_none()
    proven = await _proven_device(session, user, data)
    key = device_key(data.device_id) if proven is not None else ip
    await _throttle(session, settings, data.username, key, None if proven is not None else ip)
    ok = await verify_password_async(user.password_hash if user else None, data.password)
    if user is None or not ok or user.disabled or user.deleted_at is not None:
        session.add(LoginFailure(username=data.username, ip=key))
        audit.record(session, user.id if user else None, "login_failed", "user", data.username)
        raise LoginRefused
    # Only this address's (or device's) count: a success here must not give a guesser
    # elsewhere fresh attempts.
    await session.execute(
        delete(LoginFailure).where(LoginFailure.username == data.username, LoginFailure.ip == key)
    )
    device = await _touch_device(session, user.id, data.device_id)
    secret = secrets.token_urlsafe(32)
    device.login_secret_hash = _secret_hash(secret)
    audit.record(session, user.id, "login", "user", user.id, device_id=data.device_id)
    pair = await issue_pair(session, settings, user, data.device_id)
    pair.device_secret = secret
    return pair


async def refresh(session: AsyncSession, settings: Settings, data: s.RefreshRequest) -> s.TokenPair:
    """Rotate the refresh token (or answer its unused successor again, for a retry whose answer
    was lost) and mint a new access token for the same session."""
    user, new_refresh, family = await tokens.rotate_refresh(
        session, settings.secret_key, data.refresh_token, data.device_id, settings.refresh_ttl_s
    )
    access = tokens.encode_access(
        settings.secret_key, user.id, family, data.device_id, settings.access_ttl_s
    )
    return s.TokenPair(
        access_token=access, refresh_token=new_refresh, expires_in=settings.access_ttl_s
    )


async def logout(session: AsyncSession, p: Principal) -> None:
    """End this device's session and stop its pushes."""
    await tokens.revoke_family(session, p.session_id)
    await session.execute(
        update(Device)
        .where(Device.user_id == p.user_id, Device.device_id == p.device_id)
        .values(token=None, channel=None)
    )
    audit.record(session, p, "logout", "user", p.user_id, device_id=p.device_id)


async def _touch_device(session: AsyncSession, user_id: uuid.UUID, device_id: str) -> Device:
    row = (
        await session.execute(
            select(Device).where(Device.user_id == user_id, Device.device_id == device_id)
        )
    ).scalar_one_or_none()
    if row is None:
        row = Device(user_id=user_id, device_id=device_id)
        session.add(row)
    row.last_seen_at = utcnow()
    await session.flush()
    return row


async def register_device(session: AsyncSession, p: Principal, data: DeviceRegister) -> Device:
    """Set this user's device push token (a token moves away from any other user's device)."""
    await session.execute(
        update(Device).where(Device.token == data.token).values(token=None, channel=None)
    )
    row = await _touch_device(session, p.user_id, data.device_id)
    row.channel = data.channel.value
    row.token = data.token
    row.platform = data.platform
    await session.flush()
    audit.record(session, p, "register_push", "device", row.id, channel=data.channel.value)
    return row


async def unregister_device(session: AsyncSession, p: Principal, device_id: str) -> None:
    """Stop pushes to one of this user's devices."""
    result = await session.execute(
        update(Device)
        .where(Device.user_id == p.user_id, Device.device_id == device_id)
        .values(token=None, channel=None)
    )
    if getattr(result, "rowcount", 0) == 0:
        raise NotFound(N_("no device {id}"), id=device_id)
    audit.record(session, p, "unregister_push", "device", device_id)


async def create_user(session: AsyncSession, p: Principal | None, data: s.UserCreate) -> User:
    """Add a user with an argon2 password hash."""
    taken = await session.scalar(select(func.count()).where(User.username == data.username))
    if taken:
        raise Conflict(N_("username is taken"), field="username")
    if data.role in (Role.RESPONDER, Role.ENTERPRISE_STAFF) and data.org_id is None:
        raise InvalidInput(
            N_("a {role} belongs to an organisation"), role=data.role.value, field="org_id"
        )
    row = User(
        username=data.username,
        display_name=data.display_name,
        password_hash=await hash_password_async(data.password),
        role=data.role.value,
        org_id=data.org_id,
        area_id=data.area_id,
        language=data.language.value,
    )
    session.add(row)
    await session.flush()
    audit.record(session, p, "create", "user", row.id, username=row.username, role=row.role)
    return row


async def set_language(
    session: AsyncSession, p: Principal | None, user: User, language: Language
) -> User:
    """Save the language `user` reads pushes and exports in (themself, or an administrator)."""
    if user.language != language.value:
        before = user.language
        user.language = language.value
        await session.flush()
        audit.record(
            session, p, "set_language", "user", user.id, language=language.value, before=before
        )
    return user


async def disable_user(session: AsyncSession, p: Principal | None, user: User) -> None:
    """Disable an account: its sessions end and its devices stop receiving pushes."""
    user.disabled = True
    await tokens.revoke_user(session, user.id)
    await session.execute(
        update(Device).where(Device.user_id == user.id).values(token=None, channel=None)
    )
    audit.record(session, p, "disable", "user", user.id)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """A user by id, or NotFound."""
    row = await session.get(User, user_id)
    if row is None:
        raise NotFound(N_("no user {id}"), id=user_id)
    return row
