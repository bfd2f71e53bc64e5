"""The server's `SyncPolicy`: the same roles, scopes and state machines as the REST API.

- `authorize` refuses what REST would refuse: a row the user cannot see (`server.scope.visible`),
  a field their role may not change, a status step that is not theirs (only dispatch cancels or
  re-assigns a task, only its assignee moves it along), a value REST would not accept (enum
  members, coordinates: `_FIELD_TYPES`), an incomplete new hazard, and any hazard status step:
  those need evidence that only `POST /api/v1/hazards/{id}/transitions` checks. Illegal jumps
  and stale statuses are the merge's job (`schemas.states` machines).
- `server_fields` stamps what the server owns: reporter, grid and area (from the location),
  creation time.
- `record_scopes` puts a record in scopes from its own values (see `SCOPES` below);
  `user_scopes` lists what a user reads, from role and area like `server.scope`.
- `on_applied` writes the merged values into the domain row, with timeline rows and an audit
  entry, in the same transaction; the bridge is told to skip those rows.

Scope keys: `ref` (resources, alerts: everyone); `unit:U`, `user:U` (tasks by assignee);
`area:A` (tasks and incidents of area A: dispatch); `incident:I` (an incident, read by the
holders of its tasks); `grid:G`, `enterprise:E`, `reporter:U`, `harea:A` (hazards by grid,
enterprise, reporter, area); `gridref:G` (the grid record itself).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

import msgspec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schemas.checks import CheckSubmissionCreate
from schemas.common import AccuracyM, Name, Point, Priority, Role, Text
from schemas.hazards import HazardCategory, Severity
from schemas.ids import uuid7
from schemas.states import TaskStatus
from schemas.sync import Op, Reason, Refusal
from server import audit, geo
from server.auth.principal import Principal
from server.crud import uid_or_none
from server.db import dialect_of
from server.domain.checks.services import ANSWER_EVERY_ITEM, answers_every_item, stored_results
from server.domain.sync.bridge import follow_photos
from server.domain.sync.mapping import (
    BY_ENTITY,
    apply_fields,
    hazard_scopes,
    iso,
    parse_time,
    point_db,
)
from server.domain.sync.storage import mark_skip
from server.errors import Forbidden
from server.models import (
    AdminArea,
    CheckItem,
    CheckSubmission,
    CheckTemplate,
    Enterprise,
    Grid,
    Hazard,
    HazardEvent,
    HazardMedia,
    MediaObject,
    Task,
    TaskEvent,
    utcnow,
)
from server.scope import home_area_subtree, visible
from sync.merge import RecordState
from sync.server import WriteContext
from sync.storage import SyncTx

APPLY_DOMAIN = "sync_apply_domain"
"""`session.info` flag: server writes (conflict resolutions) also update the domain row."""

_DISPATCH = (Role.ADMIN, Role.DISPATCHER)
_TASK_DISPATCH_MOVES = {"cancelled", "assigned"}
_TASK_ASSIGNEE_FIELDS = {"status", "timeline"}
_HAZARD_REQUIRED = ("category", "severity", "location")


# The REST types of the fields a device may write into domain rows: a pushed value must be one
# REST would accept, or the row would hold what REST cannot read back.
_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "hazard": {
        "category": HazardCategory,
        "severity": Severity,
        "description": Text,
        "location": Point,
        "accuracy_m": AccuracyM | None,
        "enterprise_id": uuid.UUID | None,
    },
    "task": {"status": TaskStatus, "priority": Priority, "title": Name, "location": Point},
}


def _invalid_value(ctx: WriteContext) -> Refusal | None:
    types = _FIELD_TYPES.get(ctx.spec.name, {})
    values = ctx.proposed.values()
    for name in ctx.fields:
        if name in types:
            try:
                msgspec.convert(values.get(name), types[name], strict=False)
            except msgspec.ValidationError as exc:
                return _refuse(Reason.INVALID_VALUE, str(exc), name)
    return None


def _refuse(code: Reason, message: str, field: str = "") -> Refusal:
    return Refusal(code=code, message=message, field=field)


def _s(value: Any) -> str | None:
    return str(value) if value else None


class ServerPolicy:
    """`sync.server.SyncPolicy` over one (synchronous) session; build one per transaction."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.dialect = dialect_of(session)
        self._created: set[tuple[str, uuid.UUID]] = set()
        # Self-checks accepted in this transaction, by record id, and their weeks: a batch
        # cannot submit one week twice (rows are inserted by on_applied, after every mutation
        # of the batch is authorized).
        self._submissions: dict[uuid.UUID, CheckSubmissionCreate] = {}
        self._weeks: set[tuple[uuid.UUID, uuid.UUID, str]] = set()

    # -- scopes -------------------------------------------------------------------------
    def record_scopes(self, record: RecordState) -> frozenset[str]:
        """Scopes from the record's own values."""
        v = record.values()
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
            case "resource" | "alert" | "check_template":
                keys = ["ref"]
            case "check_submission":
                keys = [
                    f"enterprise:{v['enterprise_id']}" if v.get("enterprise_id") else None,
                    f"grid:{v['grid_id']}" if v.get("grid_id") else None,
                    f"area:{v['area_id']}" if v.get("area_id") else None,
                ]
            case _:
                keys = []
        return frozenset(k for k in keys if k)

    async def user_scopes(self, tx: SyncTx, user: object) -> frozenset[str]:
        """What `user` reads now (re-computed on every pull, so a change evicts at once)."""
        p = cast(Principal, user)
        out = {"ref", f"reporter:{p.user_id}"}
        s = self.s
        if p.role in _DISPATCH:
            every = select(AdminArea.id)
            ids = list(s.execute(every if p.role is Role.ADMIN else home_area_subtree(p)).scalars())
            out |= {f"area:{a}" for a in ids} | {f"harea:{a}" for a in ids}
            out |= {
                f"gridref:{g}"
                for g in s.execute(select(Grid.id).where(Grid.area_id.in_(ids))).scalars()
            }
            return frozenset(out)
        try:
            mine_tasks = visible(p, Task)
        except Forbidden:
            pass  # enterprise staff have no tasks and so no incidents
        else:
            stmt = select(Task.incident_id).where(
                Task.deleted_at.is_(None), Task.incident_id.is_not(None)
            )
            if mine_tasks is not None:
                stmt = stmt.where(mine_tasks)
            out |= {f"incident:{i}" for i in s.execute(stmt).scalars()}
            out.add(f"user:{p.user_id}")
        if p.role is Role.RESPONDER:
            if p.org_id is not None:
                out.add(f"unit:{p.org_id}")
            areas = list(s.execute(home_area_subtree(p)).scalars())
            out |= {f"harea:{a}" for a in areas}
            near = s.execute(select(Grid.id).where(Grid.area_id.in_(areas))).scalars()
            out |= {f"gridref:{g}" for g in near}
        elif p.role is Role.INSPECTOR:
            mine = s.execute(
                select(Grid.id).where(Grid.inspector_id == p.user_id, Grid.deleted_at.is_(None))
            ).scalars()
            for g in mine:
                out |= {f"grid:{g}", f"gridref:{g}"}
        elif p.role is Role.ENTERPRISE_STAFF and p.org_id is not None:
            rows = s.execute(
                select(Enterprise.id, Enterprise.grid_id).where(Enterprise.org_id == p.org_id)
            )
            for ent, grid in rows:
                out.add(f"enterprise:{ent}")
                if grid is not None:
                    out.add(f"gridref:{grid}")
        return frozenset(out)

    # -- writes -------------------------------------------------------------------------
    def _visible_row(self, p: Principal, model: type[Any], rid: uuid.UUID) -> Any:
        try:
            cond = visible(p, model)
        except Forbidden:
            return None
        stmt = select(model).where(model.id == rid, model.deleted_at.is_(None))
        if cond is not None:
            stmt = stmt.where(cond)
        return self.s.execute(stmt).scalar_one_or_none()

    async def authorize(self, tx: SyncTx, ctx: WriteContext) -> Refusal | None:
        """REST's rules for a device write; None allows it."""
        p = cast(Principal, ctx.user)
        key = (ctx.spec.name, ctx.record_id)
        if (bad := _invalid_value(ctx)) is not None:
            return bad
        match ctx.spec.name:
            case "task":
                return self._authorize_task(p, ctx)
            case "hazard":
                return self._authorize_hazard(p, ctx, key)
            case "check_submission":
                return self._authorize_submission(p, ctx)
        return _refuse(Reason.RULE, f"{ctx.spec.name} is not written through sync yet")

    def _authorize_task(self, p: Principal, ctx: WriteContext) -> Refusal | None:
        if ctx.current is None:
            return _refuse(Reason.RULE, "tasks are dispatched through the API")
        row = self._visible_row(p, Task, ctx.record_id)
        if row is None:
            return _refuse(Reason.FORBIDDEN, "task not in your scope")
        dispatch = p.has(*_DISPATCH)
        if ctx.op is Op.DELETE:
            return None if dispatch else _refuse(Reason.FORBIDDEN, "only dispatch deletes tasks")
        if not dispatch:
            for name in ctx.fields:
                if name not in _TASK_ASSIGNEE_FIELDS:
                    return _refuse(Reason.FORBIDDEN, "dispatch owns this field", name)
        if "status" in ctx.changed:
            new = ctx.proposed.fields["status"].value
            if new in _TASK_DISPATCH_MOVES:
                if not dispatch:
                    return _refuse(
                        Reason.FORBIDDEN, "only dispatch cancels or re-assigns", "status"
                    )
            elif not (
                row.assignee_user_id == p.user_id
                or (p.org_id is not None and row.assignee_unit_id == p.org_id)
            ):
                return _refuse(Reason.FORBIDDEN, "only the assignee moves a task along", "status")
        return None

    def _authorize_hazard(
        self, p: Principal, ctx: WriteContext, key: tuple[str, uuid.UUID]
    ) -> Refusal | None:
        if ctx.current is None:
            values = ctx.proposed.values()
            for name in _HAZARD_REQUIRED:
                if values.get(name) in (None, ""):
                    return _refuse(Reason.INVALID_VALUE, "required for a new hazard", name)
            if not (values.get("description") or values.get("title")):
                return _refuse(Reason.INVALID_VALUE, "a description or title", "description")
            if values.get("status", "reported") != "reported":
                return _refuse(Reason.ILLEGAL_TRANSITION, "a hazard starts reported", "status")
            self._created.add(key)
            return None
        if key not in self._created:
            row = self._visible_row(p, Hazard, ctx.record_id)
            if row is None:
                return _refuse(Reason.FORBIDDEN, "hazard not in your scope")
            if ctx.op is Op.DELETE and not (p.has(*_DISPATCH) or row.reporter_id == p.user_id):
                return _refuse(Reason.FORBIDDEN, "only the reporter or dispatch deletes")
        if "status" in ctx.changed:
            # Each step needs its role and evidence (after-photos, an assignee and deadline, a
            # reason): only POST /api/v1/hazards/{id}/transitions checks them all, and it is
            # idempotent by step id with the phone's time, so a phone queues steps there.
            return _refuse(
                Reason.RULE,
                "hazard steps go through POST /api/v1/hazards/{id}/transitions",
                "status",
            )
        return None

    def _my_enterprise(self, p: Principal) -> uuid.UUID | None:
        if p.org_id is None:
            return None
        stmt = select(Enterprise.id).where(
            Enterprise.org_id == p.org_id, Enterprise.deleted_at.is_(None)
        )
        return self.s.execute(stmt.limit(1)).scalar_one_or_none()

    def _authorize_submission(self, p: Principal, ctx: WriteContext) -> Refusal | None:
        """REST's `checks.services.submit` rules: enterprise staff submit once per week for
        their own enterprise, every item of an active template answered exactly once."""
        if ctx.current is not None or ctx.op is Op.DELETE:
            return _refuse(Reason.RULE, "a submitted self-check is final")
        values = ctx.proposed.values()
        raw = {k: values.get(k) for k in ("template_id", "week", "results", "enterprise_id")}
        try:
            data = msgspec.convert(
                {k: v for k, v in raw.items() if v is not None}, CheckSubmissionCreate, strict=False
            )
        except msgspec.ValidationError as exc:
            return _refuse(Reason.INVALID_VALUE, str(exc), _field_of(exc))
        if p.role is Role.ENTERPRISE_STAFF:
            mine = self._my_enterprise(p)
            if mine is None:
                return _refuse(Reason.FORBIDDEN, "your account is not linked to an enterprise")
            if data.enterprise_id not in (None, mine):
                return _refuse(
                    Reason.FORBIDDEN, "enterprise staff submit for their own enterprise only"
                )
            enterprise = mine
        elif p.role is Role.ADMIN and data.enterprise_id is not None:
            enterprise = data.enterprise_id
        else:
            return _refuse(Reason.FORBIDDEN, "self-checks are submitted by enterprise staff")
        template = self.s.get(CheckTemplate, data.template_id)
        if template is None or not template.active or template.deleted_at is not None:
            return _refuse(Reason.INVALID_VALUE, "no such active template", "template_id")
        items = set(
            self.s.execute(select(CheckItem.id).where(CheckItem.template_id == template.id))
            .scalars()
            .all()
        )
        if not answers_every_item(items, [r.item_id for r in data.results]):
            return _refuse(Reason.INVALID_VALUE, ANSWER_EVERY_ITEM, "results")
        week = (enterprise, template.id, data.week)
        taken = self.s.execute(
            select(func.count()).where(
                CheckSubmission.enterprise_id == enterprise,
                CheckSubmission.template_id == template.id,
                CheckSubmission.week == data.week,
            )
        ).scalar_one()
        if taken or week in self._weeks:
            return _refuse(Reason.RULE, f"week {data.week} is already submitted", "week")
        self._weeks.add(week)
        self._submissions[ctx.record_id] = msgspec.structs.replace(data, enterprise_id=enterprise)
        return None

    def _submission_fields(self, p: Principal, ctx: WriteContext) -> dict[str, Any]:
        data = self._submissions[ctx.record_id]
        ent = self.s.get(Enterprise, data.enterprise_id)
        return {
            "enterprise_id": str(data.enterprise_id),
            "results": stored_results(data.results),
            "submitted_by": str(p.user_id),
            "submitted_at": _iso_now(),
            "grid_id": _s(ent.grid_id) if ent is not None else None,
            "area_id": _s(ent.area_id) if ent is not None else None,
        }

    async def server_fields(self, tx: SyncTx, ctx: WriteContext) -> dict[str, Any]:
        """Reporter, grid, area and creation time of device writes."""
        if ctx.server:
            return {}
        if ctx.spec.name == "check_submission":
            return self._submission_fields(cast(Principal, ctx.user), ctx)
        if ctx.spec.name != "hazard":
            return {}
        out: dict[str, Any] = {}
        p = cast(Principal, ctx.user)
        if ctx.current is None or ctx.current.deleted:
            out["reporter_id"] = str(p.user_id)
            out["created_at"] = _iso_now()
        if "location" in ctx.changed or ctx.current is None:
            loc = ctx.proposed.values().get("location")
            if loc is not None:
                lon, lat = loc["coordinates"][:2]
                out["grid_id"] = _s(self._locate(Grid, Grid.boundary, lon, lat, Grid.code))
                out["area_id"] = _s(
                    self._locate(
                        AdminArea, AdminArea.boundary, lon, lat, func.length(AdminArea.path).desc()
                    )
                )
        return out

    def _locate(self, model: Any, column: Any, lon: float, lat: float, order: Any) -> Any:
        stmt = (
            select(model.id)
            .where(model.deleted_at.is_(None), geo.contains_point(self.dialect, column, lon, lat))
            .order_by(order)
            .limit(1)
        )
        return self.s.execute(stmt).scalar_one_or_none()

    async def on_applied(
        self, tx: SyncTx, ctx: WriteContext, record: RecordState, changed: set[str]
    ) -> None:
        """Write a device's merged values (or a conflict resolution) into the domain row."""
        if ctx.server and not self.s.info.get(APPLY_DOMAIN):
            return  # the bridge: the domain row is where the value came from
        if record.entity == "check_submission":
            self._insert_submission(ctx, record)
            return
        if record.entity == "hazard" and ctx.current is not None:
            if record.scopes != ctx.current.scopes:
                follow_photos(self.s, [record.id])  # its photos move with it
        mapped = BY_ENTITY.get(record.entity)
        if mapped is None or record.entity not in ("task", "hazard", "incident"):
            return
        model = mapped.model
        row: Any = self.s.get(model, record.id)
        values = record.values()
        user = ctx.user if isinstance(ctx.user, Principal) else None
        if row is None:
            if record.deleted or record.entity != "hazard":
                return
            row = Hazard(
                id=record.id, description=values.get("description") or values.get("title") or ""
            )
            row.created_at = parse_time(values.get("created_at")) or utcnow()
            self.s.add(row)
            names = set(values)
        else:
            names = set(changed)
        mark_skip(self.s, row)
        if record.deleted:
            if row.deleted_at is None:
                row.deleted_at = utcnow()
        else:
            row.deleted_at = None
            old_status = ctx.current.values().get("status") if ctx.current else None
            apply_fields(row, record.entity, values, names)
            if isinstance(row, Hazard) and not row.description and values.get("title"):
                row.description = values["title"]
            new_status = ctx.proposed.values().get("status")
            if "status" in ctx.changed and new_status != old_status:
                self._event(ctx, record, old_status, new_status, user)
            if isinstance(row, Hazard) and "photos" in names:
                self._link_photos(row, user)
        if user is not None:
            audit.record(
                cast(Any, self.s),
                user,
                "sync." + ("delete" if record.deleted else "write"),
                record.entity,
                record.id,
                device=ctx.device_id,
                fields=sorted(n for n in ctx.changed if not n.startswith("_")),
                version=record.version,
            )

    def _link_photos(self, row: Hazard, user: Principal | None) -> None:
        """Attach the declared photos a device listed, as REST's report does (`hazard_media`):
        the evidence checks see them and each photo's record follows the hazard's scopes."""
        wanted = {i for i in (uid_or_none(x) for x in row.photo_ids or []) if i is not None}
        if not wanted:
            return
        known = set(
            self.s.execute(
                select(MediaObject.id).where(
                    MediaObject.id.in_(wanted), MediaObject.deleted_at.is_(None)
                )
            ).scalars()
        )
        linked = set(
            self.s.execute(
                select(HazardMedia.media_id).where(HazardMedia.hazard_id == row.id)
            ).scalars()
        )
        new = sorted(known - linked)
        if not new:
            return
        self.s.flush()  # the hazard row first: the links refer to it
        for media_id in new:
            self.s.add(
                HazardMedia(
                    hazard_id=row.id,
                    media_id=media_id,
                    kind="report",
                    expected_at=row.reported_at or row.created_at or utcnow(),
                    added_by=user.user_id if user else None,
                )
            )

    def _insert_submission(self, ctx: WriteContext, record: RecordState) -> None:
        """A device's self-check becomes the row REST would have written (authorized above)."""
        data = self._submissions.get(record.id)
        if data is None or ctx.server or not isinstance(ctx.user, Principal):
            return
        values = record.values()
        row = CheckSubmission(
            template_id=data.template_id,
            enterprise_id=data.enterprise_id,
            week=data.week,
            submitted_by=ctx.user.user_id,
            submitted_at=parse_time(values.get("submitted_at")) or utcnow(),
            results=values.get("results") or stored_results(data.results),
        )
        row.id = record.id
        mark_skip(self.s, row)
        self.s.add(row)
        failed = sum(1 for r in data.results if r.result == "fail")
        audit.record(
            cast(Any, self.s),
            ctx.user,
            "submit",
            "check_submission",
            record.id,
            week=data.week,
            failed=failed,
            device=ctx.device_id,
            via="sync",
        )

    def _event(
        self,
        ctx: WriteContext,
        record: RecordState,
        old: Any,
        new: Any,
        user: Principal | None,
    ) -> None:
        """A timeline row for a status step; its id is the device's timeline item, if any."""
        item = next(
            (
                i
                for i in ctx.fields.get("timeline", []) or []
                if isinstance(i, dict) and i.get("to") == new and uid_or_none(i.get("id"))
            ),
            None,
        )
        at = parse_time(item.get("at")) if item and item.get("at") else utcnow()
        actor = user.user_id if user else None
        ev: TaskEvent | HazardEvent
        if record.entity == "task":
            loc = item.get("location") if item else None
            ev = TaskEvent(
                task_id=record.id,
                from_status=old,
                to_status=new,
                at=at,
                actor_id=actor,
                device_id=ctx.device_id,
                location=_point_db(loc),
                accuracy_m=item.get("accuracy_m") if item else None,
                note=item.get("note") if item else None,
            )
        else:
            ev = HazardEvent(
                hazard_id=record.id,
                from_status=old,
                to_status=new,
                at=at,
                actor_id=actor,
                note=item.get("note") if item else None,
                detail={"device": ctx.device_id, "via": "sync"},
            )
        ev.id = uuid7()
        if item is not None:
            eid = uid_or_none(item["id"])
            if eid is not None and self.s.get(type(ev), eid) is None:
                ev.id = eid
        mark_skip(self.s, ev)
        self.s.add(ev)


def _field_of(exc: msgspec.ValidationError) -> str:
    """The top-level field a msgspec error names (`... - at `$.results[0].result``)."""
    found = re.search(r"\$\.(\w+)", str(exc))
    return found.group(1) if found else ""


def _point_db(value: Any) -> Any:
    return point_db(value) if isinstance(value, dict) else None


def _iso_now() -> str:
    return iso(utcnow()) or ""


def lock_domain_rows(session: Session, entity: str, ids: Any) -> None:
    """Lock (PostgreSQL) and load the domain rows of a push before its sync rows: the same
    order as a REST write (domain row at flush, then sync row at commit), so no deadlock."""
    mapped = BY_ENTITY.get(entity)
    if mapped is None:
        return
    stmt = select(mapped.model).where(mapped.model.id.in_(list(ids)))
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update()
    session.execute(stmt).scalars().all()
