"""Public warnings: draft, approve and publish CAP 1.2 messages; chains; imports.

The life of a warning (docs/alerts.md):

- `create_draft` writes a draft message (an Alert, or an Update/Cancel of a published one) for
  an authority (an organisation with a CAP sender id, `AlertAuthority`); `patch_draft` edits it,
  `discard_draft` drops it. Drafts are not public, not synced and reach nobody.
- `publish` is the one door to the public: it checks the approval rule (orange and red, and the
  colours the authority adds, need a second person with the right to approve), stamps `sent`,
  writes the CAP document once (signed when a key is configured), supersedes the referenced
  message, moves the chain (phones: an Update replaces, a Cancel removes), records the audit
  entry and calls `on_published` in the same transaction.
- `import_document` takes another authority's published message as it is (its sender and
  identifier kept, its document served verbatim) and joins it to its chain by references.

**The delivery seam.** `on_published(session, alert)` runs inside the publishing (or importing)
transaction for every message that became public, after its chain moved and before commit.
Delivery to residents and staff (issue 15) attaches there: append a function to
`PUBLISHED_HOOKS` that writes its outbox jobs with `session`; they commit with the message or
not at all. Only `status == "Actual"` messages are for the public; Exercise/Test are staff-only.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import msgspec
from geoalchemy2.shape import from_shape, to_shape
from shapely import MultiPolygon as ShMultiPolygon
from shapely import Polygon as ShPolygon
from shapely.geometry import mapping
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import i18n
from i18n import N_
from push import cap
from push.endpoints import EndpointRefused, check_url
from schemas import alerts as s
from schemas.common import MultiPolygon, Polygon, Role
from schemas.ids import uuid7
from server import audit, changes, crud, geo
from server.auth.principal import Principal
from server.config import Settings
from server.db import dialect_of
from server.domain.alerts import capdoc
from server.domain.reference.services import ensure_in_my_area, locate_area
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.models import (
    AdminArea,
    Alert,
    AlertAuthority,
    AlertChain,
    AlertFeed,
    User,
    utcnow,
)

APPROVAL_ALWAYS = frozenset({"orange", "red"})
"""Colours that always need a second person's approval (an authority may add others)."""
PUBLIC_PREFIX = "/api/v1/public"
DEFAULT_TZ = "Asia/Shanghai"

PublishedHook = Callable[[AsyncSession, Alert], Awaitable[None]]
PUBLISHED_HOOKS: list[PublishedHook] = []
"""Called by `on_published`, in order, in the publishing transaction (the delivery seam)."""


async def on_published(session: AsyncSession, row: Alert) -> None:
    """A message became public (published by us or imported): run the delivery hooks in this
    transaction. `row.status` tells who may receive it (Actual: the public; others: staff).
    A message that is already superseded when it arrives (an imported Update older than the
    chain's current message) is delivered to nobody."""
    if row.superseded_by is not None:
        return
    for hook in PUBLISHED_HOOKS:
        await hook(session, row)


def cap_path(alert_id: uuid.UUID) -> str:
    """The public URL path of a message's CAP document (stable forever)."""
    return f"{PUBLIC_PREFIX}/cap/{alert_id}"


# ---- wire forms -------------------------------------------------------------------------------


def _ref_out(ref: dict[str, Any]) -> s.AlertRef:
    return s.AlertRef(
        id=uuid.UUID(ref["id"]) if ref.get("id") else None,
        sender=ref["sender"],
        identifier=ref["identifier"],
        sent=datetime.fromisoformat(ref["sent"]),
    )


def _common(row: Alert) -> dict[str, Any]:
    return {
        "id": row.id,
        "chain_id": row.chain_id,
        "identifier": row.identifier,
        "sender": row.sender,
        "sent": row.sent,
        "status": s.AlertStatus(row.status),
        "msg_type": s.MsgType(row.msg_type),
        "scope": row.scope,
        "references": [_ref_out(r) for r in row.references or []],
        "color": s.AlertColor(row.color) if row.color else None,
        "level": capdoc.level_of(row.color),
        "category": list(row.category or []),
        "response_type": list(row.response_type or []),
        "urgency": row.urgency,
        "severity": row.severity,
        "certainty": row.certainty,
        "effective": row.effective,
        "onset": row.onset,
        "expires": row.expires,
        "web": row.web,
        "contact": row.contact,
        "infos": [msgspec.convert(t, s.InfoText) for t in row.texts or []],
        "area": geo.area_required(row.area),
        "circles": [
            s.CircleOut(center=(c["center"][0], c["center"][1]), radius_km=c["radius_km"])
            for c in row.circles or []
        ],
        "geocodes": [s.Geocode(value_name=g["value_name"], value=g["value"]) for g in row.geocodes],
        "imported": bool(row.imported),
        "cap_url": cap_path(row.id),
    }


def public_out(row: Alert) -> s.PublicAlert:
    """A published message as the public sees it."""
    return s.PublicAlert(**_common(row))


def is_current(row: Alert, now: datetime) -> bool:
    """The latest published message of its chain, not a Cancel, not expired."""
    return (
        row.state == s.AlertState.PUBLISHED
        and row.superseded_by is None
        and row.msg_type != s.MsgType.CANCEL
        and (row.expires is None or row.expires > now)
    )


