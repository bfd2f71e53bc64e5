"""Hazard reports and their closed loop (隐患闭环): report, verify, assign, rectify, re-inspect,
close or reopen, each step by the right role with its evidence; photos with an EXIF check;
the overdue job; statistics.

Every step writes the hazard, a `hazard_events` row (the timeline) and an audit entry in the
caller's transaction; nothing here commits.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from push.notices import Notice
from schemas import hazards as s
from schemas.common import Role
from schemas.media import MediaStatus
from schemas.states import HAZARD_STEP_ORDER, HAZARD_TRANSITIONS, HazardStatus, can_transition
from server import audit, changes, geo
from server.auth.principal import Principal
from server.crud import (
    apply_patch,
    get_row,
    get_visible,
    live_visible,
    refuse_taken_id,
    step_rank,
    uid_or_none,
)
from server.domain.media.services import declare_many
from server.domain.reference.services import locate
from server.errors import Conflict, Forbidden, InvalidInput
from server.models import (
    Enterprise,
    Escalation,
    Hazard,
    HazardEvent,
    HazardMedia,
    MediaObject,
    NoticeClaim,
    Organisation,
    utcnow,
)
from server.notify import (
    AnyOf,
    AreaDispatchers,
    Audience,
    GridInspector,
    OrgMembers,
    Users,
    Without,
    display_time,
    grid_inspector,
    notify,
)
from server.outbox import dialect_insert

DISPATCH = (Role.ADMIN, Role.DISPATCHER)
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class EvidencePolicy:
    """When a photo's EXIF does not back its hazard up (from Settings)."""

    max_distance_m: float = 500.0
    max_time_s: float = 24 * 3600.0
    local_tz: str = "Asia/Shanghai"


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (WGS-84 mean radius); metres-accurate at these ranges."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _capture_time(exif: dict[str, Any], tz: str) -> datetime | None:
    for key in ("captured_at", "gps_time"):
        if exif.get(key):
            try:
                return datetime.fromisoformat(str(exif[key])).astimezone(UTC)
            except ValueError:
                continue
    local = exif.get("captured_local")
    if local:
        # A bare camera clock: read it in the deployment's zone (docs/media.md).
        try:
            naive = datetime.fromisoformat(str(local)).replace(tzinfo=None)
        except ValueError:
            return None
        return naive.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    return None


def photo_out(
    hazard: Hazard, link: HazardMedia, media: MediaObject, policy: EvidencePolicy
) -> s.HazardPhoto:
    """A hazard's photo with the evidence check: EXIF position vs the reported point, capture
    time vs the report (or step) time. Flags, never refusals: GPS can be off."""
    photo = s.HazardPhoto(
        media_id=media.id,
        sha256=media.sha256,
        status=MediaStatus(media.status),
        kind=s.PhotoKind(link.kind),
    )
    if media.status != MediaStatus.STORED.value:
        return photo
    exif = media.exif or {}
    flags: list[str] = []
    lat, lon = exif.get("latitude"), exif.get("longitude")
    if lat is None or lon is None:
        flags.append(s.EvidenceFlag.NO_GPS.value)
    else:
        point = geo.point_required(hazard.location)
        photo.distance_m = round(haversine_m(lon, lat, *point.coordinates), 1)
        if photo.distance_m > policy.max_distance_m:
            flags.append(s.EvidenceFlag.FAR_FROM_POINT.value)
    taken = _capture_time(exif, policy.local_tz)
    if taken is None:
        flags.append(s.EvidenceFlag.NO_TIME.value)
    else:
        photo.time_offset_s = round((taken - link.expected_at).total_seconds(), 1)
        if abs(photo.time_offset_s) > policy.max_time_s:
            flags.append(s.EvidenceFlag.TIME_MISMATCH.value)
    photo.flags = flags
    return photo


_SERIOUS = frozenset({s.EvidenceFlag.FAR_FROM_POINT.value, s.EvidenceFlag.TIME_MISMATCH.value})


