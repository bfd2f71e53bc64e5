"""Who sees what: row filters by role and area, one place for every REST route and sync.

`visible(p, Model)` returns a SQL condition (None = everything) or raises Forbidden when the role
has no access to that kind of record at all. Records out of scope answer 404, not 403, so their
existence is not leaked.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    Uuid,
    bindparam,
    cast,
    exists,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from i18n import N_
from schemas.common import Role
from server.auth.principal import Principal
from server.errors import Forbidden
from server.models import (
    AdminArea,
    Alert,
    AuditLog,
    CheckDue,
    CheckSubmission,
    Contact,
    Enterprise,
    Grid,
    Hazard,
    Incident,
    Organisation,
    Resource,
    Task,
    User,
)

_Stmt = TypeVar("_Stmt")

_PRINCIPAL_PARAMS = {"user_id": "p_user", "org_id": "p_org", "area_id": "p_area"}
"""The bound parameters a statement built by `for_principal` takes from its principal."""

_BUILT: dict[tuple[object, ...], Any] = {}


def for_principal(p: Principal, build: Callable[[Principal], _Stmt]) -> _Stmt:
    """`build(p)`, a statement written with the rules above, built once per process for each
    shape of principal (role, and which of organisation and area they have) with the
    principal's ids as bound parameters: run it with `principal_params(p)`.

    What a pull asks on every request (a user's tasks, areas and grids) cost more to build
    than to run: SQLAlchemy's operators, coercions and cache key are about 0.3 ms of Python a
    statement, and a responder's idle pull built five. The rules stay written once, for a
    principal; here they are handed one whose ids are parameters. A rule that tests an id's
    truth (`if p.org_id`) rather than `is None` cannot be built this way (SQLAlchemy refuses
    the truth of a parameter): write it with `is not None`."""
    key = (build, p.role, p.org_id is None, p.area_id is None)
    built = _BUILT.get(key)
    if built is None:
        ids: dict[str, Any] = {
            field: None if getattr(p, field) is None else bindparam(param, type_=Uuid)
            for field, param in _PRINCIPAL_PARAMS.items()
        }
        built = _BUILT[key] = build(dataclasses.replace(p, **ids))
    stmt: _Stmt = built
    return stmt


def principal_params(p: Principal) -> dict[str, Any]:
    """The bound parameters of a statement built by `for_principal` (those it has no use
    for are ignored)."""
    return {param: getattr(p, field) for field, param in _PRINCIPAL_PARAMS.items()}


def _area_subtree(area_id: Any) -> Any:
    """Ids of the area and every area below it (materialized path prefix)."""
    root_path = select(AdminArea.path).where(AdminArea.id == area_id).scalar_subquery()
    return select(AdminArea.id).where(AdminArea.path.startswith(root_path, autoescape=False))


def _unit_area(p: Principal) -> Any:
    return select(Organisation.area_id).where(Organisation.id == p.org_id).scalar_subquery()


def home_area_subtree(p: Principal) -> Any:
    """The areas a user's work covers: their own area, else their organisation's."""
    return _area_subtree(p.area_id if p.area_id is not None else _unit_area(p))


def _my_grids(p: Principal) -> Any:
    return select(Grid.id).where(Grid.inspector_id == p.user_id, Grid.deleted_at.is_(None))


def _my_enterprises(p: Principal) -> Any:
    return select(Enterprise.id).where(Enterprise.org_id == p.org_id)


def _assigned_to_my_org(p: Principal) -> ColumnElement[bool]:
    """Hazards whose rectification is assigned to the user's organisation."""
    return Hazard.rectify_org_id == p.org_id if p.org_id is not None else false()


def _my_tasks(p: Principal) -> ColumnElement[bool]:
    mine = Task.assignee_user_id == p.user_id
    if p.org_id is not None:
        return or_(mine, Task.assignee_unit_id == p.org_id)
    return mine


def visible(p: Principal, model: type[Any]) -> ColumnElement[bool] | None:
    """The rows of `model` that `p` may read."""
    if p.role is Role.ADMIN or model in (Resource, Organisation, AdminArea):
        return None
    if model is Alert:
        # Every published warning message (all statuses); drafts only to dispatch of their area.
        published = Alert.state == "published"
        if p.role is Role.DISPATCHER:
            return or_(published, Alert.area_id.in_(home_area_subtree(p)))
        return published
    if model is User or model is AuditLog:
        raise Forbidden(N_("only administrators manage users and read the audit log"))
    area = home_area_subtree(p)
    match p.role, model:
        case Role.DISPATCHER, _ if hasattr(model, "area_id"):
            return model.area_id.in_(area)  # type: ignore[no-any-return]
        case Role.RESPONDER, m if m is Task:
            return _my_tasks(p)
        case Role.INSPECTOR, m if m is Task:
            return Task.assignee_user_id == p.user_id
        case Role.RESPONDER, m if m is Incident:
            return Incident.id.in_(select(Task.incident_id).where(_my_tasks(p)))
        case Role.RESPONDER, m if m in (Hazard, Grid, Enterprise):
            cond: ColumnElement[bool] = m.area_id.in_(area)
            if m is Hazard:
                # A unit assigned to rectify a hazard sees it, wherever it is.
                return or_(cond, Hazard.reporter_id == p.user_id, _assigned_to_my_org(p))
            return cond
        case Role.INSPECTOR, m if m is Hazard:
            return or_(Hazard.grid_id.in_(_my_grids(p)), Hazard.reporter_id == p.user_id)
        case Role.INSPECTOR, m if m is Grid:
            return Grid.inspector_id == p.user_id
        case Role.INSPECTOR, m if m is Enterprise:
            return Enterprise.grid_id.in_(_my_grids(p))
        case Role.ENTERPRISE_STAFF, m if m is Hazard:
            return or_(
                Hazard.enterprise_id.in_(_my_enterprises(p)),
                Hazard.reporter_id == p.user_id,
                _assigned_to_my_org(p),
            )
        case Role.ENTERPRISE_STAFF, m if m is Enterprise:
            return Enterprise.org_id == p.org_id if p.org_id is not None else false()
        case Role.ENTERPRISE_STAFF, m if m is Grid:
            return Grid.id.in_(select(Enterprise.grid_id).where(Enterprise.org_id == p.org_id))
        case Role.DISPATCHER, m if m is CheckSubmission:
            return CheckSubmission.enterprise_id.in_(
                select(Enterprise.id).where(Enterprise.area_id.in_(area))
            )
        case Role.INSPECTOR, m if m is CheckSubmission:
            return CheckSubmission.enterprise_id.in_(
                select(Enterprise.id).where(Enterprise.grid_id.in_(_my_grids(p)))
            )
        case Role.ENTERPRISE_STAFF, m if m is CheckSubmission:
            return CheckSubmission.enterprise_id.in_(_my_enterprises(p))
        case Role.INSPECTOR, m if m is CheckDue:
            return CheckDue.grid_id.in_(_my_grids(p))
        case Role.ENTERPRISE_STAFF, m if m is CheckDue:
            return CheckDue.enterprise_id.in_(_my_enterprises(p))
    raise Forbidden(
        N_("role {role} has no access to {table}"), role=p.role, table=model.__tablename__
    )


def require(p: Principal, *roles: Role) -> None:
    """Raise Forbidden unless `p` has one of `roles`."""
    if p.role not in roles:
        raise Forbidden(N_("this needs one of: {roles}"), roles=", ".join(r.value for r in roles))


def serving_areas(dialect: str, areas: Collection[uuid.UUID]) -> ColumnElement[bool]:
    """Contacts that serve everywhere (no `area_ids`) or one of `areas`."""
    ids = sorted(str(a) for a in areas)
    if dialect == "postgresql":
        served = cast(Contact.area_ids, JSONB)
        everywhere = func.jsonb_array_length(served) == 0
        if not ids:
            return everywhere
        # One array parameter, however many areas (a province has thousands).
        wanted = cast(bindparam(None, ids, type_=ARRAY(String)), ARRAY(Text))
        return or_(everywhere, served.op("?|")(wanted))
    everywhere = func.json_array_length(Contact.area_ids) == 0
    if not ids:
        return everywhere
    mine = func.json_each(Contact.area_ids).table_valued("value").alias("served")
    asked = func.json_each(bindparam(None, json.dumps(ids), type_=String)).table_valued("value")
    wanted_ids = select(asked.alias("wanted").c.value)
    return or_(everywhere, exists(select(mine.c.value).where(mine.c.value.in_(wanted_ids))))


def visible_contacts(
    p: Principal, dialect: str, areas: Collection[uuid.UUID] | None
) -> ColumnElement[bool] | None:
    """The contacts `p` may read (None: all): those serving everywhere or one of `areas`, the
    areas whose reference data `p` reads, as their phone holds it
    (`server.domain.sync.reference_scopes.reference_areas`; it needs the session and the areas'
    geometry, so `visible(p, Contact)` refuses everyone but administrators)."""
    if p.role is Role.ADMIN or areas is None:
        return None
    return serving_areas(dialect, areas)