def alert_out(row: Alert, authority: AlertAuthority | None = None) -> s.Alert:
    """A message as staff see it."""
    return s.Alert(
        **_common(row),
        state=s.AlertState(row.state),
        current=is_current(row, utcnow()),
        superseded_by=row.superseded_by,
        authority_id=row.authority_id,
        area_id=row.area_id,
        note=row.note,
        needs_approval=needs_approval(row.color, authority),
        drafted_by=row.drafted_by,
        approved_by=row.approved_by,
        published_by=row.published_by,
        published_at=row.published_at,
        source_url=row.source_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def authority_out(row: AlertAuthority) -> s.Authority:
    """Wire form of an authority."""
    return s.Authority(
        org_id=row.org_id,
        sender=row.sender,
        name=row.name,
        name_en=row.name_en,
        web=row.web,
        contact=row.contact,
        approval_colors=[s.AlertColor(c) for c in row.approval_colors or []],
        approver_ids=[uuid.UUID(u) for u in row.approver_ids or []],
    )


# ---- authorities and the approval rule ---------------------------------------------------------


def needs_approval(color: str | None, authority: AlertAuthority | None) -> bool:
    """Orange and red, and any colour the authority added, need a second person's approval."""
    if color is None:
        return False
    extra = set(authority.approval_colors or []) if authority is not None else set()
    return color in APPROVAL_ALWAYS or color in extra


def can_approve(p: Principal, authority: AlertAuthority) -> bool:
    """Administrators, and the dispatchers the authority lists as approvers."""
    if p.role is Role.ADMIN:
        return True
    return p.role is Role.DISPATCHER and str(p.user_id) in (authority.approver_ids or [])


async def get_authority(session: AsyncSession, org_id: uuid.UUID) -> AlertAuthority | None:
    """The authority of an organisation, if it is one."""
    stmt = select(AlertAuthority).where(
        AlertAuthority.org_id == org_id, AlertAuthority.deleted_at.is_(None)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _authority_for(
    session: AsyncSession, p: Principal, org_id: uuid.UUID | None
) -> AlertAuthority:
    org = org_id or p.org_id
    if org is None:
        raise InvalidInput(
            N_("name the authority that sends this warning (authority_id)"),
            field="authority_id",
            code="no_authority",
        )
    if p.role is not Role.ADMIN and org != p.org_id:
        raise Forbidden(N_("dispatchers send warnings only for their own organisation"))
    authority = await get_authority(session, org)
    if authority is None:
        raise InvalidInput(
            N_(
                "this organisation is not a warning authority (an administrator gives it a CAP "
                "sender id: PUT /api/v1/alerts/authorities/{org_id})"
            ),
            field="authority_id",
            code="no_authority",
        )
    return authority


async def put_authority(
    session: AsyncSession, p: Principal, org_id: uuid.UUID, data: s.AuthorityPut
) -> AlertAuthority:
    """Make an organisation a warning authority or change it (administrators)."""
    from server.models import Organisation

    if await session.get(Organisation, org_id) is None:
        raise NotFound(N_("no organisation {id}"), id=org_id)
    taken = await session.execute(
        select(AlertAuthority.org_id).where(
            AlertAuthority.sender == data.sender, AlertAuthority.org_id != org_id
        )
    )
    if taken.first() is not None:
        raise Conflict(N_("another authority uses this CAP sender id"), field="sender")
    if data.approver_ids:
        found = set(
            (
                await session.execute(
                    select(User.id).where(
                        User.id.in_(data.approver_ids),
                        User.role.in_([Role.DISPATCHER.value, Role.ADMIN.value]),
                        User.deleted_at.is_(None),
                    )
                )
            ).scalars()
        )
        missing = [str(u) for u in data.approver_ids if u not in found]
        if missing:
            raise InvalidInput(
                N_("approvers must be dispatchers or administrators: {ids}"),
                ids=", ".join(missing),
                field="approver_ids",
            )
    row = await get_authority(session, org_id)
    if row is None:
        row = AlertAuthority(org_id=org_id, sender=data.sender, name=data.name)
        session.add(row)
    row.sender = data.sender
    row.name = data.name
    row.name_en = data.name_en
    row.web = data.web
    row.contact = data.contact
    row.approval_colors = sorted({c.value for c in data.approval_colors})
    row.approver_ids = [str(u) for u in dict.fromkeys(data.approver_ids)]
    await session.flush()
    audit.record(
        session,
        p,
        "configure",
        "alert_authority",
        org_id,
        sender=row.sender,
        approval_colors=row.approval_colors,
        approver_ids=row.approver_ids,
    )
    return row


# ---- geometry ---------------------------------------------------------------------------------


class _Geometry(msgspec.Struct):
    polygons: list[list[list[float]]]
    circles: list[dict[str, Any]]
    shape: ShMultiPolygon


def _geometry(area: Polygon | MultiPolygon | None, circles: Sequence[s.Circle]) -> _Geometry:
    parts: list[ShPolygon] = []
    polygons: list[list[list[float]]] = []
    if area is not None:
        geom = to_shape(geo.multipolygon_to_db(area, "area"))  # validity, closed rings, no zero
        for poly in geom.geoms:
            if poly.interiors:
                raise InvalidInput(N_("CAP polygons have no holes"), field="area")
            ring = [[x, y] for x, y, *_ in poly.exterior.coords]
            if len(capdoc.cap_rings([ring])[0]) < 4:
                raise InvalidInput(
                    N_("polygon too small for 6-decimal CAP coordinates"), field="area"
                )
            polygons.append(ring)
            parts.append(poly)
    out_circles = []
    for circle in circles:
        lon, lat = circle.center
        parts.append(ShPolygon(capdoc.circle_ring(lon, lat, circle.radius_km)))
        out_circles.append({"center": [lon, lat], "radius_km": circle.radius_km})
    if not parts:
        raise InvalidInput(N_("a warning needs an area: a polygon or a circle"), field="area")
    shape = ShMultiPolygon(
        [g for p in parts for g in (p.geoms if isinstance(p, ShMultiPolygon) else [p])]
    )
    return _Geometry(polygons=polygons, circles=out_circles, shape=shape)


def _wire_area(shape: ShMultiPolygon) -> MultiPolygon:
    gj = mapping(shape)
    coords = gj["coordinates"] if gj["type"] == "MultiPolygon" else [gj["coordinates"]]
    return MultiPolygon(
        coordinates=[[[(x, y) for x, y, *_ in ring] for ring in poly] for poly in coords]
    )


async def _places(
    session: AsyncSession, shape: ShMultiPolygon
) -> tuple[list[str], list[dict[str, str]]]:
    """The deepest administrative areas the warning covers part of (their ids, for phones)
    and their codes (CAP geocodes `ADCODE`)."""
    dialect = dialect_of(session)
    # Touching is not covering: areas that only share a boundary are dropped below.
    candidates = (
        await session.execute(
            select(AdminArea.id, AdminArea.path, AdminArea.code, AdminArea.boundary).where(
                AdminArea.deleted_at.is_(None),
                AdminArea.boundary.is_not(None),
                geo.within_polygon(dialect, AdminArea.boundary, _wire_area(shape)),
            )
        )
    ).all()
    hit = [
        (ident, path, code)
        for ident, path, code, boundary in candidates
        if to_shape(boundary).intersection(shape).area > 0
    ]
    leaves = [
        (ident, code)
        for ident, _path, code in hit
        if not any(other != ident and ident.hex in opath for other, opath, _ in hit)
    ]
    leaves.sort(key=lambda t: t[1])
    return [str(i) for i, _ in leaves], [
        {"value_name": capdoc.ADCODE, "value": c} for _, c in leaves
    ]


# ---- drafts -----------------------------------------------------------------------------------

_TEXT_FIELDS = ("event", "headline", "description", "instruction", "area_desc")


def _given(value: Any) -> bool:
    return value is not msgspec.UNSET


def _texts_of(row: Alert | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if row is None:
        return {}, None
    zh = next((t for t in row.texts if t["language"].lower().startswith("zh")), row.texts[0])
    en = next((t for t in row.texts if t["language"].lower().startswith("en")), None)
    return dict(zh), dict(en) if en is not None else None


def _texts_from(
    row: Alert, data: s.AlertDraft | s.AlertPatch, current: Alert | None, fresh: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    zh, en = _texts_of(current)
    for name in _TEXT_FIELDS:
        value = getattr(data, name)
        if _given(value):
            zh[name] = value.strip() if isinstance(value, str) else value
    if _given(data.en):
        en = None if data.en is None else msgspec.to_builtins(data.en)
        if en is not None:
            en = {k: v.strip() if isinstance(v, str) else v for k, v in en.items()}
    if fresh and current is not None and row.msg_type == s.MsgType.CANCEL:
        if not _given(data.headline):
            zh["headline"] = _cancelled(i18n.DEFAULT_LANG, zh.get("headline") or "")
        if en is not None and not _given(data.en):
            en["headline"] = _cancelled("en", en.get("headline") or "")
    return zh, en


def _levels(row: Alert, data: s.AlertDraft | s.AlertPatch, current: Alert | None) -> None:
    """Colour, then urgency, severity and certainty: as given, else kept by an update that keeps
    the colour, else what the colour means (`COLOR_DEFAULTS`)."""
    old_color = current.color if current is not None else None
    color = data.color.value if isinstance(data.color, s.AlertColor) else old_color
    if color is None:
        raise InvalidInput(N_("a warning needs its colour level"), field="color", code="incomplete")
    row.color = color
    derived = dict(zip(("urgency", "severity", "certainty"), s.COLOR_DEFAULTS[color], strict=True))
    for name, default in derived.items():
        value = getattr(data, name)
        if _given(value):
            setattr(row, name, value.value)
        elif current is not None and color == old_color:
            setattr(row, name, getattr(current, name))
        else:
            setattr(row, name, default.value)


def _lists_and_times(
    row: Alert,
    data: s.AlertDraft | s.AlertPatch,
    current: Alert | None,
    fresh: bool,
    authority: AlertAuthority,
) -> None:
    if isinstance(data.category, list):
        row.category = [c.value for c in data.category]
    elif current is not None:
        row.category = list(current.category or [])
    if isinstance(data.response_type, list):
        row.response_type = [r.value for r in data.response_type]
    elif fresh and row.msg_type == s.MsgType.CANCEL:
        row.response_type = [s.ResponseType.ALL_CLEAR.value]
    elif current is not None:
        row.response_type = list(current.response_type or [])
    for name in ("effective", "onset", "expires", "web", "contact", "note"):
        value = getattr(data, name)
        if _given(value):
            setattr(row, name, value)
        elif current is not None and not (fresh and name == "note"):
            setattr(row, name, getattr(current, name))
    if fresh and not _given(data.web) and row.web is None:
        row.web = authority.web
    if fresh and not _given(data.contact) and row.contact is None:
        row.contact = authority.contact


def _check_complete(row: Alert, zh: dict[str, Any]) -> None:
    missing = [n for n in ("event", "headline", "description", "area_desc") if not zh.get(n)]
    missing += [n for n in ("category", "expires") if not getattr(row, n)]
    if missing:
        raise InvalidInput(
            N_("a warning needs {fields}"),
            fields=", ".join(missing),
            field=missing[0],
            code="incomplete",
        )
    expires = cast(datetime, row.expires)
    for name in ("effective", "onset"):
        stamp = getattr(row, name)
        if stamp is not None and stamp > expires:
            raise InvalidInput(N_("{name} is after expires"), name=name, field=name)
    if expires <= utcnow():
        raise InvalidInput(N_("expires is in the past"), field="expires", code="expired")


async def _apply(
    session: AsyncSession,
    p: Principal,
    row: Alert,
    data: s.AlertDraft | s.AlertPatch,
    base: Alert | None,
    authority: AlertAuthority,
) -> None:
    """Fill a draft from `data` over what it had (an edited draft) or over `base` (a new Update
    or Cancel starts from the message it supersedes), check it is a complete warning, place it.
    """
    fresh = not row.texts
    current = base if fresh else row
    zh, en = _texts_from(row, data, current, fresh)
    _levels(row, data, current)
    _lists_and_times(row, data, current, fresh, authority)
    _check_complete(row, zh)
    keys = ("language", "sender_name", *_TEXT_FIELDS)
    zh.update(language="zh-CN", sender_name=authority.name)
    texts = [{k: zh.get(k) for k in keys}]
    if en is not None:
        en.update(language="en-US", sender_name=authority.name_en or authority.name)
        en["area_desc"] = en.get("area_desc") or zh["area_desc"]
        texts.append({k: en.get(k) for k in keys})
    row.texts = texts
    await _place(session, p, row, data, current)
    _check_document(row, authority)


def _check_document(row: Alert, authority: AlertAuthority) -> None:
    """A draft that is kept can be published: its CAP document can be written (no character
    XML 1.0 cannot carry) and is valid against the CAP 1.2 schema."""
    names = capdoc.SenderNames(zh=authority.name, en=authority.name_en)
    try:
        xml = capdoc.document(capdoc.to_cap(preview(row), names, UTC), None)
    except (cap.CapError, ValueError) as exc:
        raise InvalidInput(
            N_("invalid CAP: {reason}"), reason=str(exc), code="invalid_cap"
        ) from exc
    errors = capdoc.schema_errors(xml)
    if errors:
        raise InvalidInput(
            N_("invalid CAP: {reason}"), reason="; ".join(errors[:3]), code="invalid_cap"
        )


def _cancelled(lang: str, headline: str) -> str:
    return i18n.gettext(lang, "Cancelled: {headline}").format(headline=headline)[:140]


async def _place(
    session: AsyncSession,
    p: Principal,
    row: Alert,
    data: s.AlertDraft | s.AlertPatch,
    current: Alert | None,
) -> None:
    """The draft's area: as given, else as it was (its own, or the superseded message's);
    always inside the caller's area."""
    if not (_given(data.area) or _given(data.circles)):
        if current is None:
            raise InvalidInput(N_("a warning needs an area: a polygon or a circle"), field="area")
        if current is not row:
            row.area, row.polygons, row.circles = current.area, current.polygons, current.circles
            row.area_id, row.area_ids = current.area_id, current.area_ids
            row.geocodes = current.geocodes
        await ensure_in_my_area(session, p, row.area_id, N_("warning area"))
        return
    area: Polygon | MultiPolygon | None
    if _given(data.area):
        area = cast(Polygon | MultiPolygon | None, data.area)
    elif current is not None and current.polygons:
        area = MultiPolygon(coordinates=[[[(x, y) for x, y in r]] for r in current.polygons])
    else:
        area = None
    if isinstance(data.circles, list):
        circles = list(data.circles)
    else:
        circles = [
            s.Circle(center=(c["center"][0], c["center"][1]), radius_km=c["radius_km"])
            for c in (current.circles if current is not None else None) or []
        ]
    g = _geometry(area, circles)
    row.area = from_shape(g.shape, srid=geo.SRID)
    row.polygons, row.circles = g.polygons, g.circles
    centre = g.shape.representative_point()
    row.area_id = await locate_area(session, centre.x, centre.y)
    await ensure_in_my_area(session, p, row.area_id, N_("warning area"))
    row.area_ids, row.geocodes = await _places(session, g.shape)


async def _referenced(
    session: AsyncSession,
    p: Principal,
    refs: Sequence[uuid.UUID],
    sender: str,
    status: str | None,
) -> Alert:
    """The published message an Update or Cancel supersedes: named, known, ours (same sender),
    still current. Returns it (the chain's head)."""
    if not refs:
        raise InvalidInput(
            N_("an Update or Cancel must reference the alert it supersedes"),
            field="references",
            code="references_required",
        )
    # Locked (PostgreSQL) and read afresh: two publishes superseding one head wait for each
    # other, and the second sees the first's `superseded_by` (no forked chain).
    stmt = (
        select(Alert)
        .where(
            Alert.id.in_(refs),
            Alert.state == s.AlertState.PUBLISHED.value,
            Alert.deleted_at.is_(None),
        )
        .order_by(Alert.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rows = list((await session.execute(stmt)).scalars())
    found = {r.id for r in rows}
    unknown = [str(r) for r in refs if r not in found]
    if unknown:
        raise InvalidInput(
            N_("no published alert {ids}"),
            ids=", ".join(unknown),
            field="references",
            code="unknown_reference",
        )
    for ref in rows:
        if ref.sender != sender:
            raise InvalidInput(
                N_("alert {id} was sent by {sender}; only its sender updates or cancels it"),
                id=ref.id,
                sender=ref.sender,
                field="references",
                code="foreign_sender",
            )
        if status is not None and ref.status != status:
            raise InvalidInput(
                N_("alert {id} is {status}; an update keeps the status"),
                id=ref.id,
                status=ref.status,
                field="status",
            )
    if len({r.chain_id for r in rows}) > 1:
        raise InvalidInput(
            N_("the referenced alerts belong to different warnings"), field="references"
        )
    head = [r for r in rows if r.superseded_by is None]
    if not head:
        raise Conflict(
            N_("the referenced alert was already updated or cancelled: reference the latest one"),
            field="references",
            code="superseded",
        )
    if head[0].msg_type == s.MsgType.CANCEL:
        raise Conflict(N_("this warning was cancelled"), field="references", code="superseded")
    for ref in rows:
        await ensure_in_my_area(session, p, ref.area_id, N_("warning area"))
    return head[0]


async def create_draft(
    session: AsyncSession, p: Principal, data: s.AlertDraft
) -> tuple[Alert, AlertAuthority, bool]:
    """A new draft for the caller's authority (or `authority_id`, administrators), inside the
    caller's area. An Update/Cancel starts from the message it supersedes."""
    authority = await _authority_for(session, p, data.authority_id)
    ident = data.id or uuid7()
    taken = await session.get(Alert, ident)
    if taken is not None:
        if taken.drafted_by == p.user_id and taken.state == s.AlertState.DRAFT:
            return taken, authority, False  # the caller's own retry
        await get_alert(session, p, ident)  # 404 unless the caller may read it
        raise Conflict(N_("an alert with this id already exists"), field="id")
    base: Alert | None = None
    status = data.status.value if isinstance(data.status, s.AlertStatus) else None
    if data.msg_type == s.MsgType.ALERT:
        if data.references:
            raise InvalidInput(
                N_("an Alert references nothing; an Update or Cancel does"), field="references"
            )
    else:
        base = await _referenced(session, p, data.references, authority.sender, status)
    row = Alert(
        id=ident,
        chain_id=base.chain_id if base is not None else ident,
        identifier=f"urn:liandong:alert:{ident}",
        sender=authority.sender,
        status=status or (base.status if base is not None else s.AlertStatus.ACTUAL.value),
        msg_type=data.msg_type.value,
        scope="Public",
        state=s.AlertState.DRAFT.value,
        references=_refs_of(base, data.references),
        authority_id=authority.org_id,
        drafted_by=p.user_id,
        texts=[],
        imported=False,
    )
    await _apply(session, p, row, data, base, authority)
    session.add(row)
    await session.flush()
    audit.record(
        session,
        p,
        "draft",
        "alert",
        row.id,
        msg_type=row.msg_type,
        color=row.color,
        status=row.status,
        references=[r["id"] for r in row.references],
    )
    return row, authority, True


def _refs_of(base: Alert | None, refs: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """References to the chain's head (CAP: the message(s) this one supersedes)."""
    if base is None:
        return []
    assert base.sent is not None  # published  # noqa: S101
    return [
        {
            "id": str(base.id),
            "sender": base.sender,
            "identifier": base.identifier,
            "sent": base.sent.isoformat(),
        }
    ]


async def patch_draft(
    session: AsyncSession, p: Principal, row: Alert, data: s.AlertPatch
) -> tuple[Alert, AlertAuthority]:
    """Edit a draft. The editor becomes its author (`drafted_by`): the approver must be
    someone else than whoever wrote its final text."""
    if row.state != s.AlertState.DRAFT:
        raise Conflict(N_("a published alert never changes: send an Update"), code="published")
    authority = await _authority_for(session, p, row.authority_id)
    await ensure_in_my_area(session, p, row.area_id, N_("warning area"))
    if isinstance(data.status, s.AlertStatus):
        if row.msg_type != s.MsgType.ALERT and data.status.value != row.status:
            raise InvalidInput(N_("an update keeps the status of its warning"), field="status")
        row.status = data.status.value
    base = None
    if row.references:
        base = await session.get(Alert, uuid.UUID(row.references[0]["id"]))
    await _apply(session, p, row, data, base, authority)
    row.drafted_by = p.user_id
    row.updated_at = utcnow()
    await session.flush()
    audit.record(session, p, "edit_draft", "alert", row.id, color=row.color)
    return row, authority


async def discard_draft(session: AsyncSession, p: Principal, row: Alert) -> None:
    """Drop a draft (published alerts are never deleted)."""
    if row.state != s.AlertState.DRAFT:
        raise Conflict(N_("a published alert is never deleted: send a Cancel"), code="published")
    await _authority_for(session, p, row.authority_id)
    await ensure_in_my_area(session, p, row.area_id, N_("warning area"))
    row.deleted_at = utcnow()
    audit.record(session, p, "discard_draft", "alert", row.id)


# ---- reading ----------------------------------------------------------------------------------


async def get_alert(session: AsyncSession, p: Principal, ident: uuid.UUID) -> Alert:
    """A message the caller may read (`server.scope.visible`: every published one, drafts only
    to dispatch of their area), else 404."""
    return await crud.get_visible(session, p, Alert, ident)


_CAP_COLUMNS = (
    "identifier",
    "sender",
    "status",
    "msg_type",
    "note",
    "references",
    "texts",
    "color",
    "circles",
    "geocodes",
    "polygons",
    "category",
    "response_type",
    "urgency",
    "severity",
    "certainty",
    "effective",
    "onset",
    "expires",
    "web",
    "contact",
)


def preview(row: Alert) -> SimpleNamespace:
    """A draft's columns as `capdoc.to_cap` reads them, with `sent` = now (a preview)."""
    values = {name: getattr(row, name) for name in _CAP_COLUMNS}
    return SimpleNamespace(**values, sent=utcnow().replace(microsecond=0))


async def authority_of(session: AsyncSession, row: Alert) -> AlertAuthority | None:
    """The authority that sends a message (None for imported ones)."""
    return await get_authority(session, row.authority_id) if row.authority_id else None


async def authorities_of(
    session: AsyncSession, rows: Sequence[Alert]
) -> dict[uuid.UUID, AlertAuthority]:
    """The authorities of a page of messages, by organisation id, in one query."""
    orgs = {r.authority_id for r in rows if r.authority_id is not None}
    if not orgs:
        return {}
    stmt = select(AlertAuthority).where(
        AlertAuthority.org_id.in_(orgs), AlertAuthority.deleted_at.is_(None)
    )
    return {a.org_id: a for a in (await session.execute(stmt)).scalars()}


# ---- publishing -------------------------------------------------------------------------------


@cache
def _signer(key: Path | None, cert: Path | None) -> capdoc.Signer | None:
    return capdoc.Signer.from_files(key, cert) if key and cert else None


def signer_of(settings: Settings) -> capdoc.Signer | None:
    """The CAP signer when a key and certificate are configured."""
    return _signer(settings.cap_signing_key, settings.cap_signing_cert)


async def publish(
    session: AsyncSession, p: Principal, settings: Settings | None, row: Alert
) -> tuple[Alert, AlertAuthority]:
    """Publish a draft: the only way a warning becomes public.

    Blue and yellow (unless the authority added them): the drafter or another dispatcher of the
    authority publishes. Orange and red: only a second person with the right to approve, not
    the draft's author; their publish is the approval (`approved_by`). An Update/Cancel must
    still supersede the latest message of its warning.
    """
    # The draft is locked (PostgreSQL) and read afresh: of two concurrent publishes of one
    # draft, the second waits, then finds it published.
    locked = (
        await session.execute(
            select(Alert)
            .where(Alert.id == row.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if locked.state != s.AlertState.DRAFT or locked.deleted_at is not None:
        raise Conflict(N_("already published"), code="published")
    authority = await get_authority(session, cast(uuid.UUID, row.authority_id))
    if authority is None:
        raise InvalidInput(N_("its authority is no longer configured"), code="no_authority")
    await ensure_in_my_area(session, p, row.area_id, N_("warning area"))
    approval = needs_approval(row.color, authority)
    if approval:
        if not can_approve(p, authority):
            raise Forbidden(
                N_(
                    "a {color} warning is published only by a second person with the right "
                    "to approve"
                ),
                color=row.color,
                code="approval_required",
            )
        if p.user_id == row.drafted_by:
            raise Forbidden(
                N_("the author of a warning cannot approve it: a second person must"),
                code="second_person_required",
            )
    elif (
        p.role is not Role.ADMIN and p.org_id != authority.org_id and not can_approve(p, authority)
    ):
        raise Forbidden(N_("only the authority's dispatchers publish its warnings"))
    now = utcnow().replace(microsecond=0)
    if row.expires is not None and row.expires <= now:
        raise InvalidInput(N_("expires is in the past"), field="expires", code="expired")
    head = None
    if row.msg_type != s.MsgType.ALERT:
        head = await _referenced(
            session, p, [uuid.UUID(r["id"]) for r in row.references], row.sender, row.status
        )
        row.references = _refs_of(head, [head.id])
    row.sent = now
    row.state = s.AlertState.PUBLISHED.value
    row.published_by = p.user_id
    row.published_at = now
    row.approved_by = p.user_id if approval else None
    names = capdoc.SenderNames(zh=authority.name, en=authority.name_en)
    tz = ZoneInfo(settings.local_tz if settings is not None else DEFAULT_TZ)
    signer = signer_of(settings) if settings is not None else None
    row.cap_xml = capdoc.document(capdoc.to_cap(row, names, tz), signer)
    await session.flush()
    await _advance_chain(session, row, [head] if head is not None else [])
    audit.record(
        session,
        p,
        "publish",
        "alert",
        row.id,
        msg_type=row.msg_type,
        status=row.status,
        color=row.color,
        chain_id=row.chain_id,
        drafted_by=row.drafted_by,
        approved_by=row.approved_by,
        references=[r["id"] for r in row.references],
    )
    await on_published(session, row)
    return row, authority


async def _advance_chain(session: AsyncSession, row: Alert, superseded: Sequence[Alert]) -> None:
    """Supersede the referenced messages and point the chain (what phones hold) at `row`, if it
    is the newest; a Cancel removes the chain from phones."""
    for old in superseded:
        if old.superseded_by is None:
            old.superseded_by = row.id
            old.updated_at = utcnow()
    chain = await session.get(AlertChain, row.chain_id)
    if chain is None:
        chain = AlertChain(id=row.chain_id, current_id=row.id, sender=row.sender)
        session.add(chain)
    else:
        current = await session.get(Alert, chain.current_id)
        newer = (
            current is None
            or current.sent is None
            or (row.sent is not None and row.sent >= current.sent)
        )
        if not newer:
            # An older message arriving late (imports): superseded on arrival, never current.
            row.superseded_by = chain.current_id
            row.updated_at = utcnow()
            await session.flush()
            return
        chain.current_id = row.id
    if row.msg_type == s.MsgType.CANCEL:
        chain.deleted_at = utcnow()
    chain.updated_at = utcnow()
    await session.flush()
    changes.record(session, chain)


RETIRE_AFTER = timedelta(hours=24)
"""An expired warning leaves phones this long after it expired (they hide it at `expires`)."""


async def retire_expired(session: AsyncSession, now: datetime) -> int:
    """Take warnings whose current message expired more than `RETIRE_AFTER` ago off the phones
    (their chain record is deleted; the messages and documents stay). Returns how many."""
    stmt = (
        select(AlertChain)
        .join(Alert, Alert.id == AlertChain.current_id)
        .where(AlertChain.deleted_at.is_(None), Alert.expires <= now - RETIRE_AFTER)
    )
    chains = list((await session.execute(stmt)).scalars())
    for chain in chains:
        chain.deleted_at = now
        changes.record(session, chain)
    return len(chains)


# ---- the public's view ------------------------------------------------------------------------


def current_filter(now: datetime, public: bool = True) -> list[ColumnElement[bool]]:
    """SQL for `is_current`; `public`: Actual messages only."""
    conds = [
        Alert.deleted_at.is_(None),
        Alert.state == s.AlertState.PUBLISHED.value,
        Alert.superseded_by.is_(None),
        Alert.msg_type != s.MsgType.CANCEL.value,
        or_(Alert.expires.is_(None), Alert.expires > now),
    ]
    if public:
        conds.append(Alert.status == s.AlertStatus.ACTUAL.value)
    return conds


async def public_current(
    session: AsyncSession, now: datetime, point: tuple[float, float] | None = None
) -> list[Alert]:
    """Current Actual warnings, most severe first then newest; covering `point` (lon, lat)."""
    conds = current_filter(now)
    if point is not None:
        conds.append(geo.covers_point(dialect_of(session), Alert.area, *point))
    rows = list((await session.execute(select(Alert).where(*conds))).scalars())
    rank = {"red": 0, "orange": 1, "yellow": 2, "blue": 3}
    rows.sort(key=lambda r: (rank.get(r.color or "", 4), -(r.sent or now).timestamp()))
    return rows


async def public_feed(session: AsyncSession, now: datetime, retention: timedelta) -> list[Alert]:
    """The Atom feed's entries: the latest Actual message of each warning, while it is current,
    and for `retention` after it was cancelled or expired (so aggregators see the Cancel);
    superseded messages never (Google's public-alerts rules). Newest first."""
    since = now - retention
    stmt = select(Alert).where(
        Alert.deleted_at.is_(None),
        Alert.state == s.AlertState.PUBLISHED.value,
        Alert.status == s.AlertStatus.ACTUAL.value,
        Alert.superseded_by.is_(None),
        or_(Alert.expires.is_(None), Alert.expires > since),
        or_(Alert.msg_type != s.MsgType.CANCEL.value, Alert.published_at > since),
    )
    rows = list((await session.execute(stmt)).scalars())
    rows.sort(key=lambda r: r.sent or now, reverse=True)
    return rows


async def public_document(session: AsyncSession, ident: uuid.UUID) -> Alert:
    """A published Actual message with its CAP document (forever), else 404."""
    row = (
        await session.execute(
            select(Alert).where(
                Alert.id == ident,
                Alert.state == s.AlertState.PUBLISHED.value,
                Alert.status == s.AlertStatus.ACTUAL.value,
                Alert.deleted_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if row is None or row.cap_xml is None:
        raise NotFound(N_("no public alert {id}"), id=ident)
    return row


def cap_alert(row: Alert) -> cap.Alert:
    """The stored document of a published message, parsed."""
    return cap.from_xml(cast(bytes, row.cap_xml))


# ---- imports ----------------------------------------------------------------------------------


async def import_document(
    session: AsyncSession,
    p: Principal | None,
    settings: Settings,
    data: bytes,
    source_url: str | None = None,
) -> tuple[Alert, bool]:
    """Take another authority's CAP message: checked (size, no DTD/entities/external
    references, the OASIS schema, our parser's rules), its sender and identifier kept, its
    document served as received. The same document again finds the first (created False)."""
    try:
        doc = capdoc.read_foreign(data, settings.cap_import_max_bytes)
    except cap.CapError as exc:
        raise InvalidInput(
            N_("invalid CAP: {reason}"), reason=str(exc), field="document", code="invalid_cap"
        ) from exc
    if doc.msg_type not in ("Alert", "Update", "Cancel"):
        raise InvalidInput(
            N_("msgType {type} is not a warning"), type=doc.msg_type, code="invalid_cap"
        )
    if doc.scope != "Public":
        raise InvalidInput(N_("only Public alerts are imported"), code="invalid_cap")
    if doc.status == "Draft":
        raise InvalidInput(N_("a CAP Draft is not a warning"), code="invalid_cap")
    if not doc.infos:
        raise InvalidInput(N_("the alert has no info block"), code="invalid_cap")
    info = doc.infos[0]
    for name, value, limit in (
        ("identifier", doc.identifier, 200),
        ("sender", doc.sender, 200),
        ("web", info.web, 500),
        ("contact", info.contact, 200),
    ):
        if value is not None and len(value) > limit:  # what its column holds
            raise InvalidInput(
                N_("{name} is longer than {limit} characters"),
                name=name,
                limit=limit,
                code="invalid_cap",
            )
    existing = (
        await session.execute(
            select(Alert).where(Alert.sender == doc.sender, Alert.identifier == doc.identifier)
        )
    ).scalar_one_or_none()
    if existing is not None:
        if existing.cap_xml != data and existing.imported:
            raise Conflict(
                N_(
                    "a different document with this sender and identifier was imported before "
                    "(CAP messages never change: an Update is a new message)"
                ),
                code="conflict",
            )
        if not existing.imported:
            raise InvalidInput(N_("this is one of our own alerts"), code="own_alert")
        return existing, False
    ours = await session.execute(
        select(AlertAuthority.id).where(AlertAuthority.sender == doc.sender)
    )
    if ours.first() is not None:
        raise InvalidInput(
            N_("{sender} is one of our own authorities: its alerts are published here"),
            sender=doc.sender,
            code="own_alert",
        )
    shape, polygons, circles = await _foreign_area(session, doc)
    area_ids, geocodes = await _places(session, shape)
    if not area_ids:
        raise InvalidInput(
            N_("the alert's area lies outside every area this server serves"), code="outside"
        )
    # Only the sender's own published messages are superseded (and give the chain): a
    # reference to another sender's message, ours included, stays in `references` and
    # supersedes nothing.
    own_refs = [r.identifier for r in doc.references if r.sender == doc.sender]
    known: list[Alert] = []
    if own_refs:
        stmt = (
            select(Alert)
            .where(
                Alert.sender == doc.sender,
                Alert.identifier.in_(own_refs),
                Alert.imported.is_(True),
                Alert.state == s.AlertState.PUBLISHED.value,
                Alert.deleted_at.is_(None),
            )
            .order_by(Alert.id)
            .with_for_update()
        )
        known = list((await session.execute(stmt)).scalars())
    ident = uuid7()
    centre = shape.representative_point()
    now = utcnow()
    by_key = {(k.sender, k.identifier): k for k in known}
    color = capdoc.colour_of(doc)
    row = Alert(
        id=ident,
        chain_id=known[0].chain_id if known else ident,
        identifier=doc.identifier,
        sender=doc.sender,
        sent=doc.sent.astimezone(UTC),
        status=doc.status,
        msg_type=doc.msg_type,
        scope=doc.scope,
        state=s.AlertState.PUBLISHED.value,
        references=[
            {
                "id": str(by_key[(r.sender, r.identifier)].id)
                if (r.sender, r.identifier) in by_key
                else None,
                "sender": r.sender,
                "identifier": r.identifier,
                "sent": r.sent.astimezone(UTC).isoformat(),
            }
            for r in doc.references
        ],
        note=doc.note,
        color=color,
        category=list(info.category),
        response_type=list(info.response_type),
        urgency=info.urgency,
        severity=info.severity,
        certainty=info.certainty,
        effective=_utc(info.effective),
        onset=_utc(info.onset),
        expires=_latest_expiry(doc),
        web=info.web,
        contact=info.contact,
        texts=[
            {
                "language": i.language,
                "event": i.event,
                "headline": i.headline,
                "description": i.description,
                "instruction": i.instruction,
                "sender_name": i.sender_name,
                "area_desc": "; ".join(a.area_desc for a in i.areas) or None,
            }
            for i in doc.infos
        ],
        area=from_shape(shape, srid=geo.SRID),
        polygons=polygons,
        circles=circles,
        geocodes=geocodes,
        area_ids=area_ids,
        area_id=await locate_area(session, centre.x, centre.y),
        imported=True,
        source_url=source_url,
        published_by=p.user_id if p is not None else None,
        published_at=now,
        cap_xml=data,
    )
    session.add(row)
    await session.flush()
    await _advance_chain(session, row, known)
    audit.record(
        session,
        p,
        "import",
        "alert",
        row.id,
        sender=row.sender,
        identifier=row.identifier,
        msg_type=row.msg_type,
        status=row.status,
        source_url=source_url,
    )
    await on_published(session, row)
    return row, True


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _latest_expiry(doc: cap.Alert) -> datetime | None:
    stamps = [i.expires for i in doc.infos]
    if not stamps or any(x is None for x in stamps):
        return None
    return max(cast(datetime, x) for x in stamps).astimezone(UTC)


async def _foreign_area(
    session: AsyncSession, doc: cap.Alert
) -> tuple[ShMultiPolygon, list[list[list[float]]], list[dict[str, Any]]]:
    """The union of a foreign alert's polygons and circles; geocode-only areas are placed by
    our administrative areas of the same code."""
    parts: list[ShPolygon] = []
    polygons: list[list[list[float]]] = []
    circles: list[dict[str, Any]] = []
    codes: set[str] = set()
    for info in doc.infos:
        for area in info.areas:
            for ring in area.polygons:
                lonlat = [[lon, lat] for lat, lon in ring]
                if lonlat in polygons:
                    continue
                poly = ShPolygon(lonlat)
                if not poly.is_valid or poly.area == 0:
                    raise InvalidInput(N_("a polygon of the alert is invalid"), code="invalid_cap")
                polygons.append(lonlat)
                parts.append(poly)
            for c in area.circles:
                item = {"center": [c.lon, c.lat], "radius_km": c.radius_km}
                if item not in circles and c.radius_km > 0:
                    circles.append(item)
                    parts.append(ShPolygon(capdoc.circle_ring(c.lon, c.lat, c.radius_km)))
            codes.update(g.value for g in area.geocodes)
    if not parts and codes:
        rows = (
            await session.execute(
                select(AdminArea.boundary).where(
                    AdminArea.code.in_(codes),
                    AdminArea.boundary.is_not(None),
                    AdminArea.deleted_at.is_(None),
                )
            )
        ).scalars()
        parts.extend(to_shape(b) for b in rows)
    if not parts:
        raise InvalidInput(
            N_("the alert has no polygon, circle or geocode of an area we know"), code="invalid_cap"
        )
    flat = [g for p in parts for g in (p.geoms if isinstance(p, ShMultiPolygon) else [p])]
    return ShMultiPolygon(flat), polygons, circles


# ---- feeds ------------------------------------------------------------------------------------


def feed_out(row: AlertFeed) -> s.Feed:
    """Wire form of a polled feed."""
    return s.Feed(
        id=row.id,
        url=row.url,
        enabled=row.enabled,
        last_polled_at=row.last_polled_at,
        last_error=row.last_error,
        imported=row.imported,
        created_at=row.created_at,
    )


async def add_feed(
    session: AsyncSession, p: Principal, data: s.FeedCreate, test_hosts: Collection[str] = ()
) -> AlertFeed:
    """Poll another authority's feed from now on (administrators). Its URL must be https (or
    name one of the operator's `test_hosts`); its addresses are checked at each fetch."""
    try:
        check_url(data.url, allow_hosts=test_hosts)
    except EndpointRefused as exc:
        raise InvalidInput(
            N_("a feed is polled over https: {reason}"),
            reason=exc.reason,
            field="url",
            code=exc.reason,
        ) from exc
    taken = await session.execute(select(AlertFeed).where(AlertFeed.url == data.url))
    if taken.first() is not None:
        raise Conflict(N_("this feed is polled already"), field="url")
    row = AlertFeed(id=data.id or uuid7(), url=data.url, enabled=data.enabled, created_by=p.user_id)
    session.add(row)
    await session.flush()
    audit.record(session, p, "add_feed", "alert_feed", row.id, url=row.url)
    return row


async def delete_feed(session: AsyncSession, p: Principal, row: AlertFeed) -> None:
    """Stop polling a feed; what it imported stays."""
    row.deleted_at = utcnow()
    audit.record(session, p, "delete_feed", "alert_feed", row.id, url=row.url)