def hazard_out(
    row: Hazard,
    distance_m: float | None = None,
    links: Sequence[tuple[HazardMedia, MediaObject]] = (),
    policy: EvidencePolicy | None = None,
) -> s.Hazard:
    """Wire form of a hazard, with its photos, which are still missing, and evidence flags."""
    policy = policy or EvidencePolicy()
    loc = geo.point_required(row.location)
    photos = [photo_out(row, link, media, policy) for link, media in links]
    flags = sorted({f for p in photos for f in p.flags if f in _SERIOUS})
    return s.Hazard(
        id=row.id,
        category=s.HazardCategory(row.category),
        severity=s.Severity(row.severity),
        description=row.description,
        location=loc,
        accuracy_m=row.accuracy_m,
        status=HazardStatus(row.status),
        reporter_id=row.reporter_id,
        grid_id=row.grid_id,
        area_id=row.area_id,
        enterprise_id=row.enterprise_id,
        photo_ids=[i for i in map(uid_or_none, row.photo_ids or []) if i is not None],
        rectify_org_id=row.rectify_org_id,
        rectify_deadline=row.rectify_deadline,
        created_at=row.created_at,
        updated_at=row.updated_at,
        distance_m=distance_m,
        reported_at=row.reported_at,
        rectify_enterprise_id=row.rectify_enterprise_id,
        overdue=row.overdue,
        status_reason=row.status_reason,
        photos=photos,
        missing_photos=[p.sha256 for p in photos if p.status is MediaStatus.PENDING],
        evidence_flags=flags,
        source=s.HazardSource(row.source),
        check_submission_id=row.check_submission_id,
        check_item_id=row.check_item_id,
    )


async def photo_links(
    session: AsyncSession, hazard_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[HazardMedia, MediaObject]]]:
    """Photos of several hazards in one query, in the order they were attached."""
    found: dict[uuid.UUID, list[tuple[HazardMedia, MediaObject]]] = {h: [] for h in hazard_ids}
    if not hazard_ids:
        return found
    stmt = (
        select(HazardMedia, MediaObject)
        .join(MediaObject, MediaObject.id == HazardMedia.media_id)
        .where(HazardMedia.hazard_id.in_(list(hazard_ids)))
        .order_by(HazardMedia.created_at, HazardMedia.id)
    )
    for link, media in (await session.execute(stmt)).all():
        found[link.hazard_id].append((link, media))
    return found


async def _unlinked_report_photos(
    session: AsyncSession,
    rows: Sequence[Hazard],
    links: dict[uuid.UUID, list[tuple[HazardMedia, MediaObject]]],
) -> None:
    """Photos named in `photo_ids` without a link row (a hazard written by the sync engine
    rather than through `create_hazard`) are shown as report photos all the same."""
    wanted: dict[uuid.UUID, list[Hazard]] = {}
    for row in rows:
        linked = {link.media_id for link, _ in links[row.id]}
        for raw in row.photo_ids or []:
            ident = uid_or_none(raw)
            if ident is not None and ident not in linked:
                wanted.setdefault(ident, []).append(row)
    if not wanted:
        return
    stmt = select(MediaObject).where(MediaObject.id.in_(list(wanted)))
    for media in (await session.execute(stmt)).scalars():
        for row in wanted[media.id]:
            link = HazardMedia(
                hazard_id=row.id,
                media_id=media.id,
                kind=s.PhotoKind.REPORT.value,
                expected_at=row.reported_at or row.created_at,
            )
            links[row.id].append((link, media))


async def hazards_out(
    session: AsyncSession,
    rows: Sequence[tuple[Hazard, float | None]],
    policy: EvidencePolicy | None = None,
) -> list[s.Hazard]:
    """Wire form of a page of hazards (photos loaded in one or two queries)."""
    links = await photo_links(session, [r.id for r, _ in rows])
    await _unlinked_report_photos(session, [r for r, _ in rows], links)
    return [hazard_out(r, d, links[r.id], policy) for r, d in rows]


async def one_out(
    session: AsyncSession, row: Hazard, policy: EvidencePolicy | None = None
) -> s.Hazard:
    """Wire form of one hazard."""
    return (await hazards_out(session, [(row, None)], policy))[0]


async def _resolve_photos(
    session: AsyncSession,
    p: Principal,
    photo_ids: Sequence[uuid.UUID],
    hashes: Sequence[str],
    field: str,
) -> list[MediaObject]:
    """Media objects named by id (must exist) or by hash (declared `pending` if new)."""
    rows: list[MediaObject] = []
    for ident in dict.fromkeys(photo_ids):
        media = await session.get(MediaObject, ident)
        if media is None or media.deleted_at is not None:
            raise InvalidInput(
                N_("no media object {id}: declare it (POST /api/v1/media) or send its sha256"),
                id=ident,
                field=field,
            )
        rows.append(media)
    rows.extend(await declare_many(session, p, list(hashes)))
    return list({m.id: m for m in rows}.values())


