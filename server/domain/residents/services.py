"""Residents' subscriptions: register, confirm (SMS), move/renew, delete, lapse.

No account: registration hands out a secret (only its SHA-256 is kept) that every later change
must present. A wrong secret and an unknown id get the same 404, so ids cannot be probed.

Places are stored no more precisely than targeting needs: points rounded to 0.001° (≤ 111 m;
warning polygons are drawn at village and street scale, so a 100 m error moves a recipient
across a boundary only at its very edge, while a rounded point no longer points at one house),
or the id of a named area (a village). They are never answered back to anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
import msgspec
from geoalchemy2.shape import from_shape
from shapely import Point as ShPoint
from sqlalchemy import delete, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

import i18n
from i18n import N_
from push.base import Channel, PushMessage
from push.endpoints import EndpointRefused, check_endpoint
from schemas import residents as s
from server.config import Settings
from server.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from server.models import (
    AdminArea,
    PushJobRow,
    RateHit,
    ResidentPlace,
    ResidentSubscription,
    utcnow,
)
from server.outbox import OUTBOX_FLAG, dialect_insert, seal
from server.outbox import address_hash as outbox_address_hash

LAPSE_AFTER = timedelta(days=90)
PLACE_DECIMALS = 3  # 0.001 degree: at most 111 m
CODE_TTL = timedelta(minutes=10)
CODE_MAX_ATTEMPTS = 5
CONFIRM_TEXT = i18n.N_(
    "Liandong warnings: your confirmation code is {code}. It expires in 10 minutes."
)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def device_key(sub_id: uuid.UUID) -> str:
    """The outbox's device id for a resident subscription (`r:` + the id's 32 hex digits)."""
    return f"r:{sub_id.hex}"


def round_place(lon: float, lat: float) -> tuple[float, float]:
    """A point as stored: rounded to ~100 m."""
    return round(lon, PLACE_DECIMALS), round(lat, PLACE_DECIMALS)


# ---- rate limits -----------------------------------------------------------------------------


async def count_hit(
    session: AsyncSession, bucket: str, client: str, *, limit: int, window_s: int
) -> None:
    """Count one request of `client` in `bucket`; TooManyRequests (429) over `limit` per window.

    `client` is the request's client address under the server's one rule (forwarded addresses
    only from `LIANDONG_TRUSTED_PROXIES`, applied by `liandong serve`; see server/serving.py).
    """
    now = utcnow()
    since = now - timedelta(seconds=window_s)
    recent = await session.execute(
        select(func.count(), func.min(RateHit.at)).where(
            RateHit.bucket == bucket, RateHit.client == client[:64], RateHit.at > since
        )
    )
    count, oldest = recent.one()
    if count >= limit:
        wait = window_s - int((now - oldest).total_seconds()) if oldest else window_s
        raise TooManyRequests(
            N_("at most {limit} per {window} s from one address"),
            retry_after=max(wait, 1),
            limit=limit,
            window=window_s,
        )
    session.add(RateHit(bucket=bucket, client=client[:64], at=now))


# ---- address checks --------------------------------------------------------------------------


async def _checked_push_address(settings: Settings, sub: s.PushSubscriptionJSON) -> tuple[str, str]:
    """(stored JSON, service origin) of a Web Push / UnifiedPush subscription, SSRF-checked."""
    try:
        endpoint = await anyio.to_thread.run_sync(
            lambda: check_endpoint(sub.endpoint, allow_hosts=settings.push_test_hosts)
        )
    except EndpointRefused as exc:
        raise InvalidInput(
            N_("push endpoint refused ({reason}): {detail}"),
            reason=exc.reason,
            detail=exc.detail,
            field="subscription.endpoint",
        ) from exc
    address = msgspec.json.encode(
        {"endpoint": sub.endpoint, "keys": {"p256dh": sub.keys.p256dh, "auth": sub.keys.auth}}
    ).decode()
    return address, endpoint.origin


async def _address_for(
    settings: Settings,
    channel: s.ResidentChannel,
    subscription: s.PushSubscriptionJSON | None,
    fcm_token: str | None,
    phone: str | None,
) -> tuple[Channel, str, str | None]:
    """(outbox channel, address, service) for a registration; exactly one address must fit."""
    given = {
        "subscription": subscription is not None,
        "fcm_token": fcm_token is not None,
        "phone": phone is not None,
    }
    wanted = {
        s.ResidentChannel.WEBPUSH: "subscription",
        s.ResidentChannel.UNIFIEDPUSH: "subscription",
        s.ResidentChannel.FCM: "fcm_token",
        s.ResidentChannel.SMS: "phone",
    }[channel]
    extra = [name for name, present in given.items() if present and name != wanted]
    if not given[wanted] or extra:
        raise InvalidInput(
            N_("channel {channel} takes `{wanted}` and nothing else"),
            channel=channel.value,
            wanted=wanted,
            field=wanted,
        )
    if subscription is not None:
        address, service = await _checked_push_address(settings, subscription)
        return Channel.WEBPUSH, address, service
    if fcm_token is not None:
        return Channel.FCM, fcm_token, None
    return Channel.SMS, str(phone), None


async def _place_rows(session: AsyncSession, places: list[s.Place]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, place in enumerate(places):
        field = f"places[{index}]"
        if place.area_id is not None:
            if place.lon is not None or place.lat is not None:
                raise InvalidInput(N_("a place is a point or an area, not both"), field=field)
            found = await session.scalar(
                select(AdminArea.id).where(
                    AdminArea.id == place.area_id, AdminArea.deleted_at.is_(None)
                )
            )
            if found is None:
                raise InvalidInput(N_("unknown area"), field=f"{field}.area_id")
            rows.append({"area_id": place.area_id, "location": None})
        elif place.lon is not None and place.lat is not None:
            lon, lat = round_place(place.lon, place.lat)
            rows.append({"area_id": None, "location": from_shape(ShPoint(lon, lat), srid=4326)})
        else:
            raise InvalidInput(N_("a place needs lon and lat, or area_id"), field=field)
    return rows


async def _set_places(session: AsyncSession, sub_id: uuid.UUID, places: list[s.Place]) -> int:
    rows = await _place_rows(session, places)
    await session.execute(delete(ResidentPlace).where(ResidentPlace.subscription_id == sub_id))
    session.add_all(ResidentPlace(subscription_id=sub_id, **row) for row in rows)
    return len(rows)


# ---- the actions -----------------------------------------------------------------------------


def out(row: ResidentSubscription, places: int) -> s.Subscription:
    """The owner's view: places counted, not shown (a UnifiedPush one shows as webpush)."""
    return s.Subscription(
        id=row.id,
        channel=s.ResidentChannel(row.channel),
        lang="en" if row.lang == "en" else "zh_CN",
        confirmed=row.confirmed,
        places=places,
        renew_by=row.renewed_at + LAPSE_AFTER,
    )


