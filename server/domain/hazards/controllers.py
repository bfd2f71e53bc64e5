"""HTTP for hazard reports."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import hazards as s
from schemas.states import HazardStatus
from server import crud
from server.auth.principal import Principal
from server.crud import ListQuery, Page, provide_list_query
from server.domain.hazards import services as svc
from server.models import Hazard


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
    ) -> Response[Page[s.Hazard]]:
        """Hazards the user may see, with filters."""
        filters: list[Any] = []
        if status:
            filters.append(Hazard.status == status.value)
        if category:
            filters.append(Hazard.category == category.value)
        if severity:
            filters.append(Hazard.severity == severity.value)
        if grid_id:
            filters.append(Hazard.grid_id == grid_id)
        rows, nxt = await crud.list_page(db, request.user, Hazard, q, "location", filters)
        return crud.respond(
            request, [svc.hazard_out(r, d) for r, d in rows], nxt, lambda h: h.location
        )

    @get("/{hazard_id:uuid}", operation_id="GetHazard")
    async def get_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
    ) -> s.Hazard:
        """One hazard."""
        return svc.hazard_out(await crud.get_visible(db, request.user, Hazard, hazard_id))

    @post("/", operation_id="CreateHazard")
    async def create_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.HazardCreate],
    ) -> s.Hazard:
        """Report a hazard with its GPS point."""
        return svc.hazard_out(await svc.create_hazard(db, request.user, data))

    @patch("/{hazard_id:uuid}", operation_id="UpdateHazard")
    async def patch_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
        data: JSONBody[s.HazardPatch],
    ) -> s.Hazard:
        """Correct a hazard's details."""
        row = await crud.get_visible(db, request.user, Hazard, hazard_id)
        return svc.hazard_out(await svc.patch_hazard(db, request.user, row, data))

    @delete("/{hazard_id:uuid}", operation_id="DeleteHazard")
    async def delete_hazard(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        hazard_id: FromPath[uuid.UUID],
    ) -> None:
        """Withdraw a hazard report."""
        row = await crud.get_visible(db, request.user, Hazard, hazard_id)
        await svc.delete_hazard(db, request.user, row)
