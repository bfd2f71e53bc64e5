"""HTTP for statistics: JSON by default, CSV with `?format=csv` or `Accept: text/csv`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import checks as cs
from schemas import stats as s
from schemas.common import Role
from server.auth.principal import Principal
from server.crud import require_aware
from server.domain.checks import schedule
from server.domain.stats import services as svc
from server.exports import Format, answer, csv_response, wants_csv
from server.models import utcnow
from server.scope import require

STATS = (Role.ADMIN, Role.DISPATCHER)


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime | None]:
    require_aware(since=since, until=until)
    return since or svc.since_default(utcnow()), until


def _grouped(
    request: Request[Any, Any, Any],
    fmt: Format | None,
    rows: Sequence[msgspec.Struct],
    row_type: type[msgspec.Struct],
    name: str,
) -> Response[Any]:
    """JSON, or CSV whose columns are the groups asked for (those some row has), then the
    figures (the fields without a default)."""
    if not wants_csv(request, fmt):
        return Response(msgspec.to_builtins(list(rows)))
    fields = row_type.__struct_fields__
    figures = fields[: len(fields) - len(row_type.__struct_defaults__)]
    groups = [
        f for f in fields if f not in figures and any(getattr(r, f) is not None for r in rows)
    ]
    return csv_response(request, rows, [*groups, *figures], name)


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
        return answer(request, format, rows, s.IncidentCount, "incidents")

    @get("/response-times", operation_id="ResponseTimeStats")
    async def response_times(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        by: Annotated[
            list[s.ResponseBy] | None,
            QueryParameter(description="group by (repeat to combine); default unit_kind"),
        ] = None,
        period: FromQuery[s.Period] = s.Period.MONTH,
        format: FromQuery[Format | None] = None,
    ) -> Response[list[s.ResponseTimes]]:
        """Dispatch -> accepted and dispatch -> on scene, p50 and p90 seconds, per unit kind,
        incident type, unit and/or `period` of the dispatch (`by`, repeatable)."""
        require(request.user, *STATS)
        start, end = _window(since, until)
        groups = by or [s.ResponseBy.UNIT_KIND]
        rows = await svc.response_times(db, request.user, start, end, groups, period)
        return _grouped(request, format, rows, s.ResponseTimes, "response-times")

    @get("/hazards", operation_id="HazardReportStats")
    async def hazards(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        by: Annotated[
            list[s.HazardBy] | None,
            QueryParameter(description="group by (repeat to combine); default category"),
        ] = None,
        format: FromQuery[Format | None] = None,
    ) -> Response[list[s.HazardCounts]]:
        """Hazards reported in the window by source, category, grid and/or status (`by`,
        repeatable): totals, closed, rectifications assigned and rectified with the rate, and
        rectifications overdue now."""
        require(request.user, *STATS)
        start, end = _window(since, until)
        groups = by or [s.HazardBy.CATEGORY]
        rows = await svc.hazard_counts(db, request.user, groups, start, end, utcnow())
        return _grouped(request, format, rows, s.HazardCounts, "hazards")

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
        return answer(request, format, rows, s.TaskFlag, "overdue-tasks")

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
        return answer(request, format, rows, s.TaskFlag, "escalated-tasks")

    @get("/self-checks", operation_id="SelfCheckStats")
    async def self_checks(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        week_from: Annotated[str | None, QueryParameter(pattern=cs.WEEK_PATTERN)] = None,
        week_to: Annotated[str | None, QueryParameter(pattern=cs.WEEK_PATTERN)] = None,
        enterprise_id: Annotated[
            list[uuid.UUID] | None, QueryParameter(description="repeat for several")
        ] = None,
        format: FromQuery[Format | None] = None,
    ) -> Response[list[cs.CheckCompletionRow]]:
        """Weekly self-check completion per enterprise and ISO week (dispatchers: their area):
        checks due, done (of which late: submitted after being flagged missed) and missed."""
        require(request.user, *STATS)
        rows = await schedule.completion(
            db,
            request.user,
            week_from=week_from,
            week_to=week_to,
            enterprise_ids=enterprise_id or (),
        )
        return answer(request, format, rows, cs.CheckCompletionRow, "self-checks")
