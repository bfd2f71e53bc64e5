"""HTTP for statistics: JSON by default, CSV with `?format=csv` or `Accept: text/csv`."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import stats as s
from schemas.common import Role
from server.auth.principal import Principal
from server.crud import require_aware
from server.domain.stats import services as svc
from server.models import utcnow
from server.scope import require

STATS = (Role.ADMIN, Role.DISPATCHER)


class Format(enum.StrEnum):
    """Response format."""

    JSON = "json"
    CSV = "csv"


def _wants_csv(request: Request[Any, Any, Any], fmt: Format | None) -> bool:
    if fmt is not None:
        return fmt is Format.CSV
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime | None]:
    require_aware(since=since, until=until)
    return since or svc.since_default(utcnow()), until


def _answer(
    request: Request[Any, Any, Any],
    fmt: Format | None,
    rows: Sequence[msgspec.Struct],
    row_type: type[msgspec.Struct],
    name: str,
) -> Response[Any]:
    if _wants_csv(request, fmt):
        return Response(
            svc.to_csv(rows, row_type.__struct_fields__),
            media_type="text/csv",  # Litestar adds `; charset=utf-8` to text/* itself
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(msgspec.to_builtins(list(rows)))


class StatsController(Controller):
    """Counts, response times, overdue and escalated tasks (dispatchers: their area)."""

    path = "/api/v1/stats"
    tags = ["stats"]

    @get("/incidents", operation_id="IncidentStats")
    async def incidents(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        period: FromQuery[s.Period] = s.Period.DAY,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        format: FromQuery[Format | None] = None,
    ) -> Response[list[s.IncidentCount]]:
        """Incidents by period, type and level (default: the last 90 days)."""
        require(request.user, *STATS)
        start, end = _window(since, until)
        rows = await svc.incident_counts(db, request.user, period, start, end)
        return _answer(request, format, rows, s.IncidentCount, "incidents")

    @get("/response-times", operation_id="ResponseTimeStats")
    async def response_times(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        format: FromQuery[Format | None] = None,
    ) -> Response[list[s.ResponseTimes]]:
        """Per unit kind: dispatch -> accepted and dispatch -> on scene, p50 and p90 seconds."""
        require(request.user, *STATS)
        start, end = _window(since, until)
        rows = await svc.response_times(db, request.user, start, end)
        return _answer(request, format, rows, s.ResponseTimes, "response-times")

    @get("/overdue-tasks", operation_id="OverdueTaskStats")
    async def overdue(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        format: FromQuery[Format | None] = None,
    ) -> Response[list[s.TaskFlag]]:
        """Open tasks past their deadline."""
        require(request.user, *STATS)
        rows = await svc.flagged_tasks(db, request.user, "overdue", utcnow())
        return _answer(request, format, rows, s.TaskFlag, "overdue-tasks")

    @get("/escalated-tasks", operation_id="EscalatedTaskStats")
    async def escalated(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        format: FromQuery[Format | None] = None,
    ) -> Response[list[s.TaskFlag]]:
        """Tasks that were not accepted within their window."""
        require(request.user, *STATS)
        rows = await svc.flagged_tasks(db, request.user, "escalated", utcnow())
        return _answer(request, format, rows, s.TaskFlag, "escalated-tasks")
