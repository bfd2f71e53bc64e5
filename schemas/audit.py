"""Audit log entries (append-only)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from schemas.common import Output


class AuditEntry(Output):
    """One recorded action."""

    id: int
    at: datetime
    actor_id: uuid.UUID | None
    action: str
    entity: str
    entity_id: str | None
    detail: dict[str, Any]
    #: the area it happened in (the record's, else the actor's); null for older entries
    area_id: uuid.UUID | None = None
