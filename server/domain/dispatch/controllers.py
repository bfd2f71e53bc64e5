"""HTTP for incidents and tasks."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas import dispatch as s
from schemas import plans as ps
from schemas.common import Role
from schemas.states import IncidentStatus, TaskStatus
from server import crud
from server.auth.principal import Principal
from server.config import Settings
from server.crud import ListQuery, Page, provide_list_query
from server.domain.dispatch import plans
from server.domain.dispatch import services as svc
from server.domain.dispatch.assign import DispatchPolicy
from server.domain.dispatch.positions import unit_positions
from server.domain.reference.services import ensure_in_my_area
from server.models import Incident, Task
from server.scope import require, visible

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
        settings: NamedDependency[Settings],
    ) -> Response[s.Incident]:
        """Open an incident (201; a retry with the same id: 200, `Idempotent-Replayed`)."""
        require(request.user, *DISPATCH)
        policy = DispatchPolicy.from_settings(settings)
        row, fresh = await svc.create_incident(db, request.user, data, policy)
        return crud.created(svc.incident_out(row), fresh)

    @patch("/{incident_id:uuid}", operation_id="UpdateIncident")
    async def patch_incident(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
        data: JSONBody[s.IncidentPatch],
        settings: NamedDependency[Settings],
    ) -> s.Incident:
        """Change an incident; raising its level dispatches what the now-matching plans add."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Incident, incident_id)
        policy = DispatchPolicy.from_settings(settings)
        return svc.incident_out(await svc.patch_incident(db, request.user, row, data, policy))

    @get("/{incident_id:uuid}/timeline", operation_id="GetIncidentTimeline")
    async def timeline(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
    ) -> list[s.TaskEvent]:
        """Every step of every task of the incident (that the user may see), in time order."""
        row = await crud.get_visible(db, request.user, Incident, incident_id)
        events = await svc.incident_timeline(db, row.id, visible(request.user, Task))
        return [svc.task_event_out(e) for e in events]

    @get("/{incident_id:uuid}/plan-runs", operation_id="ListIncidentPlanRuns")
    async def plan_runs(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
    ) -> list[ps.PlanRun]:
        """The plan slots dispatched for the incident."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Incident, incident_id)
        return [plans.run_out(r) for r in await plans.plan_runs_of(db, row.id)]

    @post("/{incident_id:uuid}/plan-runs", operation_id="RunIncidentPlans")
    async def run_plans(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        incident_id: FromPath[uuid.UUID],
        settings: NamedDependency[Settings],
    ) -> list[s.Task]:
        """Run the matching plans again; returns only tasks not dispatched before (idempotent)."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Incident, incident_id)
        await ensure_in_my_area(db, request.user, row.area_id, N_("incident"))
        policy = DispatchPolicy.from_settings(settings)
        return [svc.task_out(t) for t in await plans.run_plans(db, request.user, row, policy)]

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
        settings: NamedDependency[Settings],
    ) -> Response[s.Task]:
        """Dispatch a task to a person or a unit (pushed to their devices). 201; a retry with
        the same id: 200, `Idempotent-Replayed`."""
        require(request.user, *DISPATCH)
        policy = DispatchPolicy.from_settings(settings)
        row, fresh = await svc.create_task(db, request.user, data, policy)
        return crud.created(svc.task_out(row), fresh)

    @patch("/{task_id:uuid}", operation_id="UpdateTask")
    async def patch_task(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
        data: JSONBody[s.TaskPatch],
        settings: NamedDependency[Settings],
    ) -> s.Task:
        """Change a task's details or reassign it (a new timeline entry and a push)."""
        require(request.user, *DISPATCH)
        row = await crud.get_visible(db, request.user, Task, task_id)
        policy = DispatchPolicy.from_settings(settings)
        return svc.task_out(await svc.patch_task(db, request.user, row, data, policy))

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
        settings: NamedDependency[Settings],
    ) -> Response[s.TaskEvent]:
        """Move a task along assigned → accepted → en_route → on_scene → completed.

        A location updates the responder's last known position; a decline (with a reason) of a
        plan task passes it to the next nearest unit when the plan says so. 201; a retry with
        the same step id: 200, `Idempotent-Replayed`."""
        policy = DispatchPolicy.from_settings(settings)
        event, fresh = await svc.transition_task(db, request.user, task_id, data, policy)
        return crud.created(svc.task_event_out(event), fresh)

    @post("/{task_id:uuid}/notes", operation_id="AddTaskNote")
    async def note(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        task_id: FromPath[uuid.UUID],
        data: JSONBody[s.TaskNote],
    ) -> Response[s.TaskEvent]:
        """A progress note (with fix and photos) without a status change. 201; a retry with the
        same id: 200, `Idempotent-Replayed`."""
        event, fresh = await svc.note_task(db, request.user, task_id, data)
        return crud.created(svc.task_event_out(event), fresh)

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


