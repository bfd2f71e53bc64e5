"""Which areas a user's reference data comes from: their home area and their current tasks'
areas, each with its *reach* (the area, every area below it, its ancestors, and its
neighbours of the same level likewise). REST contacts and sync's reference scopes both use it
(`server/domain/sync/reference_scopes.py` has the whole rule).

Plain synchronous SQLAlchemy (REST reaches it through `AsyncSession.run_sync`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from geoalchemy2.shape import to_shape
from sqlalchemy import ColumnElement, String, Uuid, bindparam, cast, func, null, or_, select
from sqlalchemy.orm import Session

from schemas.common import Role
from schemas.states import TaskStatus
from server import geo
from server.auth.principal import Principal
from server.db import dialect_of
from server.models import AdminArea, Organisation, Task

NEIGHBOUR_GAP_DEG = 1e-4
"""How far apart (degrees, about 10 m) two boundaries may be and still be neighbours."""

_DONE = (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.DECLINED)
_DONE_VALUES = tuple(s.value for s in _DONE)


_FACTS = "organisation_facts"


def _org_memo(session: Session) -> dict[uuid.UUID, tuple[uuid.UUID | None, str | None]]:
    """(area, unit kind) by organisation, kept for the session's current transaction."""
    tx = session.get_transaction()
    memo: dict[uuid.UUID, tuple[uuid.UUID | None, str | None]]
    owner, memo = session.info.get(_FACTS, (None, {}))
    if owner is not tx:
        memo = {}
        session.info[_FACTS] = (tx, memo)
    return memo


_ORG_FACTS = select(Organisation.area_id, Organisation.unit_kind).where(
    Organisation.id == bindparam("org", type_=Uuid)
)
_AREAS_VERSION = select(func.count(), func.max(AdminArea.updated_at)).select_from(AdminArea)
_FACTS_AND_VERSION = _AREAS_VERSION.add_columns(
    _ORG_FACTS.with_only_columns(Organisation.area_id).scalar_subquery(),
    _ORG_FACTS.with_only_columns(Organisation.unit_kind).scalar_subquery(),
)
"""Built once: each is asked on every pull (building one cost more than running it)."""


def organisation_facts(
    session: Session, org_id: uuid.UUID | None
) -> tuple[uuid.UUID | None, str | None]:
    """(area, unit kind) of an organisation, read once per transaction: a pull asks for both."""
    if org_id is None:
        return None, None
    memo = _org_memo(session)
    if org_id not in memo:
        row = session.connection().execute(_ORG_FACTS, {"org": org_id}).one_or_none()
        memo[org_id] = (row[0], row[1]) if row is not None else (None, None)
    return memo[org_id]


def _facts_and_version(session: Session, org_id: uuid.UUID | None) -> tuple[object, ...]:
    """The areas' version (`_areas_version`) and, in the same statement, the organisation's
    (area, unit kind) (kept for the transaction, as `organisation_facts` keeps them): what a
    user's reference areas depend on besides their tasks, in one read."""
    if org_id is None:
        return _areas_version(session)
    memo = _org_memo(session)
    count, changed, area, kind = (
        session.connection().execute(_FACTS_AND_VERSION, {"org": org_id}).one()
    )
    memo.setdefault(org_id, (area, kind))
    return (str(session.get_bind().engine.url), count, changed)


def facts_and_version_stmt(org_id: Any) -> Any:
    """(area count, last area change, the organisation's area, its unit kind) for `org_id`
    (a bound parameter, or None: no organisation), to be read with other reads in one
    statement; give the row to `noted_facts`."""
    if org_id is None:
        return _AREAS_VERSION.add_columns(
            cast(null(), Uuid).label("org_area"), cast(null(), String).label("kind")
        )
    facts = select(Organisation.area_id, Organisation.unit_kind).where(Organisation.id == org_id)
    return _AREAS_VERSION.add_columns(
        facts.with_only_columns(Organisation.area_id).scalar_subquery().label("org_area"),
        facts.with_only_columns(Organisation.unit_kind).scalar_subquery().label("kind"),
    )


def noted_facts(
    session: Session,
    org_id: uuid.UUID | None,
    count: int,
    changed: object,
    area: uuid.UUID | None,
    kind: str | None,
) -> tuple[object, ...]:
    """The areas' version from a row of `facts_and_version_stmt` read elsewhere, keeping the
    organisation's facts for the transaction as `_facts_and_version` does."""
    if org_id is not None:
        _org_memo(session).setdefault(org_id, (area, kind))
    return (str(session.get_bind().engine.url), count, changed)


def _home_area(session: Session, p: Principal) -> uuid.UUID | None:
    if p.area_id is not None:
        return p.area_id
    return organisation_facts(session, p.org_id)[0]


def my_tasks(p: Principal) -> ColumnElement[bool]:
    """The tasks whose areas a user's reference data follows: assigned to them or their unit."""
    mine: ColumnElement[bool] = Task.assignee_user_id == p.user_id
    if p.org_id is not None:
        mine = or_(mine, Task.assignee_unit_id == p.org_id)
    return mine