async def _attach(
    session: AsyncSession,
    p: Principal,
    hazard: Hazard,
    photos: Sequence[MediaObject],
    kind: s.PhotoKind,
    expected_at: datetime,
    event_id: uuid.UUID | None = None,
) -> None:
    if not photos:
        return
    already = set(
        (
            await session.execute(
                select(HazardMedia.media_id).where(HazardMedia.hazard_id == hazard.id)
            )
        ).scalars()
    )
    for media in photos:
        if media.id not in already:
            link = HazardMedia(
                hazard_id=hazard.id,
                media_id=media.id,
                kind=kind.value,
                event_id=event_id,
                expected_at=expected_at,
                added_by=p.user_id,
            )
            session.add(link)
            changes.record(session, link)  # the photo now travels with the hazard


def _source(p: Principal, named: s.HazardSource | None) -> s.HazardSource:
    """Where a report comes from: enterprise staff report their own (`self_reported`),
    inspectors and responders find hazards in the field (`grid_inspection`); dispatch may name
    another source (a third-party inspection's finding), never `enterprise_inspection`, which
    only a failed self-check item opens."""
    if p.role is Role.ENTERPRISE_STAFF:
        own = s.HazardSource.SELF_REPORTED
    else:
        own = s.HazardSource.GRID_INSPECTION
    if named is None or named is own:
        return own
    if not p.has(*DISPATCH):
        raise Forbidden(N_("only dispatch names a hazard's source"), field="source")
    if named is s.HazardSource.ENTERPRISE_INSPECTION:
        raise InvalidInput(
            N_("enterprise_inspection hazards are opened by failed self-check items"),
            field="source",
        )
    return named


async def my_enterprises(session: AsyncSession, p: Principal) -> list[uuid.UUID]:
    """The live enterprises of the user's organisation (one organisation may run several);
    Forbidden when there is none."""
    found = (
        await session.scalars(
            select(Enterprise.id)
            .where(Enterprise.org_id == p.org_id, Enterprise.deleted_at.is_(None))
            .order_by(Enterprise.id)
        )
    ).all()
    if p.org_id is None or not found:
        raise Forbidden(N_("your account is not linked to an enterprise"))
    return list(found)


def only_enterprise(mine: Sequence[uuid.UUID]) -> uuid.UUID:
    """The enterprise a staff member acts for when they name none: their only one."""
    if len(mine) > 1:
        raise InvalidInput(
            N_("your organisation runs several enterprises: name one"), field="enterprise_id"
        )
    return mine[0]


async def create_hazard(
    session: AsyncSession, p: Principal, data: s.HazardCreate, *, zone: str | None = None
) -> tuple[Hazard, bool]:
    """Report a hazard (both doors: REST and a device's sync create). Enterprise staff report
    for their own enterprise. Returns the hazard and whether this call created it: a retry
    with the same id returns the first report and creates nothing.

    Photos are media ids (declared before) or SHA-256 hashes (declared here as `pending` when
    the bytes have not arrived yet). `zone` (`Settings.local_tz`): the wall clock of its notice.
    """
    if data.id is not None:
        existing = await get_row(session, Hazard, data.id)
        if existing is not None:
            if existing.reporter_id != p.user_id:
                await refuse_taken_id(session, p, Hazard, data.id)
            return existing, False
    reported_at = data.reported_at
    enterprise_id = data.enterprise_id
    if p.role is Role.ENTERPRISE_STAFF:
        mine = await my_enterprises(session, p)
        if enterprise_id is not None and enterprise_id not in mine:
            raise Forbidden(N_("enterprise staff report for their own enterprise only"))
        enterprise_id = enterprise_id or only_enterprise(mine)
    elif enterprise_id is not None:
        found = await session.get(Enterprise, enterprise_id)
        if found is None or found.deleted_at is not None:
            raise InvalidInput(N_("no such enterprise"), field="enterprise_id")
    photos = await _resolve_photos(session, p, data.photo_ids, data.photo_sha256, "photo_ids")
    lon, lat = data.location.coordinates
    grid, area_id = await locate(session, lon, lat)  # held: its inspector hears of it
    row = Hazard(
        category=data.category.value,
        severity=data.severity.value,
        description=data.description,
        location=geo.point_to_db(data.location),
        accuracy_m=data.accuracy_m,
        status=HazardStatus.REPORTED.value,
        reporter_id=p.user_id,
        grid_id=grid.id if grid else None,
        area_id=area_id,
        enterprise_id=enterprise_id,
        photo_ids=[str(m.id) for m in photos],
        reported_at=reported_at,
        overdue=False,
        source=_source(p, data.source).value,
    )
    if data.id is not None:
        row.id = data.id
    await _reported(session, p, row, photos, reported_at, reported_at, zone=zone)
    return row, True


