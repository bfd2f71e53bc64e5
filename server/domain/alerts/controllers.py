"""HTTP for public warnings."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import alerts as s
from schemas.common import Role
from server import crud
from server.auth.principal import Principal
from server.crud import ListQuery, Page, provide_list_query
from server.domain.alerts import services as svc
from server.models import Alert
from server.scope import require


class AlertController(Controller):
    """Warnings: everyone signed in reads them; dispatch publishes."""

    path = "/api/v1/alerts"
    tags = ["alerts"]
    dependencies = {"q": Provide(provide_list_query)}

    @get("/", operation_id="ListAlerts")
    async def list_alerts(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
    ) -> Response[Page[s.Alert]]:
        """Alerts, newest first; `near` finds the ones whose area is close to a point."""
        rows, nxt = await crud.list_page(db, request.user, Alert, q, "area")
        return crud.respond(request, [svc.alert_out(r) for r, _ in rows], nxt, lambda a: a.area)

    @get("/{alert_id:uuid}", operation_id="GetAlert")
    async def get_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
    ) -> s.Alert:
        """One alert."""
        return svc.alert_out(await crud.get_visible(db, request.user, Alert, alert_id))

    @post("/", operation_id="CreateAlert")
    async def create_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.AlertCreate],
    ) -> s.Alert:
        """Publish a warning."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        return svc.alert_out(await svc.create_alert(db, request.user, data))
