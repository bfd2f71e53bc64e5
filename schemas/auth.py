"""Authentication and user wire types."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import Input, Language, Name, Output, Role

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class LoginRequest(Input):
    """Credentials plus the device the refresh token will be bound to."""

    username: Username
    password: Password
    device_id: DeviceId
    # The `device_secret` of this device's last sign-in (absent on a first sign-in or from an
    # older app): proves the device signed in before; a `device_id` alone proves nothing.
    device_secret: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class RefreshRequest(Input):
    """Exchange a refresh token for a new pair; the old refresh token stops working."""

    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    device_id: DeviceId


class LogoutRequest(Input):
    """Revoke this device's refresh token (and its push registration)."""

    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None


class TokenPair(Output):
    """What a successful login or refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"
    # Issued at sign-in (not at refresh): keep it and send it with the next sign-in on this
    # device. Each sign-in replaces it.
    device_secret: str | None = None


class User(Output):
    """A user as others see them."""

    id: uuid.UUID
    username: str
    display_name: str
    role: Role
    org_id: uuid.UUID | None
    area_id: uuid.UUID | None
    disabled: bool
    created_at: datetime
    language: Language = Language.ZH_CN


class PasswordReset(Input):
    """A new password set by an administrator; the user is signed out everywhere."""

    password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)]


class UserCreate(Input):
    """Create a user (administrators only)."""

    username: Username
    display_name: Name
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
    role: Role
    org_id: uuid.UUID | None = None
    area_id: uuid.UUID | None = None
    language: Language = Language.ZH_CN


class MePatch(Input):
    """What a signed-in user changes about themself: their saved language (pushes, exports)."""

    language: Language | msgspec.UnsetType = msgspec.UNSET


class UserPatch(Input):
    """What an administrator changes about a user: name, role, home organisation, area, and
    the language of their pushes and exports. Absent fields stay as they are."""

    language: Language | msgspec.UnsetType = msgspec.UNSET
    display_name: Name | msgspec.UnsetType = msgspec.UNSET
    role: Role | msgspec.UnsetType = msgspec.UNSET
    org_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    area_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