async def _reported(
    session: AsyncSession,
    p: Principal,
    row: Hazard,
    photos: Sequence[MediaObject],
    at: datetime | None,
    photos_expected_at: datetime | None,
    *,
    zone: str | None = None,
    **detail: str,
) -> None:
    """Add a new report: its `reported` timeline entry, its photos, the change, the audit entry
    and the push to whoever must hear of it (both `create_hazard` and `open_from_check`)."""
    session.add(row)
    await session.flush()
    event = HazardEvent(
        hazard_id=row.id,
        from_status=None,
        to_status=HazardStatus.REPORTED.value,
        actor_id=p.user_id,
        at=at or utcnow(),
        detail={"photo_ids": [str(m.id) for m in photos], **detail},
    )
    session.add(event)
    await session.flush()
    expected = photos_expected_at or row.created_at
    await _attach(session, p, row, photos, s.PhotoKind.REPORT, expected, event.id)
    changes.record(session, row, event)
    audit.record(
        session,
        p,
        "report",
        "hazard",
        row.id,
        category=row.category,
        source=row.source,
        photos=[m.sha256 for m in photos],
        **detail,
    )
    await notify_reported(session, row, p.user_id, zone=zone)


# ------------------------------------------------------------------------------ notifications

#: Severities whose new reports also go to the area's dispatchers.
URGENT = frozenset({s.Severity.HIGH.value, s.Severity.CRITICAL.value})


def hazard_notice(
    row: Hazard, kind: str, event_id: str, *, zone: str | None = None, **params: str
) -> Notice:
    """A notice about `row` that opens the hazard on the phone (its deadline on the wall clock
    of `zone`, the deployment's `LIANDONG_LOCAL_TZ`)."""
    if row.rectify_deadline is not None:
        params.setdefault("deadline", display_time(row.rectify_deadline, zone))
    return Notice(
        kind=kind,
        event_id=event_id,
        record="hazard",
        record_id=str(row.id),
        params={
            "category": row.category,
            "severity": row.severity,
            "description": row.description[:200],
            **params,
        },
        data={
            "hazard_id": str(row.id),
            "status": row.status,
            "severity": row.severity,
            "title": row.description[:120],
        },
    )


async def notify_reported(
    session: AsyncSession, row: Hazard, actor: uuid.UUID | None, *, zone: str | None = None
) -> int:
    """A new hazard: its grid's inspector, and for high and critical ones the area's dispatchers
    (not whoever reported it). `zone` as for every hazard notice (a deadline's wall clock)."""
    audience: Audience = GridInspector(row.grid_id)
    if row.severity in URGENT:
        audience = AnyOf(audience, AreaDispatchers(row.area_id))
    notice = hazard_notice(row, "hazard.reported", f"hazard.reported:{row.id}", zone=zone)
    return await notify(session, notice, Without(audience, actor))


async def _notify_step(
    session: AsyncSession, row: Hazard, event: HazardEvent, new: HazardStatus, zone: str | None
) -> None:
    """Who hears of a step: the rectifier of an assignment or a reopening (with the reason),
    the inspector who must re-inspect a rectification (dispatch where no inspector is)."""
    audience: Audience
    params: dict[str, str] = {}
    if new in (H.RECTIFICATION_ASSIGNED, H.REOPENED):
        audience = OrgMembers.of(row.rectify_org_id)
        if new is H.REOPENED:
            params["reason"] = (event.note or "")[:300]
    elif new is H.RECTIFIED:
        inspector = await _grid_inspector(session, row)
        audience = Users.of(inspector) if inspector else AreaDispatchers(row.area_id)
    else:
        return
    kind = f"hazard.{new.value}"
    notice = hazard_notice(row, kind, f"{kind}:{event.id}", zone=zone, **params)
    await notify(session, notice, Without(audience, event.actor_id))


#: The hazard category a self-check item's category becomes (unknown ones: `other`).
_CATEGORIES = frozenset(c.value for c in s.HazardCategory)