async def _queue_code(session: AsyncSession, settings: Settings, row: ResidentSubscription) -> None:
    """A new confirmation code, sent by SMS through the outbox with this transaction. Only its
    hash is kept on the subscription; the job's message is sealed with the server's key
    (`server.outbox.seal`), so the code is not readable in the database or a backup."""
    code = f"{secrets.randbelow(1_000_000):06d}"
    row.code_hash = _sha256(f"{row.id}:{code}")
    row.code_expires_at = utcnow() + CODE_TTL
    row.code_attempts = 0
    text = i18n.gettext(row.lang, CONFIRM_TEXT).format(code=code)
    message = PushMessage(
        body=text,
        data={"kind": "sms_code", "sms_template": "code", "sms_params": f'["{code}"]'},
        ttl_seconds=int(CODE_TTL.total_seconds()),
    )
    await enqueue_one(
        session,
        row,
        event_id=f"code:{row.id}:{uuid.uuid4().hex[:8]}",
        message=message,
        seal_with=settings.secret_key,
    )


async def enqueue_one(
    session: AsyncSession,
    row: ResidentSubscription,
    *,
    event_id: str,
    message: PushMessage,
    seal_with: str | None = None,
) -> None:
    """Queue one message for one subscription in the caller's transaction; sealed with the
    server's key `seal_with` when given (`server.outbox.seal`)."""
    now = utcnow()
    stmt = dialect_insert(session, PushJobRow.__table__).values(
        id=uuid.uuid4(),
        event_id=event_id,
        device_id=device_key(row.id),
        user_id=None,
        channel=row.channel,
        address=row.address,
        message=seal(seal_with, message) if seal_with else msgspec.json.encode(message).decode(),
        state="pending",
        attempts=0,
        not_before=now,
        created_at=now,
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["event_id", "device_id"]))
    session.info[OUTBOX_FLAG] = True


