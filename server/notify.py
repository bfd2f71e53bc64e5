"""Who is told what: audiences (queries over people) and `notify`, which puts a notice in each
recipient's saved language and queues it in the outbox, in the caller's transaction.

An `Audience` resolves to the ids of active users. The ones the loops use today:

- `Users(ids)`: these people;
- `OrgMembers(org_ids)`: the active members (home organisation or a live membership) of these
  organisations: a unit's responders, an enterprise's staff, a rectifying department;
- `AreaDispatchers(area_id)`: active dispatchers whose command area contains the area (all of
  them for none);
- `GridInspector(grid_id)`: the inspector of a live grid;
- `TaskAssignees(task)`: the task's unit's members and its assigned user;
- `StaffInside(area)`: staff whose home area or last position is inside a warning's area;
- `AnyOf(a, b, ...)`: everyone in any of them; `Without(a, *ids)`: `a` less these people.

A new audience (e.g. residents inside a warning polygon) is one more class with `user_ids`.
How each message reads is `push.notices` (pure, no database). The outbox sends a notice once
per (event_id, device): `notify` called twice for one event queues nothing the second time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import i18n
from push.notices import Notice, build
from schemas.common import MultiPolygon, Polygon, Role
from server import geo
from server.db import dialect_of
from server.models import AdminArea, Grid, Membership, ResponderPosition, Task, User
from server.outbox import DeviceRow, enqueue_for_devices, registered_devices

__all__ = [
    "AnyOf",
    "AreaDispatchers",
    "Audience",
    "GridInspector",
    "OrgMembers",
    "StaffInside",
    "TaskAssignees",
    "Users",
    "Without",
    "active_members",
    "display_time",
    "languages_of",
    "notify",
]


DEFAULT_ZONE = "Asia/Shanghai"


def _live_user() -> list[ColumnElement[bool]]:
    return [User.disabled.is_(False), User.deleted_at.is_(None)]


def active_members(org_match: Callable[[Any], ColumnElement[bool]]) -> Select[uuid.UUID]:
    """Ids of active users whose home organisation, or one of whose live memberships, matches
    `org_match(column)` (e.g. `lambda c: c.in_(ids)`, or `lambda c: c == Organisation.id` for a
    correlated EXISTS): the one definition of "an active member of a unit"."""
    members = select(Membership.user_id).where(
        org_match(Membership.org_id), Membership.deleted_at.is_(None)
    )
    return select(User.id).where(or_(org_match(User.org_id), User.id.in_(members)), *_live_user())


class Audience(Protocol):
    """Who receives a notice: resolved to user ids inside the caller's transaction."""

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """The ids of the people in this audience now."""
        ...


@dataclass(frozen=True)
class Users:
    """These people (inactive ones are dropped by the outbox)."""

    ids: frozenset[uuid.UUID]

    @classmethod
    def of(cls, *ids: uuid.UUID | None) -> Users:
        """The given ids, skipping None."""
        return cls(frozenset(i for i in ids if i is not None))

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """The ids themselves."""
        return set(self.ids)


@dataclass(frozen=True)
class OrgMembers:
    """The active members of these organisations (units, enterprises' staff, departments)."""

    org_ids: frozenset[uuid.UUID]

    @classmethod
    def of(cls, *ids: uuid.UUID | None) -> OrgMembers:
        """The given organisations, skipping None."""
        return cls(frozenset(i for i in ids if i is not None))

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """Active home members and live members."""
        if not self.org_ids:
            return set()
        orgs = sorted(self.org_ids)
        return set((await session.execute(active_members(lambda c: c.in_(orgs)))).scalars())


@dataclass(frozen=True)
class AreaDispatchers:
    """Active dispatchers whose command area contains `area_id` (all of them when None)."""

    area_id: uuid.UUID | None

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """Dispatchers without a home area command everywhere; others their subtree."""
        stmt = select(User.id).where(User.role == Role.DISPATCHER.value, *_live_user())
        if self.area_id is not None:
            # One statement: the area's path is a subquery (no such area: every dispatcher).
            path = select(AdminArea.path).where(AdminArea.id == self.area_id).scalar_subquery()
            home = select(AdminArea.path).where(AdminArea.id == User.area_id).scalar_subquery()
            stmt = stmt.where(or_(User.area_id.is_(None), path.is_(None), path.startswith(home)))
        return set((await session.execute(stmt)).scalars())