async def open_from_check(
    session: AsyncSession,
    p: Principal,
    *,
    enterprise: Enterprise,
    submission_id: uuid.UUID,
    item_id: uuid.UUID,
    item_text: str,
    item_category: str,
    note: str | None,
    photos: Sequence[MediaObject],
    at: datetime,
    zone: str | None = None,
) -> Hazard | None:
    """Open the hazard a failed self-check item reports (source `enterprise_inspection`): the
    item's category, the enterprise's location, grid and area, the item's note and photos, a
    link back to the submission and item. Runs in the submission's transaction; one hazard per
    (submission, item): a second call returns the first. None when the enterprise has no
    location to put the hazard at."""
    found = (
        await session.execute(
            select(Hazard).where(
                Hazard.check_submission_id == submission_id, Hazard.check_item_id == item_id
            )
        )
    ).scalar_one_or_none()
    if found is not None:
        return found
    if enterprise.location is None:
        return None
    description = f"{item_text}: {note}" if note else item_text
    row = Hazard(
        category=item_category if item_category in _CATEGORIES else s.HazardCategory.OTHER.value,
        severity=s.Severity.MEDIUM.value,
        description=description[:4000],
        location=enterprise.location,
        status=HazardStatus.REPORTED.value,
        reporter_id=p.user_id,
        grid_id=enterprise.grid_id,
        area_id=enterprise.area_id,
        enterprise_id=enterprise.id,
        photo_ids=[str(m.id) for m in photos],
        reported_at=at,
        overdue=False,
        source=s.HazardSource.ENTERPRISE_INSPECTION.value,
        check_submission_id=submission_id,
        check_item_id=item_id,
    )
    await _reported(
        session,
        p,
        row,
        photos,
        at,
        at,
        zone=zone,
        check_submission_id=str(submission_id),
        check_item_id=str(item_id),
    )
    return row


def _may_correct(p: Principal, row: Hazard) -> bool:
    return p.has(*DISPATCH) or (row.reporter_id == p.user_id and row.status == "reported")


async def patch_hazard(
    session: AsyncSession, p: Principal, hazard_id: uuid.UUID, data: s.HazardPatch
) -> Hazard:
    """Correct details or add photos (both doors): the reporter while still `reported`, or
    dispatch at any time. NotFound when `p` cannot see the hazard."""
    row = await get_visible(session, p, Hazard, hazard_id)
    if not _may_correct(p, row):
        raise Forbidden(
            N_("only the reporter (before verification) or dispatch corrects a hazard"),
            code="not_reporter",
        )
    changed = apply_patch(row, data, ("category", "severity", "description", "accuracy_m"))
    if data.location is not msgspec.UNSET:
        lon, lat = data.location.coordinates
        row.location = geo.point_to_db(data.location)
        grid, row.area_id = await locate(session, lon, lat)
        row.grid_id = grid.id if grid else None
        changed["location"] = [lon, lat]
    if data.photo_ids is not msgspec.UNSET and data.photo_ids:
        photos = await _resolve_photos(session, p, data.photo_ids, [], "photo_ids")
        known = list(row.photo_ids or [])
        row.photo_ids = known + [str(m.id) for m in photos if str(m.id) not in known]
        await session.flush()
        await _attach(
            session, p, row, photos, s.PhotoKind.REPORT, row.reported_at or row.created_at
        )
        changed["photo_ids"] = [str(m.id) for m in photos]
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "update", "hazard", row.id, **changed)
    return row


async def delete_hazard(session: AsyncSession, p: Principal, hazard_id: uuid.UUID) -> None:
    """Withdraw a report (both doors): the reporter before verification, or dispatch."""
    row = await get_visible(session, p, Hazard, hazard_id)
    if not _may_correct(p, row):
        raise Forbidden(
            N_("only the reporter (before verification) or dispatch deletes a hazard"),
            code="not_reporter",
        )
    row.deleted_at = utcnow()
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "delete", "hazard", row.id)


# ------------------------------------------------------------------------------ the closed loop

H = HazardStatus
#: Which photo kind a step's photos are.
_PHOTO_KIND = {
    H.RECTIFIED: s.PhotoKind.RECTIFICATION,
    H.REINSPECTED: s.PhotoKind.REINSPECTION,
    H.CLOSED: s.PhotoKind.REINSPECTION,
}


async def _grid_inspector(session: AsyncSession, row: Hazard) -> uuid.UUID | None:
    return await grid_inspector(session, row.grid_id)


async def _authorise(session: AsyncSession, p: Principal, row: Hazard, new: HazardStatus) -> None:
    """Who may take each step (docs/hazards.md has the table)."""
    old = HazardStatus(row.status)
    dispatch = p.has(*DISPATCH)
    if new is H.RECTIFIED:
        if row.rectify_org_id is None or p.org_id != row.rectify_org_id:
            raise Forbidden(N_("only the assigned enterprise's staff or unit's members rectify"))
        return
    inspector = await _grid_inspector(session, row)
    is_inspector = inspector is not None and inspector == p.user_id
    if new is H.REINSPECTED:
        # The grid's inspector; dispatch only stands in for a hazard outside any staffed grid.
        if not (is_inspector or (inspector is None and dispatch)):
            raise Forbidden(N_("only the grid's inspector re-inspects a rectification"))
        return
    inspector_may = (new is H.CLOSED and old is H.REINSPECTED) or (
        new is H.REOPENED and old in (H.RECTIFIED, H.REINSPECTED)
    )
    if dispatch or (inspector_may and is_inspector):
        return
    if inspector_may:
        raise Forbidden(
            N_("only dispatch or the grid's inspector moves a hazard from {old} to {new}"),
            old=old,
            new=new,
        )
    raise Forbidden(N_("only dispatch moves a hazard from {old} to {new}"), old=old, new=new)