def pending_hash(address: str) -> str:
    """The `address_hash` of a re-registration of a confirmed SMS number waiting for its code:
    a second row beside the confirmed one, so the confirmed one is untouched until then."""
    return outbox_address_hash(f"{Channel.SMS.value}+pending", address)


async def register(
    session: AsyncSession, settings: Settings, data: s.SubscriptionCreate
) -> s.SubscriptionCreated:
    """Register (or re-register) an address; returns the secret once.

    One subscription per address: registering an address again replaces its places, language
    and secret (whoever holds a push subscription's capability URL, or receives the number's
    SMS code, owns it). A confirmed SMS number stays as it is until the new registration's
    code comes back: until then the new one is a second, unconfirmed row (`pending_hash`), so
    knowing someone's number is not enough to switch off or move their warnings. The caller
    counts the request against the address's rate limit.
    """
    channel, address, service = await _address_for(
        settings, data.channel, data.subscription, data.fcm_token, data.phone
    )
    secret = secrets.token_urlsafe(32)
    address_hash = outbox_address_hash(channel.value, address)
    row = await session.scalar(
        select(ResidentSubscription).where(ResidentSubscription.address_hash == address_hash)
    )
    if channel is Channel.SMS and row is not None and row.confirmed:
        address_hash = pending_hash(address)
        row = await session.scalar(
            select(ResidentSubscription).where(ResidentSubscription.address_hash == address_hash)
        )
    now = utcnow()
    if row is None:
        row = ResidentSubscription(
            id=uuid.uuid4(), channel=channel.value, address=address, address_hash=address_hash
        )
        session.add(row)
    row.service = service
    row.lang = data.lang
    row.secret_hash = _sha256(secret)
    row.renewed_at = now
    row.created_at = row.created_at or now
    row.confirmed = channel is not Channel.SMS
    await session.flush()
    count = await _set_places(session, row.id, data.places)
    if channel is Channel.SMS:
        await _queue_code(session, settings, row)
    view = out(row, count)
    return s.SubscriptionCreated(
        **{f: getattr(view, f) for f in view.__struct_fields__}, secret=secret
    )


async def owned(
    session: AsyncSession, sub_id: uuid.UUID, secret: str | None
) -> ResidentSubscription:
    """The subscription if `secret` is its secret; NotFound otherwise (same answer for both)."""
    row = await session.get(ResidentSubscription, sub_id)
    if row is None or not secret or not hmac.compare_digest(row.secret_hash, _sha256(secret)):
        raise NotFound(N_("no such subscription (or a wrong secret)"))
    return row


async def _place_count(session: AsyncSession, sub_id: uuid.UUID) -> int:
    return int(
        await session.scalar(select(func.count()).where(ResidentPlace.subscription_id == sub_id))
        or 0
    )


async def status(session: AsyncSession, sub_id: uuid.UUID, secret: str | None) -> s.Subscription:
    """The owner's view of a subscription."""
    row = await owned(session, sub_id, secret)
    return out(row, await _place_count(session, row.id))


