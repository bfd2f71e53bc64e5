"""HTTP for incidents and tasks."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import dispatch as s
from schemas.common import Role
from schemas.states import IncidentStatus, TaskStatus
from server import crud
from server.auth.principal import Principal
from server.crud import ListQuery, Page, provide_list_query
from server.domain.dispatch import services as svc
from server.models import Incident, Task
from server.scope import require

DISPATCH = (Role.ADMIN, Role.DISPATCHER)


class IncidentController(Controller):
    """Incidents (dispatchers in their area; responders see those they work on)."""

    path = "/api/v1/incidents"
    tags = ["dispatch"]
    dependencies = {"q": Provide(provide_list_query)}

    @get("/", operation_id="ListIncidents")
    async def list_incidents(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
        status: FromQuery[IncidentStatus | None] = None,
        type: FromQuery[s.IncidentType | None] = None,
    ) -> Response[Page[s.Incident]]:
        """Incidents the user may see, newest first (nearest first with `near`)."""
        filters: list[Any] = []
        if status:
            filters.append(Incident.status == status.value)
        if type:
            filters.append(Incident.type == type.value)
        rows, nxt = await crud.list_page(db, request.user, Incident, q, "location", filters)
        items = [svc.incident_out(r, d) for r, d in rows]
        return crud.respond(request, items, nxt, lambda i: i.location)

    @get("/{incident_id:uuid}", operation_id="GetIncident")
    async def get_incident(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
    ) -> s.Incident:
        """One incident."""
        return svc.incident_out(await crud.get_visible(db, request.user, Incident, incident_id))

    @post("/", operation_id="CreateIncident")
    async def create_incident(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.IncidentCreate],
    ) -> s.Incident:
        """Open an incident."""
        require(request.user, *DISPATCH)
        return svc.incident_out(await svc.create_incident(db, request.user, data))

    @patch("/{incident_id:uuid}", operation_id="UpdateIncident")
    async def patch_incident(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
        data: JSONBody[s.IncidentPatch],
    ) -> s.Incident:
        """Change an incident."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Incident, incident_id)
        return svc.incident_out(await svc.patch_incident(db, request.user, row, data))

    @delete("/{incident_id:uuid}", operation_id="DeleteIncident")
    async def delete_incident(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
    ) -> None:
        """Soft-delete an incident."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Incident, incident_id)
        await svc.soft_delete(db, request.user, row)


class TaskController(Controller):
    """Tasks: dispatch creates and changes them; assignees move them along."""

    path = "/api/v1/tasks"
    tags = ["dispatch"]
    dependencies = {"q": Provide(provide_list_query)}

    @get("/", operation_id="ListTasks")
    async def list_tasks(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
        status: FromQuery[TaskStatus | None] = None,
        incident_id: FromQuery[uuid.UUID | None] = None,
    ) -> Response[Page[s.Task]]:
        """Tasks the user may see (a responder: their unit's and their own)."""
        filters: list[Any] = []
        if status:
            filters.append(Task.status == status.value)
        if incident_id:
            filters.append(Task.incident_id == incident_id)
        rows, nxt = await crud.list_page(db, request.user, Task, q, "location", filters)
        items = [svc.task_out(r, d) for r, d in rows]
        return crud.respond(request, items, nxt, lambda t: t.location)

    @get("/{task_id:uuid}", operation_id="GetTask")
    async def get_task(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
    ) -> s.Task:
        """One task."""
        return svc.task_out(await crud.get_visible(db, request.user, Task, task_id))

    @post("/", operation_id="CreateTask")
    async def create_task(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.TaskCreate],
    ) -> s.Task:
        """Dispatch a task to a person or a unit."""
        require(request.user, *DISPATCH)
        return svc.task_out(await svc.create_task(db, request.user, data))

    @patch("/{task_id:uuid}", operation_id="UpdateTask")
    async def patch_task(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
        data: JSONBody[s.TaskPatch],
    ) -> s.Task:
        """Change a task's details or assignees."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Task, task_id)
        return svc.task_out(await svc.patch_task(db, request.user, row, data))

    @delete("/{task_id:uuid}", operation_id="DeleteTask")
    async def delete_task(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
    ) -> None:
        """Soft-delete a task."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Task, task_id)
        await svc.soft_delete(db, request.user, row)

    @post("/{task_id:uuid}/transitions", operation_id="TransitionTask")
    async def transition(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
        data: JSONBody[s.TaskTransition],
    ) -> s.TaskEvent:
        """Move a task along assigned → accepted → en_route → on_scene → completed."""
        row = await crud.get_visible(db, request.user, Task, task_id)
        return svc.task_event_out(await svc.transition_task(db, request.user, row, data))

    @get("/{task_id:uuid}/timeline", operation_id="GetTaskTimeline")
    async def timeline(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
    ) -> list[s.TaskEvent]:
        """Every step of the task with time, actor, device and GPS fix."""
        row = await crud.get_visible(db, request.user, Task, task_id)
        return [svc.task_event_out(e) for e in await svc.task_timeline(db, row.id)]
