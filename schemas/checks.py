"""Enterprise safety self-checks (安全周检查表): templates, items, weekly submissions."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import Input, Name, Output, Text

WEEK_PATTERN = r"^\d{4}-W(0[1-9]|[1-4]\d|5[0-3])$"
Week = Annotated[str, msgspec.Meta(pattern=WEEK_PATTERN, examples=["2026-W47"])]


class CheckItem(Output):
    """One checklist item."""

    id: uuid.UUID
    position: int
    text: str
    category: str


class CheckTemplate(Output):
    """A versioned template; a new version is a new template with the same code."""

    id: uuid.UUID
    code: str
    version: int
    name: str
    active: bool
    items: list[CheckItem]


class CheckItemCreate(Input):
    """An item of a new template."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "other"


class CheckTemplateCreate(Input):
    """Publish a template (or the next version of `code`)."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
    name: Name
    items: Annotated[list[CheckItemCreate], msgspec.Meta(min_length=1, max_length=200)]


class CheckResult(enum.StrEnum):
    """Outcome of one item."""

    PASS = "pass"
    FAIL = "fail"
    NA = "na"


class ItemResult(Input):
    """The answer to one item."""

    item_id: uuid.UUID
    result: CheckResult
    note: Text | None = None
    photo_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class ItemResultOut(Output):
    """A stored answer."""

    item_id: uuid.UUID
    result: CheckResult
    note: str | None
    photo_ids: list[uuid.UUID]


class CheckSubmission(Output):
    """An enterprise's weekly self-check."""

    id: uuid.UUID
    template_id: uuid.UUID
    enterprise_id: uuid.UUID
    week: str
    submitted_by: uuid.UUID | None
    submitted_at: datetime | None
    results: list[ItemResultOut]


class CheckSubmissionCreate(Input):
    """Submit a week's self-check; every item of the template answered exactly once."""

    template_id: uuid.UUID
    week: Week
    results: Annotated[list[ItemResult], msgspec.Meta(min_length=1, max_length=200)]
    enterprise_id: uuid.UUID | None = None
    id: uuid.UUID | None = None


class DueStatus(enum.StrEnum):
    """Where one week's self-check of one enterprise stands."""

    DUE = "due"
    DONE = "done"
    MISSED = "missed"


class CheckDue(Output):
    """One enterprise's self-check of one template for one ISO week (read-only; the phone
    syncs it as `check_due`). `due_at` is the end of the due day; a late submission (within
    the grace) is `done` with `missed_at` kept."""

    id: uuid.UUID
    enterprise_id: uuid.UUID
    template_id: uuid.UUID
    template_code: str
    week: str
    due_at: datetime
    status: DueStatus
    submission_id: uuid.UUID | None = None
    submitted_at: datetime | None = None
    reminded_at: datetime | None = None
    missed_at: datetime | None = None


class CheckAssignmentCreate(Input):
    """Assign a template (by code, so new versions carry over) to enterprises: one by hand,
    all of a kind, all in an area (its subtree); every selector given must match, at least one
    is needed. Weekly, due on ISO weekday `due_weekday` (1 Monday .. 7 Sunday)."""

    template_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    enterprise_id: uuid.UUID | None = None
    enterprise_kind: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    area_id: uuid.UUID | None = None
    due_weekday: Annotated[int, msgspec.Meta(ge=1, le=7)] = 5


class CheckAssignment(Output):
    """A template assigned to enterprises with its weekly due day."""

    id: uuid.UUID
    template_code: str
    enterprise_id: uuid.UUID | None
    enterprise_kind: str | None
    area_id: uuid.UUID | None
    due_weekday: int
    created_at: datetime


class CheckCompletionRow(Output):
    """Self-check completion of one enterprise in one week: checks due (every row), done
    (of which `late`: submitted after the week, within the grace) and missed."""

    enterprise_id: uuid.UUID
    week: str
    due: int
    done: int
    late: int
    missed: int
