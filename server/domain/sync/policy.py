"""The server's `SyncPolicy`: a device's write is applied by the domain action REST calls.

One door: every field action has one function with all its rules (authorization, state machine,
evidence, derived fields, timeline, audit, change record, push jobs), in its domain's
`services.py`. The REST controller calls it; so does this policy, for each mutation a device
pushes, after the merge has decided which of the device's values win:

| entity | op | domain action |
|---|---|---|
| `hazard` | c / u / d | `hazards.create_hazard` / `patch_hazard` / `delete_hazard` |
| `hazard_step` | c | `hazards.transition_hazard` (every step of the closed loop) |
| `task_step` | c | `dispatch.transition_task`, or `dispatch.note_task` without `to_status` |
| `position_fix` | c | `dispatch.report_position` |
| `check_submission` | c | `checks.submit` |

Everything else a device may not write: tasks move only through `task_step` (their fields are
dispatch's), a hazard's `status` and `timeline` only through `hazard_step`, steps and
submissions are final, reference data is read-only (the entity specs say so).

How the two worlds meet: the engine and its storage run synchronously inside
`AsyncSession.run_sync` (one storage implementation serves pushes, pulls, the change log's
commit hook, the CLI and the benchmarks), while the domain actions are `async` functions on the
request's `AsyncSession`. The policy awaits an action through SQLAlchemy's greenlet bridge
(`sqlalchemy.util.await_only`, the mechanism every `AsyncSession` statement already uses): the
action runs on the same connection and transaction, inside a SAVEPOINT, so a refused action
leaves nothing behind and the batch goes on. A `DomainError` becomes a `Refusal` whose `rule`
is the REST problem's code (`type` .../problems/<rule>), so both doors name the same rule.

A hazard or self-check the action wrote is stored by the engine in the same write as the
device's values (`server_fields`), so a device's edit costs one version, not two; its row and
timeline rows are then skipped by the commit hook (`storage.mark_skip`). A step's effect (the
task's or hazard's new status and timeline) is recorded by the action and written by the
commit hook like any REST write.

Scope keys: `ref` (check templates: everyone; alerts go by area, `reference_scopes.py`);
`unit:U`, `user:U` (tasks by assignee);
`area:A` (tasks and incidents of area A: dispatch); `incident:I` (an incident, read by the
holders of its tasks); `grid:G`, `enterprise:E`, `reporter:U`, `harea:A` (hazards by grid,
enterprise, reporter, area); `gridref:G` (the grid record itself). Steps are in no scope.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import msgspec
from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    String,
    Uuid,
    false,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy import (
    cast as cast_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from i18n import N_
from schemas.checks import CheckSubmissionCreate
from schemas.common import Role
from schemas.dispatch import PositionReport, TaskNote, TaskTransition
from schemas.hazards import HazardCreate, HazardPatch, HazardTransition
from schemas.merge import STEP_ENTITIES
from schemas.sync import Op, Reason, Refusal
from server import changes
from server.auth.principal import Principal
from server.config import Settings
from server.crud import note_absent
from server.db import dialect_of
from server.domain.checks import services as checks
from server.domain.checks.schedule import CheckPolicy
from server.domain.dispatch import services as dispatch
from server.domain.dispatch.assign import DispatchPolicy
from server.domain.hazards import services as hazards
from server.domain.reference.reach import (
    facts_and_version_stmt,
    my_tasks,
    noted_facts,
    task_area_ids,
)
from server.domain.sync.mapping import BY_ENTITY, fields_of, hazard_event_item, hazard_scopes
from server.domain.sync.reference_scopes import reference_reads, reference_record_scopes
from server.domain.sync.storage import SKIP, mark_skip
from server.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from server.models import (
    AdminArea,
    CheckSubmission,
    Enterprise,
    Grid,
    Hazard,
    HazardEvent,
    HazardMedia,
    MediaObject,
    Task,
)
from server.scope import for_principal, home_area_subtree, principal_params, visible
from sync.merge import RecordState
from sync.server import WriteContext
from sync.storage import SyncTx

APPLY_DOMAIN = "sync_apply_domain"
"""`session.info` flag: server writes (conflict resolutions) also update the domain row."""

_DISPATCH = (Role.ADMIN, Role.DISPATCHER)
# Hazard fields a correction may change after the report (REST's `HazardPatch`).
_HAZARD_EDITABLE = ("category", "severity", "description", "location", "accuracy_m")
_HAZARD_CREATE = (
    "category",
    "severity",
    "description",
    "location",
    "accuracy_m",
    "enterprise_id",
    "photo_ids",
    "photo_sha256",
    "reported_at",
)


@dataclass(frozen=True, slots=True)
class Actions:
    """What a device write needs to run the domain actions: the request's `AsyncSession`
    (the same transaction the engine's sync `Session` is in) and the settings."""

    db: AsyncSession
    settings: Settings


def _refuse(code: Reason, message: str, field: str = "", rule: str = "") -> Refusal:
    return Refusal(code=code, message=message, field=field, rule=rule or str(code))


def refusal_of(exc: DomainError) -> Refusal:
    """A domain refusal as a sync refusal: `code` from the old closed set (old phones decode
    it), `rule` the REST problem's code."""
    if isinstance(exc, Forbidden):
        code = Reason.FORBIDDEN
    elif isinstance(exc, NotFound):
        code = Reason.NOT_FOUND
    elif isinstance(exc, InvalidInput):
        code = Reason.INVALID_VALUE
    elif isinstance(exc, Conflict) and exc.code == "illegal_transition":
        code = Reason.ILLEGAL_TRANSITION
    else:
        code = Reason.RULE
    return Refusal(code=code, message=exc.detail, field=exc.field or "", rule=exc.code)


def _field_of(exc: msgspec.ValidationError) -> str:
    """The top-level field a msgspec error names (`... - at `$.results[0].result``)."""
    found = re.search(r"\$\.(\w+)", str(exc))
    return found.group(1) if found else ""


T = TypeVar("T")


def _convert(values: dict[str, Any], names: Any, kind: type[T], **extra: Any) -> T:
    """The device's values as the REST request type (the same validation as REST's decode)."""
    raw = {k: values[k] for k in names if values.get(k) is not None}
    raw.update(extra)
    return msgspec.convert(raw, kind, strict=False)


class ServerPolicy:
    """`sync.server.SyncPolicy` over one (synchronous) session; build one per transaction.
    Without `actions` (pulls, the commit hook) every device write is refused."""

    def __init__(self, session: Session, actions: Actions | None = None) -> None:
        self.s = session
        self.actions = actions
        self.dialect = dialect_of(session)
        # Server values of rows an action wrote for a device write, by record key: the engine
        # stores them with the device's values (one version).
        self._stash: dict[tuple[str, uuid.UUID], dict[str, Any]] = {}

    # -- scopes -------------------------------------------------------------------------
    def record_scopes(self, record: RecordState) -> frozenset[str]:
        """Scopes from the record's own values."""
        v = record.values()
        scoped = reference_record_scopes(record.entity, v)
        if scoped is not None:
            return frozenset(scoped)  # resources, contacts, plans: by area and unit kind
        keys: list[str | None]
        match record.entity:
            case "task":
                keys = [
                    f"unit:{v['assignee_unit_id']}" if v.get("assignee_unit_id") else None,
                    f"user:{v['assignee_user_id']}" if v.get("assignee_user_id") else None,
                    f"area:{v['area_id']}" if v.get("area_id") else None,
                ]
            case "incident":
                keys = [
                    f"incident:{record.id}",
                    f"area:{v['area_id']}" if v.get("area_id") else None,
                ]
            case "hazard":
                keys = list(hazard_scopes(v))
            case "media":
                keys = [
                    f"reporter:{v['uploaded_by']}" if v.get("uploaded_by") else None,
                    *(str(k) for k in v.get("shared_with") or []),
                ]
            case "grid":
                keys = [f"gridref:{record.id}"]
            case "check_template":
                keys = ["ref"]
            case "check_submission" | "check_due":
                keys = [
                    f"enterprise:{v['enterprise_id']}" if v.get("enterprise_id") else None,
                    f"grid:{v['grid_id']}" if v.get("grid_id") else None,
                    f"area:{v['area_id']}" if v.get("area_id") else None,
                ]
            case _:
                keys = []  # steps: commands, never pulled
        return frozenset(k for k in keys if k)

    async def user_scopes(self, tx: SyncTx, user: object) -> frozenset[str]:
        """What `user` reads now (re-computed on every pull, so a change evicts at once), in
        one statement (`_scope_inputs_stmt`): their tasks (their incidents and, for reference
        data, their current areas), the organisation with the areas' version
        (`reference_scopes`), and by role the areas of their work with the grids in them, an
        inspector's grids or an enterprise's entries."""
        p = cast(Principal, user)
        out = {"ref", f"reporter:{p.user_id}"}
        s = self.s
        got = _scope_inputs(s, p)
        if p.role in _DISPATCH:
            out |= reference_reads(s, p, version=got.version)
            ids = {a for a, _ in got.homes}
            out |= {f"area:{a}" for a in ids} | {f"harea:{a}" for a in ids}
            out |= {f"gridref:{g}" for _, g in got.homes if g is not None}
            return frozenset(out)
        task_areas = task_area_ids((a, st) for a, st, _, m, _ in got.tasks if m)
        out |= reference_reads(s, p, task_areas, got.version)
        if p.role is not Role.ENTERPRISE_STAFF:  # enterprise staff have no tasks: no incidents
            out |= {f"incident:{i}" for _, _, i, _, v in got.tasks if v and i is not None}
            out.add(f"user:{p.user_id}")
        if p.role in (Role.RESPONDER, Role.ENTERPRISE_STAFF) and p.org_id is not None:
            out.add(f"org:{p.org_id}")  # hazards their organisation must rectify
        if p.role is Role.RESPONDER:
            if p.org_id is not None:
                out.add(f"unit:{p.org_id}")
            out |= {f"harea:{a}" for a, _ in got.homes}
            out |= {f"gridref:{g}" for _, g in got.homes if g is not None}
        elif p.role is Role.INSPECTOR:
            for g in got.grids:
                out |= {f"grid:{g}", f"gridref:{g}"}
        elif p.role is Role.ENTERPRISE_STAFF and p.org_id is not None:
            for ent, grid in got.enterprises:
                out.add(f"enterprise:{ent}")
                if grid is not None:
                    out.add(f"gridref:{grid}")
        return frozenset(out)

    # -- writes -------------------------------------------------------------------------
    async def authorize(self, tx: SyncTx, ctx: WriteContext) -> Refusal | None:
        """Apply a device write through its domain action; None when it was applied, else the
        action's refusal (nothing of it stays)."""
        name = ctx.spec.name
        if name in STEP_ENTITIES:
            if ctx.op is not Op.CREATE or (ctx.current is not None and ctx.changed):
                return _refuse(Reason.RULE, "a step is final: send a new one", rule="step_final")
            return self._run(ctx, self._step)
        if name == "hazard":
            return self._run(ctx, self._hazard)
        if name == "check_submission":
            if ctx.current is not None or ctx.op is not Op.CREATE:
                return _refuse(
                    Reason.RULE, "a submitted self-check is final", rule="submission_final"
                )
            return self._run(ctx, self._submission)
        if name == "task":
            return _refuse(
                Reason.RULE,
                "a task moves through task_step (dispatch edits tasks through the API)",
                rule="use_task_step",
            )
        return _refuse(Reason.READ_ONLY, f"{name} is not written by devices")

    def _run(self, ctx: WriteContext, action: Any) -> Refusal | None:
        """Run `action(ctx, actions)` in a SAVEPOINT; a refusal rolls it back (and forgets what
        it recorded), so a refused mutation changes nothing."""
        if self.actions is None:
            return _refuse(Reason.RULE, "device writes are applied by a push only")
        info = self.s.info
        recorded = dict(info.get(changes.PENDING, {}))
        flushed = set(info.get(changes.FLUSHED, set()))
        skip = set(info.get(SKIP, set()))
        savepoint = self.s.begin_nested()
        try:
            kept = await_only(action(ctx, self.actions))
            if kept is not None:
                self._keep(ctx, *kept)  # here, in the engine's greenlet: it reads rows
        except DomainError as exc:
            savepoint.rollback()
            refusal = refusal_of(exc)
        except msgspec.ValidationError as exc:
            savepoint.rollback()
            refusal = _refuse(Reason.INVALID_VALUE, str(exc), _field_of(exc))
        else:
            savepoint.commit()
            return None
        info[changes.PENDING] = recorded
        info[changes.FLUSHED] = flushed
        info[SKIP] = skip
        return refusal

    async def _step(self, ctx: WriteContext, a: Actions) -> None:
        """A step: its effect is recorded by the action and written by the commit hook."""
        p = cast(Principal, ctx.user)
        v = ctx.proposed.values()
        match ctx.spec.name:
            case "task_step":
                task_id = msgspec.convert(v.get("task_id"), uuid.UUID, strict=False)
                names = [n for n in ctx.spec.fields if n != "task_id"]
                if v.get("to_status") in (None, ""):
                    names.remove("to_status")
                    note = _convert(v, names, TaskNote, id=ctx.record_id)
                    await dispatch.note_task(a.db, p, task_id, note)
                else:
                    step = _convert(v, names, TaskTransition, id=ctx.record_id)
                    policy = DispatchPolicy.from_settings(a.settings)
                    await dispatch.transition_task(a.db, p, task_id, step, policy)
            case "hazard_step":
                hazard_id = msgspec.convert(v.get("hazard_id"), uuid.UUID, strict=False)
                hnames = [n for n in ctx.spec.fields if n != "hazard_id"]
                hstep = _convert(v, hnames, HazardTransition, id=ctx.record_id)
                zone = a.settings.local_tz
                await hazards.transition_hazard(a.db, p, hazard_id, hstep, zone=zone)
            case "position_fix":
                fix = _convert(v, list(ctx.spec.fields), PositionReport)
                await dispatch.report_position(a.db, p, fix)

    async def _hazard(
        self, ctx: WriteContext, a: Actions
    ) -> tuple[Hazard, list[HazardEvent]] | None:
        """Report, correct or withdraw; returns the row to store with the device's write."""
        p = cast(Principal, ctx.user)
        v = ctx.proposed.values()
        if ctx.op is Op.DELETE:
            await hazards.delete_hazard(a.db, p, ctx.record_id)
            gone = await a.db.get(Hazard, ctx.record_id)
            mark_skip(self.s, gone)  # the engine writes the tombstone
            return None
        if "timeline" in ctx.fields or (
            "status" in ctx.fields
            and (ctx.current is not None or ctx.fields["status"] != "reported")
        ):
            raise Conflict(
                N_("hazard steps go through hazard_step"),
                field="status" if "status" in ctx.fields else "timeline",
                code="use_hazard_step",
            )
        if ctx.current is None or ctx.current.deleted:
            data = _convert(v, _HAZARD_CREATE, HazardCreate, id=ctx.record_id)
            row, _ = await hazards.create_hazard(a.db, p, data, zone=a.settings.local_tz)
        else:
            fixed = sorted(ctx.changed - {*_HAZARD_EDITABLE, "photo_ids"})
            if fixed:
                raise Forbidden(
                    N_("{name} cannot change after the report"),
                    name=fixed[0],
                    field=fixed[0],
                    code="not_editable",
                )
            names = [n for n in _HAZARD_EDITABLE if n in ctx.changed]
            patch = _convert(v, names, HazardPatch)
            if "photo_ids" in ctx.changed:
                patch = msgspec.structs.replace(
                    patch,
                    photo_ids=msgspec.convert(ctx.fields.get("photo_ids") or [], list[uuid.UUID]),
                )
            row = await hazards.patch_hazard(a.db, p, ctx.record_id, patch)
        await a.db.flush()
        events = [
            e.row
            for e in changes.recorded(a.db).values()
            if isinstance(e.row, HazardEvent) and e.row.hazard_id == row.id
        ]
        return row, events

    async def _submission(
        self, ctx: WriteContext, a: Actions
    ) -> tuple[CheckSubmission, list[HazardEvent]]:
        p = cast(Principal, ctx.user)
        names = ("template_id", "week", "results", "enterprise_id")
        data = _convert(ctx.proposed.values(), names, CheckSubmissionCreate, id=ctx.record_id)
        row, _ = await checks.submit(a.db, p, data, policy=CheckPolicy.from_settings(a.settings))
        await a.db.flush()
        return row, []

    def _keep(
        self, ctx: WriteContext, row: Hazard | CheckSubmission, events: list[HazardEvent]
    ) -> None:
        """The engine stores `row`'s values (and its new timeline items) with the device's
        write; the commit hook skips the row and those timeline rows."""
        values = fields_of(row)
        if events:
            values["timeline"] = [hazard_event_item(e) for e in events]
        self._stash[(ctx.spec.name, ctx.record_id)] = values
        mark_skip(self.s, row)
        if isinstance(row, Hazard) and ctx.current is not None:
            if set(hazard_scopes(values)) != set(hazard_scopes(ctx.current.values())):
                # Moved: its photos follow it to its new scopes (re-written at commit).
                stmt = select(HazardMedia.media_id).where(HazardMedia.hazard_id == row.id)
                for media_id in self.s.execute(stmt).scalars():
                    changes.record_ref(self.s, MediaObject, media_id)
        for e in events:
            mark_skip(self.s, e)

    async def server_fields(self, tx: SyncTx, ctx: WriteContext) -> dict[str, Any]:
        """The values the domain action wrote for this device write (stored with it)."""
        if ctx.server:
            return {}
        return self._stash.pop((ctx.spec.name, ctx.record_id), {})

    async def on_applied(
        self, tx: SyncTx, ctx: WriteContext, record: RecordState, changed: set[str]
    ) -> None:
        """A conflict resolution that restores a value: the dispatcher's correction of the
        hazard, through the same action as a REST correction."""
        if not (ctx.server and self.s.info.get(APPLY_DOMAIN)) or self.actions is None:
            return
        if record.entity != "hazard" or record.deleted:
            return
        names = [n for n in _HAZARD_EDITABLE if n in changed]
        if not names:
            return
        patch = _convert(record.values(), names, HazardPatch)
        p = cast(Principal, ctx.user)
        await_only(hazards.patch_hazard(self.actions.db, p, record.id, patch))
        row = await_only(self.actions.db.get(Hazard, record.id))
        mark_skip(self.s, row)  # the resolution already wrote the record


def _task_facts_stmt(p: Principal) -> Any:
    mine = my_tasks(p)
    try:
        seen = visible(p, Task)
    except Forbidden:
        seen = false()
    if seen is None:
        seen = true()
    return select(
        Task.area_id,
        Task.status,
        Task.incident_id,
        mine.self_group().label("mine"),
        seen.self_group().label("seen"),
    ).where(or_(mine, seen), Task.deleted_at.is_(None))


def _home_areas_stmt(p: Principal) -> Any:
    """Ids of `p`'s home areas and of the grids in them, in one statement."""
    sub = (select(AdminArea.id) if p.role is Role.ADMIN else home_area_subtree(p)).subquery()
    (area_id,) = sub.c
    return select(area_id, Grid.id).select_from(sub).outerjoin(Grid, Grid.area_id == area_id)


@dataclass
class _ScopeInputs:
    """What `user_scopes` reads, by kind (`_scope_inputs_stmt`)."""

    version: tuple[object, ...] | None = None
    tasks: list[tuple[Any, ...]] = field(default_factory=list)  # area, status, incident, mine, seen
    homes: list[tuple[Any, Any]] = field(default_factory=list)  # area, grid in it (or None)
    grids: list[Any] = field(default_factory=list)  # an inspector's grids
    enterprises: list[tuple[Any, Any]] = field(default_factory=list)  # enterprise, its grid


def _typed_null(type_: Any) -> Any:
    return cast_(null(), type_)  # a bare NULL in a subquery is text to PostgreSQL


def _kind(kind: str, *columns: Any, text: Any = None, flags: tuple[Any, Any] = (None, None)) -> Any:
    """One branch of `_scope_inputs_stmt`: (kind, two ids, a text, two flags, a count, a time)
    with NULL where the branch has nothing."""
    ids = [*columns, *[_typed_null(Uuid)] * (2 - len(columns))]
    return [
        literal_column(f"'{kind}'").label("kind"),
        *ids,
        text if text is not None else _typed_null(String),
        *[f if f is not None else _typed_null(Boolean) for f in flags],
    ]


def _scope_inputs_stmt(p: Principal) -> Any:
    """Every read of `user_scopes` for `p`, in one statement (each a round trip and a
    statement's Python before): rows led by their kind, `v` (the areas' version with the
    organisation's facts), `t` (`_task_facts_stmt`), `h` (`_home_areas_stmt`), `g`
    (`_inspector_grids_stmt`), `e` (`_enterprises_stmt`), each rule written once above."""
    facts = facts_and_version_stmt(p.org_id).subquery("v")
    none = _typed_null(Integer), _typed_null(DateTime(timezone=True))
    count, changed, org_area, unit_kind = facts.c
    parts = [select(*_kind("v", org_area, text=unit_kind), count, changed)]
    if p.role not in _DISPATCH:
        t = _task_facts_stmt(p).subquery("t")
        parts.append(
            select(
                *_kind(
                    "t", t.c.area_id, t.c.incident_id, text=t.c.status, flags=(t.c.mine, t.c.seen)
                ),
                *none,
            )
        )
    if p.role in (*_DISPATCH, Role.RESPONDER):
        area, grid = _home_areas_stmt(p).subquery("h").c
        parts.append(select(*_kind("h", area, grid), *none))
    elif p.role is Role.INSPECTOR:
        parts.append(select(*_kind("g", _inspector_grids_stmt(p).subquery("g").c[0]), *none))
    elif p.role is Role.ENTERPRISE_STAFF and p.org_id is not None:
        ent, grid = _enterprises_stmt(p).subquery("e").c
        parts.append(select(*_kind("e", ent, grid), *none))
    return union_all(*parts)


def _scope_inputs(s: Session, p: Principal) -> _ScopeInputs:
    got = _ScopeInputs()
    stmt = for_principal(p, _scope_inputs_stmt)
    for kind, a, b, text, f1, f2, count, changed in s.connection().execute(
        stmt, principal_params(p)
    ):
        if kind == "t":
            got.tasks.append((a, text, b, f1, f2))
        elif kind == "h":
            got.homes.append((a, b))
        elif kind == "g":
            got.grids.append(a)
        elif kind == "e":
            got.enterprises.append((a, b))
        else:
            got.version = noted_facts(s, p.org_id, count, changed, a, text)
    return got


def _inspector_grids_stmt(p: Principal) -> Any:
    return select(Grid.id).where(Grid.inspector_id == p.user_id, Grid.deleted_at.is_(None))


def _enterprises_stmt(p: Principal) -> Any:
    return select(Enterprise.id, Enterprise.grid_id).where(Enterprise.org_id == p.org_id)


def lock_domain_rows(session: Session, entity: str, ids: Any) -> None:
    """Lock (PostgreSQL) and load the domain rows of a push before its sync rows: the same
    order as a REST write (domain row at flush, then sync row at commit), so no deadlock."""
    mapped = BY_ENTITY.get(entity)
    if mapped is None:
        return
    wanted = set(ids)
    stmt = select(mapped.model).where(mapped.model.id.in_(list(wanted)))
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update()
    found = {row.id for row in session.execute(stmt).scalars()}
    note_absent(session, mapped.model, wanted - found)  # a create need not look again


__all__ = ["APPLY_DOMAIN", "Actions", "ServerPolicy", "lock_domain_rows", "refusal_of"]