def task_area_ids(rows: Iterable[tuple[uuid.UUID | None, str]]) -> set[uuid.UUID]:
    """The areas of current tasks among (area, status) of live tasks."""
    return {a for a, status in rows if a is not None and status not in _DONE_VALUES}


def _task_areas(session: Session, p: Principal) -> set[uuid.UUID]:
    stmt = select(Task.area_id).where(
        my_tasks(p),
        Task.deleted_at.is_(None),
        Task.area_id.is_not(None),
        Task.status.not_in(_DONE_VALUES),
    )
    return {a for a in session.execute(stmt.distinct()).scalars() if a is not None}


def _ancestors(path: str) -> set[uuid.UUID]:
    """The ids on an area's materialized path (itself and every ancestor)."""
    return {uuid.UUID(part) for part in path.split("/") if part}


def _subtrees(session: Session, paths: Iterable[str]) -> set[uuid.UUID]:
    prefixes = sorted(set(paths))
    if not prefixes:
        return set()
    cond = or_(*(AdminArea.path.startswith(prefix, autoescape=False) for prefix in prefixes))
    return set(session.execute(select(AdminArea.id).where(cond)).scalars())


def _neighbours(session: Session, base: AdminArea) -> list[tuple[uuid.UUID, str]]:
    """(id, path) of the live areas of `base`'s level whose boundaries meet `base`'s."""
    if base.boundary is None:
        return []
    w, s, e, n = to_shape(base.boundary).bounds
    gap = NEIGHBOUR_GAP_DEG
    own = select(AdminArea.boundary).where(AdminArea.id == base.id).scalar_subquery()
    stmt = select(AdminArea.id, AdminArea.path).where(
        AdminArea.deleted_at.is_(None),
        AdminArea.level == base.level,
        AdminArea.id != base.id,
        geo.in_box(dialect_of(session), AdminArea.boundary, (w - gap, s - gap, e + gap, n + gap)),
        # Planar distance in degrees on both backends; 0 when the boundaries touch or overlap.
        func.ST_Distance(AdminArea.boundary, own) <= gap,
    )
    return [(i, path) for i, path in session.execute(stmt)]


_REACH_CACHE: dict[tuple[object, ...], frozenset[uuid.UUID]] = {}
_REACH_CACHE_MAX = 4096


def _areas_version(session: Session) -> tuple[object, ...]:
    """What the reach of any area depends on, in one cheap read: the database, how many areas
    there are and when one last changed (every area write goes through the ORM, which stamps
    `updated_at`; a soft delete too)."""
    count, changed = session.connection().execute(_AREAS_VERSION).one()
    return (str(session.get_bind().engine.url), count, changed)


def reach(
    session: Session, area_ids: Iterable[uuid.UUID], version: tuple[object, ...] | None = None
) -> set[uuid.UUID]:
    """The areas whose reference data serves people working in `area_ids` (see the module
    docstring): each area with its subtree and ancestors, and its neighbours likewise.

    Every pull asks it (a phone's reference scopes); the areas change rarely, so the answer
    is kept per process until they do (one read checks, instead of three with a spatial
    one). `version`: the areas' version when the caller read it already."""
    ids = set(area_ids)
    if not ids:
        return set()
    key = (*(version or _areas_version(session)), frozenset(ids))
    cached = _REACH_CACHE.get(key)
    if cached is None:
        if len(_REACH_CACHE) >= _REACH_CACHE_MAX:
            _REACH_CACHE.clear()
        cached = _REACH_CACHE[key] = frozenset(_reach(session, ids))
    return set(cached)


def _reach(session: Session, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    bases = list(session.execute(select(AdminArea).where(AdminArea.id.in_(ids))).scalars())
    lines: set[str] = set()
    for base in bases:
        lines.add(base.path)
        lines.update(path for _, path in _neighbours(session, base))
    out = _subtrees(session, lines)
    for path in lines:
        out |= _ancestors(path)
    return out


def reference_areas(
    session: Session,
    p: Principal,
    task_areas: set[uuid.UUID] | None = None,
    version: tuple[object, ...] | None = None,
) -> set[uuid.UUID] | None:
    """The areas whose `refarea:` scopes `p` reads; None for administrators (every area).
    `task_areas`: the areas of `p`'s current tasks when the caller read them already;
    `version`: the areas' version likewise (`noted_facts`, which kept the organisation's)."""
    if p.role is Role.ADMIN:
        return None
    bases: set[uuid.UUID] = set()
    if p.role is not Role.DISPATCHER:
        bases = set(task_areas) if task_areas is not None else _task_areas(session, p)
    if version is None:
        version = _facts_and_version(session, p.org_id)  # and the organisation's facts
    home = _home_area(session, p)
    if home is not None:
        bases.add(home)
    return reach(session, bases, version)