async def _assignment(
    session: AsyncSession, row: Hazard, data: s.HazardTransition, now: datetime
) -> dict[str, Any]:
    deadline = data.deadline
    if deadline is None:
        raise InvalidInput(N_("assigning a rectification needs a deadline"), field="deadline")
    if deadline <= now:
        raise InvalidInput(N_("the deadline must be in the future"), field="deadline")
    if (data.assignee_enterprise_id is None) == (data.assignee_org_id is None):
        raise InvalidInput(
            N_("name exactly one of assignee_enterprise_id or assignee_org_id"),
            field="assignee_enterprise_id",
        )
    if data.assignee_enterprise_id is not None:
        ent = await session.get(Enterprise, data.assignee_enterprise_id)
        if ent is None or ent.deleted_at is not None:
            raise InvalidInput(N_("no such enterprise"), field="assignee_enterprise_id")
        if ent.org_id is None:
            raise InvalidInput(
                N_("the enterprise has no staff organisation to assign to"),
                field="assignee_enterprise_id",
            )
        org_id, enterprise_id = ent.org_id, ent.id
    else:
        org = await session.get(Organisation, data.assignee_org_id)
        if org is None or org.deleted_at is not None:
            raise InvalidInput(N_("no such organisation"), field="assignee_org_id")
        org_id, enterprise_id = org.id, None
    row.rectify_org_id = org_id
    row.rectify_enterprise_id = enterprise_id
    row.rectify_deadline = deadline
    row.overdue = False
    return {
        "rectify_org_id": str(org_id),
        "rectify_enterprise_id": str(enterprise_id) if enterprise_id else None,
        "deadline": deadline.isoformat(),
    }


async def transition_hazard(
    session: AsyncSession,
    p: Principal,
    hazard_id: uuid.UUID,
    data: s.HazardTransition,
    *,
    zone: str | None = None,
) -> tuple[HazardEvent, bool]:
    """Move a hazard one step along its loop (both doors: REST and a device's `hazard_step`),
    enforcing role and evidence (see `_authorise` and HazardTransition). Returns the step and
    whether this call took it: a repeated step id returns the event already recorded. `zone`
    (`Settings.local_tz`) is the wall clock its notice shows a deadline in."""
    row = await get_visible(session, p, Hazard, hazard_id)
    if data.id is not None:
        seen = await session.get(HazardEvent, data.id)
        if seen is not None:
            if seen.hazard_id != row.id:
                raise Conflict(N_("a step with this id belongs to another hazard"), field="id")
            return seen, False
    old, new = HazardStatus(row.status), data.to_status
    if not can_transition(HAZARD_TRANSITIONS, old, new):
        raise Conflict(
            N_("hazard cannot go from {old} to {new}"),
            old=old,
            new=new,
            field="to_status",
            code="illegal_transition",
        )
    await _authorise(session, p, row, new)
    now = utcnow()
    at = data.at or now
    note = (data.note or "").strip() or None
    if new in (H.REJECTED, H.REOPENED) and not note:
        raise InvalidInput(
            N_("{status} needs a reason in note"), status=new, field="note", code="reason_required"
        )
    if new is H.CLOSED and old is H.VERIFIED and not note:
        raise InvalidInput(
            N_("closing without rectification needs a reason in note"),
            field="note",
            code="reason_required",
        )
    photos = await _resolve_photos(session, p, data.photo_ids, data.photo_sha256, "photo_ids")
    if new is H.RECTIFIED and not photos:
        raise InvalidInput(
            N_("marking a hazard rectified needs after-photos (photo_sha256 or photo_ids)"),
            field="photo_sha256",
            code="evidence_required",
        )
    detail: dict[str, Any] = {"photo_ids": [str(m.id) for m in photos]}
    if new is H.RECTIFICATION_ASSIGNED:
        detail.update(await _assignment(session, row, data, now))
    if new in (H.REJECTED, H.REOPENED):
        row.status_reason = note
    elif new is H.VERIFIED:
        row.status_reason = None
    row.status = new.value
    event = HazardEvent(
        hazard_id=row.id,
        from_status=old.value,
        to_status=new.value,
        at=at,
        actor_id=p.user_id,
        note=note,
        detail=detail,
        kind="transition",
    )
    if data.id is not None:
        event.id = data.id
    session.add(event)
    await session.flush()
    await _attach(session, p, row, photos, _PHOTO_KIND.get(new, s.PhotoKind.OTHER), at, event.id)
    changes.record(session, row, event)
    audit.record(
        session,
        p,
        "transition",
        "hazard",
        row.id,
        from_status=old.value,
        to_status=new.value,
        note=note,
        photos=[m.sha256 for m in photos],
        **{k: v for k, v in detail.items() if k != "photo_ids"},
    )
    await _notify_step(session, row, event, new, zone)
    return event, True


