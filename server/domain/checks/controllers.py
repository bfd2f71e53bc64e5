"""HTTP for safety self-check templates, submissions, assignments and the weeks' checks."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import checks as s
from schemas.common import Role
from server.auth.principal import Principal
from server.crud import created, get_visible, live_visible
from server.domain.checks import schedule
from server.domain.checks import services as svc
from server.models import CheckAssignment, CheckDue, CheckSubmission, CheckTemplate
from server.scope import require


def _policy(request: Request[Principal, Any, Any]) -> schedule.CheckPolicy:
    return schedule.CheckPolicy.from_settings(request.app.state.settings)


class CheckTemplateController(Controller):
    """Templates: everyone signed in reads the active ones; administrators publish."""

    path = "/api/v1/check-templates"
    tags = ["checks"]

    @get("/", operation_id="ListCheckTemplates")
    async def list_templates(
        self,
        db: NamedDependency[AsyncSession],
        include_inactive: FromQuery[bool] = False,
    ) -> list[s.CheckTemplate]:
        """Templates (active ones unless include_inactive)."""
        stmt = select(CheckTemplate).where(CheckTemplate.deleted_at.is_(None))
        if not include_inactive:
            stmt = stmt.where(CheckTemplate.active.is_(True))
        rows = (
            await db.execute(stmt.order_by(CheckTemplate.code, CheckTemplate.version))
        ).scalars()
        return [await svc.template_out(db, r) for r in rows]

    @get("/{template_id:uuid}", operation_id="GetCheckTemplate")
    async def get_template(
        self, db: NamedDependency[AsyncSession], template_id: FromPath[uuid.UUID]
    ) -> s.CheckTemplate:
        """One template with its items."""
        return await svc.template_out(db, await svc.get_template(db, template_id))

    @post("/", operation_id="CreateCheckTemplate")
    async def create_template(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.CheckTemplateCreate],
    ) -> s.CheckTemplate:
        """Publish a template or its next version (administrators)."""
        require(request.user, Role.ADMIN)
        return await svc.template_out(db, await svc.create_template(db, request.user, data))

    @post("/{template_id:uuid}/retire", operation_id="RetireCheckTemplate", status_code=200)
    async def retire_template(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        template_id: FromPath[uuid.UUID],
    ) -> s.CheckTemplate:
        """Retire a template and its versions (administrators): no longer due or accepted."""
        require(request.user, Role.ADMIN)
        row = await svc.retire_template(db, request.user, template_id)
        return await svc.template_out(db, row)


class CheckSubmissionController(Controller):
    """Weekly submissions: enterprise staff submit; supervisors read in their area or grid."""

    path = "/api/v1/check-submissions"
    tags = ["checks"]

    @get("/", operation_id="ListCheckSubmissions")
    async def list_submissions(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        week: FromQuery[str | None] = None,
        enterprise_id: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[s.CheckSubmission]:
        """Submissions the user may see, newest first."""
        stmt = select(CheckSubmission).where(*live_visible(request.user, CheckSubmission))
        if week:
            stmt = stmt.where(CheckSubmission.week == week)
        if enterprise_id:
            stmt = stmt.where(CheckSubmission.enterprise_id == enterprise_id)
        rows = await db.execute(stmt.order_by(CheckSubmission.id.desc()).limit(limit))
        return [svc.submission_out(r) for r in rows.scalars()]

    @get("/{submission_id:uuid}", operation_id="GetCheckSubmission")
    async def get_submission(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        submission_id: FromPath[uuid.UUID],
    ) -> s.CheckSubmission:
        """One submission."""
        row = await get_visible(db, request.user, CheckSubmission, submission_id)
        return svc.submission_out(row)

    @post("/", operation_id="SubmitCheck")
    async def submit(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.CheckSubmissionCreate],
    ) -> Response[s.CheckSubmission]:
        """Submit this week's self-check (201; a retry with the same id: 200,
        `Idempotent-Replayed`)."""
        row, fresh = await svc.submit(db, request.user, data, policy=_policy(request))
        return created(svc.submission_out(row), fresh)


def _assignment_out(row: CheckAssignment) -> s.CheckAssignment:
    return s.CheckAssignment(
        id=row.id,
        template_code=row.template_code,
        enterprise_id=row.enterprise_id,
        enterprise_kind=row.enterprise_kind,
        area_id=row.area_id,
        due_weekday=row.due_weekday,
        created_at=row.created_at,
    )


class CheckAssignmentController(Controller):
    """Which enterprises owe which template each week (administrators)."""

    path = "/api/v1/check-assignments"
    tags = ["checks"]

    @get("/", operation_id="ListCheckAssignments")
    async def list_assignments(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> list[s.CheckAssignment]:
        """Every live assignment."""
        require(request.user, Role.ADMIN)
        rows = await db.execute(
            select(CheckAssignment)
            .where(CheckAssignment.deleted_at.is_(None))
            .order_by(CheckAssignment.created_at, CheckAssignment.id)
        )
        return [_assignment_out(r) for r in rows.scalars()]

    @post("/", operation_id="CreateCheckAssignment")
    async def create_assignment(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.CheckAssignmentCreate],
    ) -> s.CheckAssignment:
        """Assign a template to enterprises (by hand, kind or area) with its weekly due day."""
        require(request.user, Role.ADMIN)
        row = await schedule.assign(db, request.user, data)
        return _assignment_out(row)

    @delete("/{assignment_id:uuid}", operation_id="DeleteCheckAssignment")
    async def delete_assignment(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        assignment_id: FromPath[uuid.UUID],
    ) -> None:
        """End an assignment: from next week on its enterprises no longer owe the check."""
        require(request.user, Role.ADMIN)
        await schedule.unassign(db, request.user, assignment_id)


class CheckDueController(Controller):
    """Each enterprise's weekly checks: due, done or missed (as its phone syncs them)."""

    path = "/api/v1/check-dues"
    tags = ["checks"]

    @get("/", operation_id="ListCheckDues")
    async def list_dues(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        week: Annotated[str | None, QueryParameter(pattern=s.WEEK_PATTERN)] = None,
        enterprise_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[s.DueStatus | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
    ) -> list[s.CheckDue]:
        """The weeks' checks the user may see (enterprise staff: their enterprise's; inspectors:
        their grids'; dispatchers: their area's), newest week first."""
        stmt = select(CheckDue).where(*live_visible(request.user, CheckDue))
        if week:
            stmt = stmt.where(CheckDue.week == week)
        if enterprise_id:
            stmt = stmt.where(CheckDue.enterprise_id == enterprise_id)
        if status:
            stmt = stmt.where(CheckDue.status == status.value)
        order = (CheckDue.week.desc(), CheckDue.enterprise_id, CheckDue.template_code)
        rows = await db.execute(stmt.order_by(*order).limit(limit))
        return [schedule.due_out(r) for r in rows.scalars()]