class PlanController(Controller):
    """Emergency plans: administrators write, dispatchers read."""

    path = "/api/v1/plans"
    tags = ["dispatch"]

    @get("/", operation_id="ListPlans")
    async def list_plans(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        all_versions: FromQuery[bool] = False,
    ) -> list[ps.Plan]:
        """Active plan versions (every version with `all_versions=true`)."""
        require(request.user, *DISPATCH)
        rows = await plans.list_plans(db, include_inactive=all_versions)
        return [plans.plan_out(r) for r in rows]

    @get("/{plan_id:uuid}", operation_id="GetPlan")
    async def get_plan(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        plan_id: FromPath[uuid.UUID],
    ) -> ps.Plan:
        """One plan version."""
        require(request.user, *DISPATCH)
        return plans.plan_out(await plans.get_plan(db, plan_id))

    @post("/", operation_id="CreatePlan")
    async def create_plan(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[ps.PlanCreate],
    ) -> ps.Plan:
        """A new plan (version 1)."""
        require(request.user, Role.ADMIN)
        return plans.plan_out(await plans.create_plan(db, request.user, data))

    @put("/{plan_id:uuid}", operation_id="UpdatePlan")
    async def update_plan(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        plan_id: FromPath[uuid.UUID],
        data: JSONBody[ps.PlanUpdate],
    ) -> ps.Plan:
        """Write the next version of the plan; the old version is kept, inactive."""
        require(request.user, Role.ADMIN)
        row = await plans.get_plan(db, plan_id)
        return plans.plan_out(await plans.update_plan(db, request.user, row, data))

    @post("/{plan_id:uuid}/retire", operation_id="RetirePlan", status_code=200)
    async def retire_plan(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        plan_id: FromPath[uuid.UUID],
    ) -> ps.Plan:
        """Retire the plan: no version runs any more, every version stays readable
        (`all_versions=true`); `PUT` writes a new active version again."""
        require(request.user, Role.ADMIN)
        row = await plans.get_plan(db, plan_id)
        await plans.retire_plan(db, request.user, row)
        return plans.plan_out(row)

    @delete("/{plan_id:uuid}", operation_id="DeletePlan")
    async def delete_plan(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        plan_id: FromPath[uuid.UUID],
    ) -> None:
        """Retire the plan (every version)."""
        require(request.user, Role.ADMIN)
        await plans.delete_plan(db, request.user, await plans.get_plan(db, plan_id))


class PositionController(Controller):
    """Responders report where they are; dispatch sees every unit on the map."""

    path = "/api/v1"
    tags = ["dispatch"]

    @post("/positions", operation_id="ReportPosition", status_code=204)
    async def report(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.PositionReport],
    ) -> None:
        """Record the caller's last known position (an older fix never replaces a newer one)."""
        await svc.report_position(db, request.user, data)

    @get("/units/positions", operation_id="ListUnitPositions")
    async def units(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> list[s.UnitPosition]:
        """Linked units with their responders' last positions and current tasks."""
        require(request.user, *DISPATCH)
        return await unit_positions(db, request.user)