def event_out(row: HazardEvent) -> s.HazardEvent:
    """Wire form of a timeline entry."""
    detail = dict(row.detail or {})
    photo_ids = [uuid.UUID(x) for x in detail.pop("photo_ids", [])]
    return s.HazardEvent(
        id=row.id,
        hazard_id=row.hazard_id,
        kind=row.kind,
        from_status=HazardStatus(row.from_status) if row.from_status else None,
        to_status=HazardStatus(row.to_status),
        at=row.at,
        actor_id=row.actor_id,
        note=row.note,
        photo_ids=photo_ids,
        detail=detail,
    )


# The order of a hazard's timeline (`schemas.states.hazard_step_rank`), for the REST read and
# the sync backfill alike: by time, entries of one instant by the loop, an escalation after the
# step into its status, then by when the server wrote them and by id (a phone's step ids are
# random), so that the order is total on both databases.
HAZARD_TIMELINE_ORDER = (
    HazardEvent.at,
    step_rank(HAZARD_STEP_ORDER, HazardEvent.to_status, HazardEvent.from_status),
    HazardEvent.created_at,
    HazardEvent.id,
)


async def timeline(session: AsyncSession, hazard_id: uuid.UUID) -> list[HazardEvent]:
    """A hazard's steps and escalations in order (`HAZARD_TIMELINE_ORDER`)."""
    stmt = (
        select(HazardEvent)
        .where(HazardEvent.hazard_id == hazard_id, HazardEvent.deleted_at.is_(None))
        .order_by(*HAZARD_TIMELINE_ORDER)
    )
    return list((await session.execute(stmt)).scalars())


# ------------------------------------------------------------------------------ overdue and stats