async def update(
    session: AsyncSession,
    settings: Settings,
    sub_id: uuid.UUID,
    secret: str | None,
    data: s.SubscriptionUpdate,
) -> s.Subscription:
    """Move, change language or address (a rotated browser subscription); always renews."""
    row = await owned(session, sub_id, secret)
    if data.subscription is not None or data.fcm_token is not None:
        wanted = (
            s.ResidentChannel.FCM if row.channel == Channel.FCM.value else s.ResidentChannel.WEBPUSH
        )
        if row.channel == Channel.SMS.value:
            raise InvalidInput(N_("an SMS subscription has no push address"), field="subscription")
        channel, address, service = await _address_for(
            settings, wanted, data.subscription, data.fcm_token, None
        )
        address_hash = outbox_address_hash(channel.value, address)
        taken = await session.scalar(
            select(ResidentSubscription.id).where(
                ResidentSubscription.address_hash == address_hash,
                ResidentSubscription.id != row.id,
            )
        )
        if taken is not None:
            raise _address_taken()
        row.address, row.service, row.address_hash = address, service, address_hash
    if data.lang is not None:
        row.lang = data.lang
    row.renewed_at = utcnow()
    try:
        await session.flush()
    except IntegrityError as exc:  # registered at the same moment by another request
        raise _address_taken() from exc
    if data.places is not None:
        count = await _set_places(session, row.id, data.places)
    else:
        count = await _place_count(session, row.id)
    return out(row, count)


def _address_taken() -> Conflict:
    return Conflict(
        N_("this push address belongs to another subscription: register it instead"),
        field="subscription",
    )


async def confirm(
    session: AsyncSession, sub_id: uuid.UUID, secret: str | None, code: str
) -> s.Subscription:
    """Confirm an SMS subscription with the code the SMS brought (5 tries, 10 minutes).

    The attempt is counted by one `UPDATE ... SET code_attempts = code_attempts + 1 WHERE
    code_attempts < 5 ... RETURNING`, so concurrent guesses cannot share a count. A confirmed
    re-registration (`pending_hash`) then replaces the number's earlier subscription."""
    row = await owned(session, sub_id, secret)
    if row.confirmed:
        return out(row, await _place_count(session, row.id))
    t = ResidentSubscription
    counted = await session.execute(
        sql_update(t)
        .where(
            t.id == row.id,
            t.confirmed.is_(False),
            t.code_attempts < CODE_MAX_ATTEMPTS,
            t.code_expires_at > utcnow(),
        )
        .values(code_attempts=t.code_attempts + 1)
        .returning(t.code_hash)
        .execution_options(synchronize_session=False)
    )
    code_hash = counted.scalar_one_or_none()
    await session.refresh(row)
    if code_hash is None:
        raise InvalidInput(
            N_("the code has expired or was tried too often: register again"), field="code"
        )
    if not hmac.compare_digest(code_hash, _sha256(f"{row.id}:{code}")):
        raise InvalidInput(N_("wrong code"), field="code")
    if row.address_hash == pending_hash(row.address):
        # The number's new owner proved it: the earlier subscription (and its places) goes.
        confirmed_hash = outbox_address_hash(row.channel, row.address)
        earlier = select(t.id).where(t.address_hash == confirmed_hash)
        await session.execute(
            delete(ResidentPlace).where(ResidentPlace.subscription_id.in_(earlier))
        )
        await session.execute(delete(t).where(t.address_hash == confirmed_hash))
        row.address_hash = confirmed_hash
    row.confirmed = True
    row.code_hash = row.code_expires_at = None
    await session.flush()
    return out(row, await _place_count(session, row.id))


async def remove(session: AsyncSession, sub_id: uuid.UUID, secret: str | None) -> None:
    """Delete a subscription and its places."""
    row = await owned(session, sub_id, secret)
    await session.execute(delete(ResidentPlace).where(ResidentPlace.subscription_id == row.id))
    await session.delete(row)


async def lapse(session: AsyncSession, now: datetime | None = None) -> int:
    """Delete subscriptions not renewed for 90 days (and rate hits older than a day)."""
    now = now or utcnow()
    cutoff = now - LAPSE_AFTER
    stale = select(ResidentSubscription.id).where(ResidentSubscription.renewed_at < cutoff)
    await session.execute(delete(ResidentPlace).where(ResidentPlace.subscription_id.in_(stale)))
    result = await session.execute(
        delete(ResidentSubscription).where(ResidentSubscription.renewed_at < cutoff)
    )
    await session.execute(delete(RateHit).where(RateHit.at < now - timedelta(days=1)))
    return int(getattr(result, "rowcount", 0) or 0)
