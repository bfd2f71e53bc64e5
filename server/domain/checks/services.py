"""Check templates (authority) and weekly submissions (enterprise staff).

A submission is one transaction however it arrives (REST or a phone's sync): the week must be
the current one or a recent past one (`CheckPolicy.grace_weeks`), photos named must exist and
belong to the enterprise, each failed item opens its hazard (`hazards.open_from_check`) and the
week's `check_due` row becomes `done` (`schedule.mark_done`). A retry with the same id returns
the first submission and opens nothing again.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas import checks as s
from schemas.common import Role
from server import audit, changes
from server.auth.principal import Principal
from server.crud import refuse_taken_id, retire_versions
from server.domain.checks import schedule
from server.domain.hazards.services import my_enterprises, only_enterprise, open_from_check
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.models import (
    CheckItem,
    CheckSubmission,
    CheckTemplate,
    Enterprise,
    MediaObject,
    User,
    utcnow,
)


async def template_out(session: AsyncSession, row: CheckTemplate) -> s.CheckTemplate:
    """Wire form of a template with its items in order."""
    items = await session.execute(
        select(CheckItem).where(CheckItem.template_id == row.id).order_by(CheckItem.position)
    )
    return s.CheckTemplate(
        id=row.id,
        code=row.code,
        version=row.version,
        name=row.name,
        active=row.active,
        items=[
            s.CheckItem(id=i.id, position=i.position, text=i.text, category=i.category)
            for i in items.scalars()
        ],
    )


def submission_out(row: CheckSubmission) -> s.CheckSubmission:
    """Wire form of a submission."""
    return s.CheckSubmission(
        id=row.id,
        template_id=row.template_id,
        enterprise_id=row.enterprise_id,
        week=row.week,
        submitted_by=row.submitted_by,
        submitted_at=row.submitted_at,
        results=[
            s.ItemResultOut(
                item_id=uuid.UUID(r["item_id"]),
                result=s.CheckResult(r["result"]),
                note=r.get("note"),
                photo_ids=[uuid.UUID(p) for p in r.get("photo_ids", [])],
            )
            for r in row.results
        ],
    )


async def create_template(
    session: AsyncSession, p: Principal, data: s.CheckTemplateCreate
) -> CheckTemplate:
    """Publish the next version of a template; earlier versions stop being active."""
    latest = await session.scalar(
        select(func.max(CheckTemplate.version)).where(CheckTemplate.code == data.code)
    )
    for old in (
        await session.execute(select(CheckTemplate).where(CheckTemplate.code == data.code))
    ).scalars():
        old.active = False
        changes.record(session, old)
    row = CheckTemplate(code=data.code, version=(latest or 0) + 1, name=data.name, active=True)
    session.add(row)
    await session.flush()
    for pos, item in enumerate(data.items, start=1):
        entry = CheckItem(template_id=row.id, position=pos, text=item.text, category=item.category)
        session.add(entry)
        changes.record(session, entry)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "create", "check_template", row.id, code=row.code, version=row.version)
    return row


ANSWER_EVERY_ITEM = N_("answer every item of the template exactly once")


def answers_every_item(item_ids: set[uuid.UUID], answered: list[uuid.UUID]) -> bool:
    """True when `answered` names every item of the template exactly once (REST and sync)."""
    return len(answered) == len(set(answered)) and set(answered) == item_ids


def stored_results(results: list[s.ItemResult]) -> list[dict[str, Any]]:
    """The results as the row (and the sync record) keep them."""
    return [
        {
            "item_id": str(r.item_id),
            "result": r.result.value,
            "note": r.note,
            "photo_ids": [str(x) for x in r.photo_ids],
        }
        for r in results
    ]


async def _photos(
    session: AsyncSession, p: Principal, enterprise: Enterprise, results: list[s.ItemResult]
) -> dict[uuid.UUID, MediaObject]:
    """The photos the results name, by id: each must exist (declared, even if its bytes are
    still on the way) and have been declared by someone of the enterprise (or by the submitter
    themself, e.g. an administrator submitting for it)."""
    wanted = list(dict.fromkeys(x for r in results for x in r.photo_ids))
    if not wanted:
        return {}
    rows = (
        await session.execute(
            select(MediaObject, User.org_id)
            .outerjoin(User, User.id == MediaObject.uploaded_by)
            .where(MediaObject.id.in_(wanted), MediaObject.deleted_at.is_(None))
        )
    ).all()
    found = {m.id: (m, org) for m, org in rows}
    for ident in wanted:
        if ident not in found:
            raise InvalidInput(
                N_("no photo {id}: declare it first (POST /api/v1/media)"),
                id=ident,
                field="results",
                code="unknown_photo",
            )
        media, org = found[ident]
        ours = enterprise.org_id is not None and org == enterprise.org_id
        if not ours and media.uploaded_by != p.user_id:
            raise InvalidInput(
                N_("photo {id} does not belong to this enterprise"),
                id=ident,
                field="results",
                code="foreign_photo",
            )
    return {ident: media for ident, (media, _) in found.items()}


async def _open_hazards(
    session: AsyncSession,
    p: Principal,
    enterprise: Enterprise,
    row: CheckSubmission,
    data: s.CheckSubmissionCreate,
    photos: dict[uuid.UUID, MediaObject],
    zone: str,
) -> list[uuid.UUID]:
    failed = [r for r in data.results if r.result is s.CheckResult.FAIL]
    if not failed:
        return []
    items = {
        i.id: i
        for i in (
            await session.execute(select(CheckItem).where(CheckItem.template_id == row.template_id))
        ).scalars()
    }
    opened: list[uuid.UUID] = []
    at = row.submitted_at or utcnow()
    for result in failed:
        item = items[result.item_id]
        hazard = await open_from_check(
            session,
            p,
            enterprise=enterprise,
            submission_id=row.id,
            item_id=item.id,
            item_text=item.text,
            item_category=item.category,
            note=result.note,
            photos=[photos[x] for x in dict.fromkeys(result.photo_ids)],
            at=at,
            zone=zone,
        )
        if hazard is not None:
            opened.append(hazard.id)
    return opened


async def submit(
    session: AsyncSession,
    p: Principal,
    data: s.CheckSubmissionCreate,
    *,
    policy: schedule.CheckPolicy = schedule.DEFAULT_POLICY,
    now: datetime | None = None,
) -> tuple[CheckSubmission, bool]:
    """Record a week's self-check (both doors: REST and a device's sync create). One per
    enterprise, template and week. Returns the submission and whether this call made it: a
    retry with the same id returns the first and changes nothing. A failed item opens its
    hazard in this transaction."""
    if data.id is not None:
        existing = await session.get(CheckSubmission, data.id)
        if existing is not None:
            if existing.submitted_by != p.user_id:
                await refuse_taken_id(session, p, CheckSubmission, data.id)
            return existing, False
    if p.role is Role.ENTERPRISE_STAFF:
        mine = await my_enterprises(session, p)
        if data.enterprise_id is not None and data.enterprise_id not in mine:
            raise Forbidden(N_("enterprise staff submit for their own enterprise only"))
        enterprise_id = data.enterprise_id or only_enterprise(mine)
    elif p.role is Role.ADMIN and data.enterprise_id is not None:
        found = await session.get(Enterprise, data.enterprise_id)
        if found is None or found.deleted_at is not None:
            raise InvalidInput(N_("no such enterprise"), field="enterprise_id")
        enterprise_id = found.id
    else:
        raise Forbidden(N_("self-checks are submitted by enterprise staff"))
    enterprise = await session.get(Enterprise, enterprise_id)
    if enterprise is None:  # pragma: no cover - found above
        raise InvalidInput(N_("no such enterprise"), field="enterprise_id")
    at = now or utcnow()
    if not schedule.accepts_week(data.week, at, policy):
        raise InvalidInput(
            N_(
                "week {week} is not open: submit the current week ({current}) or one of the "
                "{grace} before it"
            ),
            week=data.week,
            current=schedule.week_of(at, policy),
            grace=policy.grace_weeks,
            field="week",
            code="week_not_open",
        )
    template = await session.get(CheckTemplate, data.template_id)
    if template is None or not template.active or template.deleted_at is not None:
        raise InvalidInput(N_("no such active template"), field="template_id")
    item_ids = set(
        (await session.execute(select(CheckItem.id).where(CheckItem.template_id == template.id)))
        .scalars()
        .all()
    )
    if not answers_every_item(item_ids, [r.item_id for r in data.results]):
        raise InvalidInput(ANSWER_EVERY_ITEM, field="results", code="incomplete_checklist")
    photos = await _photos(session, p, enterprise, data.results)
    # One per template *code* and week: a version published mid-week is the same checklist.
    duplicate = await session.scalar(
        select(func.count())
        .select_from(CheckSubmission)
        .join(CheckTemplate, CheckTemplate.id == CheckSubmission.template_id)
        .where(
            CheckSubmission.enterprise_id == enterprise_id,
            CheckTemplate.code == template.code,
            CheckSubmission.week == data.week,
        )
    )
    if duplicate:
        raise Conflict(
            N_("week {week} is already submitted"), week=data.week, field="week", code="week_taken"
        )
    row = CheckSubmission(
        template_id=template.id,
        enterprise_id=enterprise_id,
        week=data.week,
        submitted_by=p.user_id,
        submitted_at=at,
        results=stored_results(data.results),
    )
    if data.id is not None:
        row.id = data.id
    session.add(row)
    await session.flush()
    changes.record(session, row)
    hazards = await _open_hazards(session, p, enterprise, row, data, photos, policy.local_tz)
    await schedule.mark_done(session, template, enterprise, data.week, row.id, at, policy)
    audit.record(
        session,
        p,
        "submit",
        "check_submission",
        row.id,
        week=data.week,
        failed=sum(1 for r in data.results if r.result is s.CheckResult.FAIL),
        hazards=len(hazards),
    )
    return row, True


async def retire_template(
    session: AsyncSession, p: Principal, template_id: uuid.UUID
) -> CheckTemplate:
    """Retire a template (every version of its code): it is no longer offered, submitted or
    due; this week's open checks of it are withdrawn. Submissions already made stay. 409
    `already_inactive` when it is retired already."""
    row = await get_template(session, template_id)
    await retire_versions(session, CheckTemplate, row.code)
    withdrawn = await schedule.retire_code(session, row.code)
    audit.record(session, p, "retire", "check_template", row.id, code=row.code, withdrawn=withdrawn)
    return row


async def get_template(session: AsyncSession, template_id: uuid.UUID) -> CheckTemplate:
    """A template by id, or NotFound."""
    row = await session.get(CheckTemplate, template_id)
    if row is None or row.deleted_at is not None:
        raise NotFound(N_("no check template {id}"), id=template_id)
    return row