@dataclass(frozen=True)
class GridInspector:
    """The inspector of a live grid (nobody for None or an unstaffed grid)."""

    grid_id: uuid.UUID | None

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """The grid's inspector."""
        found = await grid_inspector(session, self.grid_id)
        return {found} if found is not None else set()


async def grid_inspector(session: AsyncSession, grid_id: uuid.UUID | None) -> uuid.UUID | None:
    """The inspector of a live grid, if it has one."""
    if grid_id is None:
        return None
    grid = await session.get(Grid, grid_id)
    return grid.inspector_id if grid is not None and grid.deleted_at is None else None


@dataclass(frozen=True)
class TaskAssignees:
    """A task's assignees: its unit's active members and its assigned user."""

    task: Task

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """Members of the assigned unit, and the assigned user."""
        unit = await OrgMembers.of(self.task.assignee_unit_id).user_ids(session)
        return unit | await Users.of(self.task.assignee_user_id).user_ids(session)


@dataclass(frozen=True)
class StaffInside:
    """Active staff, whatever their role, whose home area intersects `area` or whose last known
    position is inside it (a public warning's field side, issue 15)."""

    area: Polygon | MultiPolygon

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """Home area or last position inside (spatial index on both databases)."""
        dialect = dialect_of(session)
        homes = select(AdminArea.id).where(
            AdminArea.deleted_at.is_(None),
            geo.within_polygon(dialect, AdminArea.boundary, self.area),
        )
        positioned = select(ResponderPosition.user_id).where(
            geo.within_polygon(dialect, ResponderPosition.location, self.area)
        )
        rows = await session.execute(
            select(User.id).where(
                *_live_user(), or_(User.area_id.in_(homes), User.id.in_(positioned))
            )
        )
        return set(rows.scalars())


class Without:
    """An audience less some people (e.g. the one who took the step: they know)."""

    def __init__(self, audience: Audience, *user_ids: uuid.UUID | None) -> None:
        self.audience = audience
        self.excluded = {i for i in user_ids if i is not None}

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """The audience's ids without the excluded ones."""
        return await self.audience.user_ids(session) - self.excluded


class AnyOf:
    """Everyone in any of the audiences."""

    def __init__(self, *audiences: Audience) -> None:
        self.audiences = audiences

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """The union of the audiences."""
        out: set[uuid.UUID] = set()
        for audience in self.audiences:
            out |= await audience.user_ids(session)
        return out


def display_time(at: datetime, zone: str | None = None) -> str:
    """A time as people read it in a notice: local wall clock with its offset
    (`2026-12-01 18:00 +08:00`), in `zone` or the deployment's (`LIANDONG_LOCAL_TZ`)."""
    tz = ZoneInfo(zone or os.environ.get("LIANDONG_LOCAL_TZ") or DEFAULT_ZONE)
    local = at.astimezone(tz)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}"


async def languages_of(
    session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> dict[str, list[uuid.UUID]]:
    """The users grouped by their saved language (an unknown value reads Chinese)."""
    ids = sorted(set(user_ids))
    groups: dict[str, list[uuid.UUID]] = {}
    if not ids:
        return groups
    rows = await session.execute(select(User.id, User.language).where(User.id.in_(ids)))
    for user_id, lang in rows.all():
        groups.setdefault(i18n.normalize(lang), []).append(user_id)
    return groups


async def notify(
    session: AsyncSession,
    notice: Notice,
    audience: Audience,
    *,
    now: datetime | None = None,
) -> int:
    """Queue `notice` for every registered device of the audience, each in its owner's
    language, in the caller's transaction; returns how many jobs were queued (0 for a repeat).
    The devices and their owners' languages are one read."""
    recipients = await audience.user_ids(session)
    by_lang: dict[str, list[DeviceRow]] = {}
    for device in await registered_devices(session, recipients):
        by_lang.setdefault(i18n.normalize(device[4]), []).append(device)
    queued = 0
    for lang, devices in sorted(by_lang.items()):
        queued += await enqueue_for_devices(
            session, devices, event_id=notice.event_id, message=build(notice, lang), now=now
        )
    return queued
