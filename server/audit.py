"""The append-only audit log: one call per action, in the request's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.principal import Principal
from server.models import AuditLog


def record(
    session: AsyncSession,
    actor: Principal | uuid.UUID | None,
    action: str,
    entity: str,
    entity_id: Any = None,
    **detail: Any,
) -> None:
    """Append an audit entry; it commits (or rolls back) with the change it describes."""
    actor_id = actor.user_id if isinstance(actor, Principal) else actor
    session.add(
        AuditLog(
            actor_id=actor_id,
            action=action,
            entity=entity,
            entity_id=str(entity_id) if entity_id is not None else None,
            detail={k: _plain(v) for k, v in detail.items()},
        )
    )


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
