"""HTTP for hazard reports and their closed loop."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import hazards as s
from schemas.states import HazardStatus
from server import crud
from server.auth.principal import Principal
from server.config import Settings
from server.crud import ListQuery, Page, provide_list_query, require_aware
from server.domain.hazards import services as svc
from server.models import Hazard


def _policy(request: Request[Any, Any, Any]) -> svc.EvidencePolicy:
    settings: Settings = request.app.state.settings
    return svc.EvidencePolicy(
        max_distance_m=settings.evidence_max_distance_m,
        max_time_s=settings.evidence_max_time_s,
        local_tz=settings.local_tz,
    )


def _filters(
    status: HazardStatus | None = None,
    category: s.HazardCategory | None = None,
    severity: s.Severity | None = None,
    grid_id: uuid.UUID | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    rectify_org_id: uuid.UUID | None = None,
    overdue: bool | None = None,
    source: s.HazardSource | None = None,
) -> list[Any]:
    require_aware(created_from=created_from, created_to=created_to)
    filters: list[Any] = []
    if status:
        filters.append(Hazard.status == status.value)
    if category:
        filters.append(Hazard.category == category.value)
    if severity:
        filters.append(Hazard.severity == severity.value)
    if grid_id:
        filters.append(Hazard.grid_id == grid_id)
    if created_from:
        filters.append(Hazard.created_at >= created_from)
    if created_to:
        filters.append(Hazard.created_at < created_to)
    if rectify_org_id:
        filters.append(Hazard.rectify_org_id == rectify_org_id)
    if overdue is not None:
        filters.append(Hazard.overdue.is_(overdue))
    if source:
        filters.append(Hazard.source == source.value)
    return filters


class HazardController(Controller):
    """Hazards (隐患): inspectors see their grid's, enterprise staff their enterprise's."""

    path = "/api/v1/hazards"
    tags = ["hazards"]
    dependencies = {"q": Provide(provide_list_query)}

    @get("/", operation_id="ListHazards")
    async def list_hazards(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
        status: FromQuery[HazardStatus | None] = None,
        category: FromQuery[s.HazardCategory | None] = None,
        severity: FromQuery[s.Severity | None] = None,
        grid_id: FromQuery[uuid.UUID | None] = None,
        created_from: FromQuery[datetime | None] = None,
        created_to: FromQuery[datetime | None] = None,
        rectify_org_id: FromQuery[uuid.UUID | None] = None,
        overdue: FromQuery[bool | None] = None,
        source: FromQuery[s.HazardSource | None] = None,
    ) -> Response[Page[s.Hazard]]:
        """Hazards the user may see, with filters (time range on created_at, [from, to);
        `source`: where they came from)."""
        filters = _filters(
            status,
            category,
            severity,
            grid_id,
            created_from,
            created_to,
            rectify_org_id,
            overdue,
            source,
        )
        rows, nxt = await crud.list_page(db, request.user, Hazard, q, "location", filters)
        items = await svc.hazards_out(db, rows, _policy(request))
        return crud.respond(request, items, nxt, lambda h: h.location)

    @get("/stats", operation_id="HazardStats")
    async def hazard_stats(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        category: FromQuery[s.HazardCategory | None] = None,
        severity: FromQuery[s.Severity | None] = None,
        grid_id: FromQuery[uuid.UUID | None] = None,
        created_from: FromQuery[datetime | None] = None,
        created_to: FromQuery[datetime | None] = None,
    ) -> s.HazardStats:
        """Counts per grid and status, for statistics."""
        filters = _filters(None, category, severity, grid_id, created_from, created_to)
        return await svc.stats(db, request.user, filters)

    @get("/overdue", operation_id="ListOverdueHazards")
    async def overdue_hazards(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        grid_id: FromQuery[uuid.UUID | None] = None,
        rectify_org_id: FromQuery[uuid.UUID | None] = None,
    ) -> list[s.OverdueGroup]:
        """Overdue rectifications per grid and assigned unit or enterprise."""
        filters = _filters(grid_id=grid_id, rectify_org_id=rectify_org_id)
        return await svc.overdue_groups(db, request.user, filters)

    @get("/{hazard_id:uuid}", operation_id="GetHazard")
    async def get_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
    ) -> s.Hazard:
        """One hazard with its photos, missing photos and evidence flags."""
        row = await crud.get_visible(db, request.user, Hazard, hazard_id)
        return await svc.one_out(db, row, _policy(request))

    @post("/", operation_id="CreateHazard")
    async def create_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.HazardCreate],
    ) -> Response[s.Hazard]:
        """Report a hazard with its GPS point and photos (media ids or sha256 hashes).
        201 when created; a retry with the same id answers 200 with `Idempotent-Replayed`."""
        zone = request.app.state.settings.local_tz
        row, fresh = await svc.create_hazard(db, request.user, data, zone=zone)
        return crud.created(await svc.one_out(db, row, _policy(request)), fresh)

    @patch("/{hazard_id:uuid}", operation_id="UpdateHazard")
    async def patch_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
        data: JSONBody[s.HazardPatch],
    ) -> s.Hazard:
        """Correct a hazard's details, or add photos."""
        row = await svc.patch_hazard(db, request.user, hazard_id, data)
        return await svc.one_out(db, row, _policy(request))

    @delete("/{hazard_id:uuid}", operation_id="DeleteHazard")
    async def delete_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
    ) -> None:
        """Withdraw a hazard report."""
        await svc.delete_hazard(db, request.user, hazard_id)

    @post("/{hazard_id:uuid}/transitions", operation_id="TransitionHazard")
    async def transition(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
        data: JSONBody[s.HazardTransition],
    ) -> Response[s.HazardEvent]:
        """One step of reported → verified → rectification_assigned → rectified → reinspected
        → closed (or rejected / reopened), by the right role with its evidence. 201 when
        taken; a retry with the same step id answers 200 with `Idempotent-Replayed`."""
        zone = request.app.state.settings.local_tz
        event, fresh = await svc.transition_hazard(db, request.user, hazard_id, data, zone=zone)
        return crud.created(svc.event_out(event), fresh)

    @get("/{hazard_id:uuid}/timeline", operation_id="GetHazardTimeline")
    async def get_timeline(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
    ) -> list[s.HazardEvent]:
        """Every step and escalation of a hazard, oldest first, with actor, time, note, photos."""
        row = await crud.get_visible(db, request.user, Hazard, hazard_id)
        return [svc.event_out(e) for e in await svc.timeline(db, row.id)]
