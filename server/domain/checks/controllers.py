"""HTTP for safety self-check templates and submissions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import checks as s
from schemas.common import Role
from server.auth.principal import Principal
from server.crud import created, get_visible, live_visible
from server.domain.checks import services as svc
from server.models import CheckSubmission, CheckTemplate
from server.scope import require


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
        row, fresh = await svc.submit(db, request.user, data)
        return created(svc.submission_out(row), fresh)
