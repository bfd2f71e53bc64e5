"""Who is asking: the authenticated user of a request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import i18n
from schemas.common import Role


@dataclass(frozen=True)
class Principal:
    """The user behind a request, as loaded (and re-checked) on every request."""

    user_id: uuid.UUID
    username: str
    role: Role
    org_id: uuid.UUID | None
    area_id: uuid.UUID | None
    session_id: uuid.UUID
    device_id: str
    #: the person's saved language (i18n.LANGS): exports when the request names none
    language: str = i18n.DEFAULT_LANG

    def has(self, *roles: Role) -> bool:
        """True when the user has one of `roles`."""
        return self.role in roles
