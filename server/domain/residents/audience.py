"""Who receives a warning, and the message each gets: residents inside the area, staff whose home
area or last position is inside it, and the duty contacts of the area by SMS.

`deliver` is the hook at the alerts domain's delivery seam (`PUBLISHED_HOOKS`, run by
`alerts.services.on_published` for every message that became public, ours or imported; attached
by `install()`, which the app and the command line call at set-up): it runs in
the publishing transaction and writes one outbox job per recipient (push/outbox.py does the rest),
so a warning is published and its deliveries are queued in one commit, or neither. Residents and
duty contacts get `Actual` messages only; staff get Exercise and Test too. Event ids are
`alert:<alert id>`; resident subscriptions appear in the outbox as device `r:<subscription id hex>`,
duty contacts as `c:<contact id hex>`.

Selection (both databases, spatial index):

- **Alert**: every confirmed subscription with a point place inside the area (GiST /
  SpatiaLite R-tree) or a named-area place whose area intersects it;
- **Update**: the same people as any earlier message of the chain, plus everyone now inside;
- **Cancel**: everyone who had a job for an earlier message of the chain, and nobody else.

An Update or Cancel marks the still-unsent jobs of the chain's earlier messages `superseded` in
the same transaction (`supersede_pending`), whoever they were for (residents, staff devices, duty
contacts): a recipient whose Alert was still pending, backing off or mid fan-out gets the newer
message instead, never the withdrawn one. Staff and duty contacts follow the residents' rule
(`Reach`, the one definition): an Update reaches those inside now plus whoever had a job of the
chain, a Cancel only the latter. The warning's area is parsed once per publish for all three.

The resident jobs are written by one `INSERT ... SELECT` (no rows through Python): 100,000
jobs cost the database a few seconds, not the server a few minutes. One job per (event,
device) is unique in the outbox, so a subscription with three places inside gets one message.

Web Push messages carry `TTL` = seconds until the warning expires, `Urgency: high` for orange
and red, and the chain's root id as `Topic` (32 hex characters, RFC 8030's limit), so a newer
message of the same chain replaces an undelivered older one at the push service.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

import i18n
from push.base import Channel, PushMessage
from push.notices import Notice, build, colour_text
from push.outbox import JobState
from schemas.common import MultiPolygon, Polygon
from server import geo
from server.db import dialect_of
from server.domain.alerts.services import PUBLISHED_HOOKS
from server.models import (
    AdminArea,
    Alert,
    Contact,
    PushJobRow,
    ResidentPlace,
    ResidentSubscription,
    utcnow,
)
from server.notify import AnyOf, Audience, StaffInside, notify
from server.outbox import OUTBOX_FLAG, dialect_insert
from server.scope import serving_areas

# Set in `session.info` when a warning was published: the app wakes the live streams on commit.
WARNINGS_FLAG = "warnings_changed"
DEFAULT_TTL_S = 24 * 3600
MIN_TTL_S = 60
LANGS = ("zh_CN", "en")
_encode = msgspec.json.Encoder()


def event_of(alert_id: uuid.UUID) -> str:
    """The outbox event id of a warning message."""
    return f"alert:{alert_id}"


def ttl_seconds(expires: datetime | None, now: datetime) -> int:
    """Seconds until the warning expires (at least a minute); a day when it has no expiry."""
    if expires is None:
        return DEFAULT_TTL_S
    return max(MIN_TTL_S, int((expires - now).total_seconds()))


def texts_for(alert: Alert, lang: str) -> dict[str, Any]:
    """The warning's texts (event, headline, instruction) in `lang`: English where the message
    carries English (fields it lacks read Chinese), else Chinese."""
    texts = list(alert.texts or [])
    zh = next((t for t in texts if str(t.get("language", "")).lower().startswith("zh")), None)
    base = dict(zh or (texts[0] if texts else {}))
    if lang == "en":
        en = next((t for t in texts if str(t.get("language", "")).lower().startswith("en")), None)
        base.update({k: v for k, v in (en or {}).items() if v})
    return base


KINDS = {"Alert": "warning.alert", "Update": "warning.update", "Cancel": "warning.cancel"}


def warning_notice(alert: Alert, *, now: datetime, audience: str = "residents") -> Notice:
    """The warning as a notice of the one notification layer (push/notices.py builds each
    language's message): the level and the warning's own texts, its chain as collapse key."""
    zh, en = texts_for(alert, "zh_CN"), texts_for(alert, "en")

    def fields(text: dict[str, Any]) -> dict[str, str]:
        event = str(text.get("event") or "")
        return {
            "event": event,
            "headline": str(text.get("headline") or event),
            "instruction": str(text.get("instruction") or ""),
        }

    params = {**fields(zh), "colour": alert.color or ""}
    level = i18n.gettext("zh_CN", colour_text(alert.color))
    sms = [level, params["headline"][:60], params["instruction"][:60]]
    return Notice(
        kind=KINDS.get(alert.msg_type, "warning.alert"),
        event_id=event_of(alert.id),
        record="alert",
        record_id=str(alert.chain_id),
        params=params,
        localized={"en": fields(en)},
        data={
            "audience": audience,
            "alert_id": str(alert.id),
            "chain": alert.chain_id.hex,
            "colour": alert.color or "",
            "msg_type": alert.msg_type,
            "status": alert.status,
            "url": f"/residents/?alert={alert.chain_id}",
            "sms_template": "warning",
            "sms_params": json.dumps(sms, ensure_ascii=False),
        },
        ttl_seconds=ttl_seconds(alert.expires, now),
        priority="high" if alert.color in ("orange", "red") else "normal",
        collapse_key=alert.chain_id.hex,
    )


def warning_message(alert: Alert, lang: str, *, now: datetime) -> PushMessage:
    """What a resident reading `lang` receives."""
    return build(warning_notice(alert, now=now), lang)


def _device_expr(dialect: str) -> ColumnElement[str]:
    """`'r:' || <subscription id as 32 hex>` on both databases (SQLite stores UUIDs as hex)."""
    sid = ResidentSubscription.id
    if dialect == "sqlite":
        return literal("r:") + cast(sid, String)
    return literal("r:") + func.replace(cast(sid, String), "-", "")


def _new_id(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.lower(func.hex(func.randomblob(16)))
    return func.gen_random_uuid()


def inside_subscriptions(dialect: str, area: Polygon | MultiPolygon) -> Select[Any]:
    """Subscription ids with a place inside the area (points by the spatial index, named areas
    by intersection with their boundary)."""
    points = select(ResidentPlace.subscription_id).where(
        geo.within_polygon(dialect, ResidentPlace.location, area)
    )
    areas = select(AdminArea.id).where(
        AdminArea.deleted_at.is_(None), geo.within_polygon(dialect, AdminArea.boundary, area)
    )
    named = select(ResidentPlace.subscription_id).where(ResidentPlace.area_id.in_(areas))
    return select(union(points, named).subquery().c[0])


def _chain_recipients(events: Sequence[str], prefix: str = "r:") -> Select[Any]:
    """Device keys starting with `prefix` (`r:` subscriptions, `c:` duty contacts) that had a
    job for an earlier message of the chain, whatever became of it (sent, still pending,
    superseded, failed)."""
    return select(PushJobRow.device_id).where(
        PushJobRow.event_id.in_(list(events)), PushJobRow.device_id.like(f"{prefix}%")
    )


@dataclass(frozen=True)
class Reach:
    """Whom a message of a chain reaches, the one rule for residents, staff and duty contacts
    (module doc): an Alert those inside its area; an Update those inside plus whoever had a job
    of the chain's earlier messages (`events`); a Cancel only the latter."""

    inside: bool
    events: tuple[str, ...]

    @classmethod
    def of(cls, alert: Alert, events: Sequence[str]) -> Reach:
        """The reach of `alert`, whose chain's earlier messages have outbox events `events`."""
        earlier = tuple(events) if alert.msg_type in ("Update", "Cancel") else ()
        return cls(inside=alert.msg_type != "Cancel", events=earlier)


@dataclass(frozen=True)
class ChainStaff:
    """Staff who had a job (on any device) for an earlier message of the chain: an Update or
    Cancel reaches them as it reaches the chain's earlier resident recipients."""

    events: tuple[str, ...]

    async def user_ids(self, session: AsyncSession) -> set[uuid.UUID]:
        """Users with a job of these events (the outbox drops inactive ones)."""
        if not self.events:
            return set()
        rows = await session.execute(
            select(PushJobRow.user_id)
            .where(PushJobRow.event_id.in_(self.events), PushJobRow.user_id.is_not(None))
            .distinct()
        )
        return {u for u in rows.scalars() if u is not None}


async def supersede_pending(session: AsyncSession, events: Sequence[str], *, by: str) -> int:
    """Mark every job of the chain's earlier messages that is not sent yet (pending, backing
    off, or claimed mid fan-out) `superseded`, whoever it was for (residents, staff devices,
    duty contacts): the newer message replaces them, so a withdrawn or outdated warning is not
    sent after its Update or Cancel. A send already under way may still be accepted; its
    delivery record is written all the same, and the newer message reaches that recipient too
    (`_chain_recipients`, `ChainStaff`). Returns how many jobs."""
    if not events:
        return 0
    t = PushJobRow
    result = await session.execute(
        update(t)
        .where(t.event_id.in_(list(events)), t.state == JobState.PENDING.value)
        .values(
            state=JobState.SUPERSEDED.value,
            leased_until=None,
            lease_token=None,
            last_error=f"superseded by {by}",
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def enqueue_residents(
    session: AsyncSession,
    alert: Alert,
    area: Polygon | MultiPolygon,
    reach: Reach,
    *,
    now: datetime,
) -> int:
    """Queue the warning (its `area` parsed) for every resident in its `reach`; returns how
    many jobs."""
    dialect = dialect_of(session)
    device = _device_expr(dialect)
    parts: list[ColumnElement[bool]] = []
    if reach.inside:
        parts.append(ResidentSubscription.id.in_(inside_subscriptions(dialect, area)))
    if reach.events:
        parts.append(device.in_(_chain_recipients(reach.events)))
    who = or_(false(), *parts)
    bodies = {
        lang: _encode.encode(warning_message(alert, lang, now=now)).decode() for lang in LANGS
    }
    message = case(
        (ResidentSubscription.lang == "en", literal(bodies["en"])), else_=literal(bodies["zh_CN"])
    )
    t = PushJobRow.__table__
    rows = select(
        _new_id(dialect),
        literal(event_of(alert.id)),
        device,
        null(),
        ResidentSubscription.channel,
        ResidentSubscription.address,
        message,
        literal("pending"),
        literal(0),
        literal(now, type_=t.c.not_before.type),
        literal(now, type_=t.c.created_at.type),
    ).where(and_(ResidentSubscription.confirmed.is_(True), who))
    columns = [
        "id",
        "event_id",
        "device_id",
        "user_id",
        "channel",
        "address",
        "message",
        "state",
        "attempts",
        "not_before",
        "created_at",
    ]
    stmt = dialect_insert(session, t).from_select(columns, rows)
    stmt = stmt.on_conflict_do_nothing(index_elements=["event_id", "device_id"])
    result = await session.execute(stmt)
    session.info[OUTBOX_FLAG] = True
    session.info[WARNINGS_FLAG] = True
    return int(getattr(result, "rowcount", 0) or 0)


async def warning_contacts(
    session: AsyncSession, area: Polygon | MultiPolygon, reach: Reach
) -> list[Contact]:
    """The duty contacts in a message's `reach`: those serving its `area` when it reaches
    those inside, and those who had a job of the chain's earlier messages and are still on
    duty."""
    earlier: list[Contact] = []
    if reach.events:
        keys = (await session.execute(_chain_recipients(reach.events, "c:"))).scalars()
        ids = sorted({uuid.UUID(k.removeprefix("c:")) for k in keys})
        earlier = await _duty_contacts(session, Contact.id.in_(ids))
    if not reach.inside:
        return earlier
    inside = await duty_contacts_inside(session, area)
    known = {c.id for c in inside}
    return inside + [c for c in earlier if c.id not in known]


async def duty_contacts_inside(
    session: AsyncSession, area: Polygon | MultiPolygon
) -> list[Contact]:
    """Duty contacts serving an area that intersects the warning (or serving everywhere), with
    a number that takes an SMS. The database filters (`scope.serving_areas`, the one
    definition of whom a contact serves); only the number's form is checked here."""
    dialect = dialect_of(session)
    areas = (
        await session.execute(
            select(AdminArea.id).where(
                AdminArea.deleted_at.is_(None),
                geo.within_polygon(dialect, AdminArea.boundary, area),
            )
        )
    ).scalars()
    return await _duty_contacts(session, serving_areas(dialect, list(areas)))


async def _duty_contacts(session: AsyncSession, which: ColumnElement[bool]) -> list[Contact]:
    """The contacts `which` selects that are on duty, not deleted, and have a number that
    takes an SMS."""
    contacts = await session.execute(
        select(Contact).where(Contact.duty.is_(True), Contact.deleted_at.is_(None), which)
    )
    return [c for c in contacts.scalars() if sms_number(c.phone)]


def sms_number(phone: str) -> str | None:
    """A contact's number as E.164 if it can take an SMS (a mobile), else None (a landline or
    a short code such as 119 cannot). Mainland mobiles without a prefix get +86."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if phone.strip().startswith("+"):
        return f"+{digits}" if 8 <= len(digits) <= 15 else None
    if len(digits) == 11 and digits.startswith("1"):
        return f"+86{digits}"
    return None


async def earlier_in_chain(session: AsyncSession, alert: Alert) -> list[uuid.UUID]:
    """The ids of the chain's messages published before this one, oldest first."""
    rows = await session.execute(
        select(Alert.id)
        .where(
            Alert.chain_id == alert.chain_id,
            Alert.id != alert.id,
            Alert.published_at.is_not(None),
        )
        .order_by(Alert.published_at)
    )
    return list(rows.scalars())


async def enqueue_warning(
    session: AsyncSession,
    alert: Alert,
    *,
    chain: Sequence[uuid.UUID] = (),
    now: datetime | None = None,
) -> dict[str, int]:
    """Queue a published warning for staff inside and, when it is `Actual`, for residents and
    duty contacts; counts by audience. Runs in the publishing transaction. An Update or Cancel
    first supersedes the chain's unsent jobs and reaches their recipients (module doc)."""
    now = now or utcnow()
    area = geo.area_required(alert.area)  # parsed once for every audience
    public = alert.status == "Actual"
    reach = Reach.of(alert, [event_of(a) for a in chain])
    counts = {"residents": 0, "duty_contacts": 0}
    if alert.msg_type in ("Update", "Cancel"):
        await supersede_pending(session, reach.events, by=event_of(alert.id))
    if public:
        counts["residents"] = await enqueue_residents(session, alert, area, reach, now=now)
    staff: list[Audience] = [StaffInside(area)] if reach.inside else []
    staff += [ChainStaff(reach.events)] if reach.events else []
    counts["staff"] = await notify(
        session, warning_notice(alert, now=now, audience="staff"), AnyOf(*staff), now=now
    )
    contacts = await warning_contacts(session, area, reach) if public else []
    sms = warning_message(alert, i18n.DEFAULT_LANG, now=now)
    values = [
        {
            "id": uuid.uuid4(),
            "event_id": event_of(alert.id),
            "device_id": f"c:{c.id.hex}",
            "user_id": None,
            "channel": Channel.SMS.value,
            "address": sms_number(c.phone),
            "message": _encode.encode(sms).decode(),
            "state": "pending",
            "attempts": 0,
            "not_before": now,
            "created_at": now,
        }
        for c in contacts
    ]
    if values:
        stmt = dialect_insert(session, PushJobRow.__table__).values(values)
        result = await session.execute(
            stmt.on_conflict_do_nothing(index_elements=["event_id", "device_id"])
        )
        counts["duty_contacts"] = int(getattr(result, "rowcount", 0) or 0)
        session.info[OUTBOX_FLAG] = True
    return counts


COUNTS = ("targeted", "delivered", "failed", "pending", "superseded")
_REPORTED = {
    JobState.DELIVERED.value: "delivered",
    JobState.DEAD.value: "failed",
    JobState.PENDING.value: "pending",
    JobState.SUPERSEDED.value: "superseded",
}


async def delivery_report(session: AsyncSession, alert_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """Per channel: targeted, delivered, failed (dead), pending and superseded (replaced by a
    later Update or Cancel before it was sent) jobs of this warning."""
    t = PushJobRow
    rows = await session.execute(
        select(t.channel, t.state, func.count())
        .where(t.event_id == event_of(alert_id))
        .group_by(t.channel, t.state)
    )
    report: dict[str, dict[str, int]] = {}
    for channel, state, count in rows.all():
        entry = report.setdefault(channel, dict.fromkeys(COUNTS, 0))
        entry["targeted"] += count
        entry[_REPORTED.get(state, "pending")] += count
    return report


async def deliver(session: AsyncSession, alert: Alert) -> None:
    """The delivery hook (`alerts.services.PUBLISHED_HOOKS`): a message became public."""
    await enqueue_warning(session, alert, chain=await earlier_in_chain(session, alert))


def install() -> None:
    """Attach delivery at the alerts domain's seam, once (idempotent). Every process that can
    publish calls it at set-up: `create_app`, the `liandong` command (seed-demo, worker, jobs)
    and each worker process; the jobs then commit with the published message or not at all."""
    if deliver not in PUBLISHED_HOOKS:
        PUBLISHED_HOOKS.append(deliver)
