"""The append-only audit log: one call per action, in the request's transaction.

Each entry carries the area it happened in (`area_id`), so dispatchers read their own area's
audit: the area of the record acted on when the session holds it (a task, hazard, incident,
grid, ...: every write loads or creates the row it changes), else the actor's own area.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from server.auth.principal import Principal
from server.models import (
    Alert,
    AuditLog,
    CheckSubmission,
    Enterprise,
    Grid,
    Hazard,
    Incident,
    Organisation,
    Resource,
    Task,
    User,
)

#: audit entity name -> the model whose row carries the entry's area
_AREA_OF: dict[str, type[Any]] = {
    "task": Task,
    "incident": Incident,
    "hazard": Hazard,
    "grid": Grid,
    "resource": Resource,
    "alert": Alert,
    "enterprise": Enterprise,
    "organisation": Organisation,
    "check_submission": CheckSubmission,
    "user": User,
}


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
            area_id=_area(session, entity, entity_id, actor),
        )
    )


def _area(session: AsyncSession, entity: str, entity_id: Any, actor: Any) -> uuid.UUID | None:
    """The area of the record acted on, if the session holds it; else the actor's area."""
    model = _AREA_OF.get(entity)
    if model is not None and entity_id is not None:
        try:
            ident = entity_id if isinstance(entity_id, uuid.UUID) else uuid.UUID(str(entity_id))
        except ValueError:
            ident = None
        if ident is not None:
            row = session.identity_map.get(identity_key(model, ident))
            area = getattr(row, "area_id", None)
            if row is not None and area is not None:
                return area  # type: ignore[no-any-return]
    return actor.area_id if isinstance(actor, Principal) else None


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