async def mark_overdue(
    session: AsyncSession, now: datetime | None = None, *, zone: str | None = None
) -> list[uuid.UUID]:
    """Mark rectifications past their deadline overdue and record one escalation for each.

    Safe with several processes: each hazard is claimed by `UPDATE ... WHERE NOT overdue`, which
    only one transaction wins; the escalation row is unique per (hazard, kind, deadline) too.
    Returns the hazards this call escalated.
    """
    now = now or utcnow()
    due = [
        Hazard.status == H.RECTIFICATION_ASSIGNED.value,
        Hazard.rectify_deadline.is_not(None),
        Hazard.rectify_deadline < now,
        Hazard.overdue.is_(False),
        Hazard.deleted_at.is_(None),
    ]
    candidates = list((await session.execute(select(Hazard.id).where(*due))).scalars())
    escalated: list[uuid.UUID] = []
    for hazard_id in candidates:
        claimed = await session.execute(
            update(Hazard)
            .where(Hazard.id == hazard_id, *due)
            .values(overdue=True, updated_at=now)
            # The claimed row is re-read below and recorded with its escalation event.
            .execution_options(synchronize_session=False, recorded=True)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another runner got there first
        fresh = select(Hazard).where(Hazard.id == hazard_id)
        row = (await session.execute(fresh.execution_options(populate_existing=True))).scalar_one()
        deadline = row.rectify_deadline or now  # never None: the claim's WHERE requires one
        exists = (
            await session.execute(
                select(Escalation.id).where(
                    Escalation.hazard_id == hazard_id,
                    Escalation.kind == "overdue",
                    Escalation.deadline == deadline,
                )
            )
        ).first()
        detail = {
            "deadline": deadline.isoformat(),
            "rectify_org_id": str(row.rectify_org_id) if row.rectify_org_id else None,
            "overdue_by_s": round((now - deadline).total_seconds()),
        }
        if exists is None:
            escalation = Escalation(
                hazard_id=hazard_id,
                kind="overdue",
                deadline=deadline,
                grid_id=row.grid_id,
                org_id=row.rectify_org_id,
                area_id=row.area_id,
                created_at=now,
                detail=detail,
            )
            session.add(escalation)
            await _push_escalation(session, row, escalation, now, zone)
        escalated_event = HazardEvent(
            hazard_id=hazard_id,
            kind="escalation",
            from_status=row.status,
            to_status=row.status,
            at=now,
            actor_id=None,
            note="rectification overdue",
            detail=detail,
        )
        session.add(escalated_event)
        changes.record(session, row, escalated_event)
        audit.record(session, None, "escalate", "hazard", hazard_id, kind="overdue", **detail)
        escalated.append(hazard_id)
    await session.flush()
    return escalated


async def _push_escalation(
    session: AsyncSession,
    hazard: Hazard,
    escalation: Escalation,
    now: datetime,
    zone: str | None,
) -> None:
    """Queue the escalation's push in the same transaction (the outbox delivers it): to the
    dispatchers of the hazard's area, the grid's inspector and the unit that was to rectify
    it. `delivered_at` says it was handed to the outbox."""
    event_id = f"hazard:{hazard.id}:overdue:{escalation.deadline.isoformat()}"
    audience = AnyOf(
        AreaDispatchers(hazard.area_id),
        GridInspector(hazard.grid_id),
        OrgMembers.of(hazard.rectify_org_id),
    )
    notice = hazard_notice(hazard, "hazard.overdue", event_id, zone=zone)
    await notify(session, notice, audience, now=now)
    escalation.delivered_at = now


async def remind_deadlines(
    session: AsyncSession,
    now: datetime,
    ahead: timedelta = timedelta(days=1),
    *,
    zone: str | None = None,
) -> list[uuid.UUID]:
    """Remind the rectifier of each rectification due within `ahead` (a day by default), once
    per deadline: the reminder's key is claimed in `notice_claims` (INSERT ... ON CONFLICT DO
    NOTHING), so only one of several racing runners sends it. Returns the hazards reminded."""
    due = (
        await session.execute(
            select(Hazard)
            .where(
                Hazard.status == H.RECTIFICATION_ASSIGNED.value,
                Hazard.rectify_deadline.is_not(None),
                Hazard.rectify_deadline > now,
                Hazard.rectify_deadline <= now + ahead,
                Hazard.overdue.is_(False),
                Hazard.deleted_at.is_(None),
            )
            .order_by(Hazard.id)
        )
    ).scalars()
    reminded: list[uuid.UUID] = []
    for row in list(due):
        deadline = row.rectify_deadline or now  # never None: the WHERE requires one
        key = f"hazard.deadline_soon:{row.id}:{deadline.isoformat()}"
        claim = dialect_insert(session, NoticeClaim.__table__).values(key=key, at=now)
        claimed = await session.execute(
            claim.on_conflict_do_nothing(index_elements=["key"]).returning(
                NoticeClaim.__table__.c.key
            )
        )
        if claimed.first() is None:
            continue  # reminded already (or by a racing runner)
        notice = hazard_notice(row, "hazard.deadline_soon", key[:128], zone=zone)
        await notify(session, notice, OrgMembers.of(row.rectify_org_id), now=now)
        reminded.append(row.id)
    return reminded


def _scoped(p: Principal, filters: Sequence[Any]) -> list[Any]:
    return live_visible(p, Hazard, *filters)


async def stats(session: AsyncSession, p: Principal, filters: Sequence[Any]) -> s.HazardStats:
    """Counts per grid and status of the hazards `p` may see, after `filters`."""
    stmt = (
        select(Hazard.grid_id, Hazard.status, func.count())
        .where(*_scoped(p, filters))
        .group_by(Hazard.grid_id, Hazard.status)
        .order_by(Hazard.grid_id, Hazard.status)
    )
    items = [
        s.HazardStatsRow(grid_id=g, status=HazardStatus(st), count=int(n))
        for g, st, n in (await session.execute(stmt)).all()
    ]
    return s.HazardStats(items=items, total=sum(i.count for i in items))


async def overdue_groups(
    session: AsyncSession, p: Principal, filters: Sequence[Any]
) -> list[s.OverdueGroup]:
    """Overdue rectifications `p` may see, grouped by grid and assigned organisation."""
    conds = _scoped(
        p,
        [
            *filters,
            Hazard.overdue.is_(True),
            Hazard.status == H.RECTIFICATION_ASSIGNED.value,
        ],
    )
    stmt = (
        select(Hazard.grid_id, Hazard.rectify_org_id, Hazard.id)
        .where(*conds)
        .order_by(Hazard.rectify_deadline, Hazard.id)
    )
    groups: dict[tuple[uuid.UUID | None, uuid.UUID | None], list[uuid.UUID]] = {}
    for grid_id, org_id, hazard_id in (await session.execute(stmt)).all():
        groups.setdefault((grid_id, org_id), []).append(hazard_id)
    return [
        s.OverdueGroup(grid_id=g, rectify_org_id=o, count=len(ids), hazard_ids=ids)
        for (g, o), ids in groups.items()
    ]
