"""HTTP for residents: public on purpose (no account), under /api/v1/public/.

The subscription's secret travels in the `X-Subscription-Secret` header, never in a URL (URLs
end up in access logs).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from push.webpush import application_server_key
from schemas import residents as s
from schemas.common import Problem, Role
from server import crud, geo
from server.auth.address import client_address
from server.auth.principal import Principal
from server.config import Settings
from server.domain.alerts.public import PROBLEM, cached, matches, throttle
from server.domain.residents import audience, public
from server.domain.residents import services as svc
from server.errors import InvalidInput
from server.models import Alert
from server.scope import require

_json = msgspec.json.Encoder()

Secret = Annotated[
    str | None,
    HeaderParameter(name="X-Subscription-Secret", description="the secret registration returned"),
]


async def _count_registration(request: Request[Any, Any, Any], settings: Settings) -> None:
    """Count a request that checks a new address against the client's registration limit, in
    its own transaction: a refused one (bad endpoint, unknown area) counts too, or the address
    check would be a free DNS probe."""
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        await svc.count_hit(
            session,
            "subscribe",
            client_address(request),
            limit=settings.resident_register_limit,
            window_s=settings.resident_register_window_s,
        )
        await session.commit()


class ResidentController(Controller):
    """Warning subscriptions without an account."""

    path = "/api/v1/public"
    tags = ["residents"]
    security = [{}]

    @get("/push-key", operation_id="GetPushKey")
    async def push_key(self, settings: NamedDependency[Settings]) -> s.PushKey:
        """The VAPID public key the page subscribes with (null: Web Push not configured)."""
        key = settings.vapid_private_key
        return s.PushKey(vapid_public_key=application_server_key(key) if key else None)

    @post("/subscriptions", operation_id="Subscribe", status_code=201)
    async def subscribe(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        data: JSONBody[s.SubscriptionCreate],
    ) -> s.SubscriptionCreated:
        """Register a push subscription, FCM token or phone number with 1-5 places.

        Rate-limited per client address (429 with Retry-After). An SMS subscription receives
        nothing until confirmed with the code the SMS brings.
        """
        await _count_registration(request, settings)
        return await svc.register(db, settings, data)

    @get("/subscriptions/{sub_id:uuid}", operation_id="GetSubscription")
    async def get_subscription(
        self, db: NamedDependency[AsyncSession], sub_id: FromPath[uuid.UUID], secret: Secret = None
    ) -> s.Subscription:
        """The subscription's state (how many places, never where)."""
        return await svc.status(db, sub_id, secret)

    @put("/subscriptions/{sub_id:uuid}", operation_id="UpdateSubscription")
    async def update_subscription(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        sub_id: FromPath[uuid.UUID],
        data: JSONBody[s.SubscriptionUpdate],
        secret: Secret = None,
    ) -> s.Subscription:
        """Move, change language or push address; every call renews for 90 days. A new push
        address counts against the registration rate limit (429), as registering does; one
        another subscription holds is a 409."""
        if data.subscription is not None or data.fcm_token is not None:
            await _count_registration(request, settings)
        return await svc.update(db, settings, sub_id, secret, data)

    @post(
        "/subscriptions/{sub_id:uuid}/confirm", operation_id="ConfirmSubscription", status_code=200
    )
    async def confirm_subscription(
        self,
        request: Request[Any, Any, Any],
        sub_id: FromPath[uuid.UUID],
        data: JSONBody[s.SubscriptionConfirm],
        secret: Secret = None,
    ) -> s.Subscription:
        """Confirm an SMS subscription with its code (a wrong code counts as an attempt)."""
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        # Its own transaction: a wrong code must count even though we answer 422. Anything
        # unexpected rolls back (the session closes without a commit).
        async with maker() as session:
            try:
                confirmed = await svc.confirm(session, sub_id, secret, data.code)
            except InvalidInput:
                await session.commit()
                raise
            await session.commit()
            return confirmed

    @delete("/subscriptions/{sub_id:uuid}", operation_id="Unsubscribe", status_code=204)
    async def unsubscribe(
        self, db: NamedDependency[AsyncSession], sub_id: FromPath[uuid.UUID], secret: Secret = None
    ) -> None:
        """Delete the subscription and its places."""
        await svc.remove(db, sub_id, secret)


class PublicWarningController(Controller):
    """What the residents' page reads beside `/api/v1/public/alerts`: the live stream, areas,
    shelters, texts."""

    path = "/api/v1/public"
    tags = ["residents"]
    security = [{}]

    @get("/alerts/stream", operation_id="PublicAlertStream")
    async def alert_stream(
        self, request: Request[Any, Any, Any], point: FromQuery[str | None] = None
    ) -> ServerSentEvent:
        """Server-sent events: `alerts` (what `GET /api/v1/public/alerts?point=` answers, the
        point rounded to 0.001°) at once and whenever it changes; a comment every 15 s keeps
        proxies from closing it. Opening one counts against the public rate limit."""
        throttle(request)
        where = geo.parse_point(point)
        feed = warning_feed(request)

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            last: bytes | None = None
            async for changed in feed.changes():
                if not changed:
                    yield ServerSentEventMessage(comment="keep-alive")
                    continue
                data = await feed.answer(where)
                if data != last:
                    last = data
                    yield ServerSentEventMessage(event="alerts", data=data.decode())

        return ServerSentEvent(events(), headers={"Cache-Control": "no-store"})

    @get(
        "/areas",
        operation_id="PublicAreas",
        media_type="application/geo+json",
        responses={
            304: ResponseSpec(
                None, description="Not modified: the client's copy (If-None-Match) is current"
            ),
            429: ResponseSpec(
                Problem, description="Too many requests (see Retry-After)", media_type=PROBLEM
            ),
        },
    )
    async def areas(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]
    ) -> Response[dict[str, Any]]:
        """The district's area boundaries as GeoJSON (the page draws its own map from them),
        with an ETag that changes when an area does (304 on `If-None-Match`)."""
        throttle(request)
        tag, body = await areas_cache(request).get(db)
        return cached(
            request, tag, "application/geo+json", None if matches(request, tag) else body, 300
        )

    @get("/shelters", operation_id="PublicShelters")
    async def shelters(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        lon: FromQuery[float],
        lat: FromQuery[float],
        limit: FromQuery[int] = 3,
    ) -> list[s.Shelter]:
        """The nearest shelters to the point (at most 10)."""
        throttle(request)
        where = geo.parse_point(f"{lon},{lat}") or (lon, lat)
        return await public.nearest_shelters(db, *where, limit=max(1, min(limit, 10)))

    @get("/texts/{lang:str}", operation_id="PublicTexts")
    async def texts(self, request: Request[Any, Any, Any], lang: FromPath[str]) -> dict[str, str]:
        """The residents' page texts in `zh_CN` or `en` (from the gettext catalogue)."""
        throttle(request)
        return public.page_texts(lang)


def warning_feed(request: Request[Any, Any, Any]) -> public.WarningFeed:
    """This process's warning feed (made on first use)."""
    state = request.app.state
    feed: public.WarningFeed | None = state.get("warning_feed")
    if feed is None:
        settings: Settings = state.settings
        feed = public.WarningFeed(
            state.sessionmaker,
            poll_s=settings.warning_poll_s,
            retention=timedelta(hours=settings.cap_feed_retention_h),
        )
        state.warning_feed = feed
    return feed


def areas_cache(request: Request[Any, Any, Any]) -> public.AreasCache:
    """This process's `/areas` answer (made on first use)."""
    state = request.app.state
    cache: public.AreasCache | None = state.get("areas_cache")
    if cache is None:
        cache = state.areas_cache = public.AreasCache()
    return cache


class DeliveryReportController(Controller):
    """The publisher's live view of a warning's delivery."""

    path = "/api/v1/alerts"
    tags = ["alerts"]

    @get("/{alert_id:uuid}/delivery", operation_id="GetAlertDelivery")
    async def delivery(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
    ) -> s.DeliveryReport:
        """Per channel: targeted, delivered, failed and pending, as of now (poll while it runs)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        await crud.get_visible(db, request.user, Alert, alert_id)
        return report_out(alert_id, await audience.delivery_report(db, alert_id))

    @get("/{alert_id:uuid}/delivery/stream", operation_id="StreamAlertDelivery")
    async def delivery_stream(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
        every_s: FromQuery[float] = 1.0,
    ) -> ServerSentEvent:
        """Server-sent events: the report (`delivery`) every `every_s` seconds (0.2-10) while it
        changes, ending once nothing is pending."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        await crud.get_visible(db, request.user, Alert, alert_id)
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        pause = min(max(every_s, 0.2), 10.0)

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            last = None
            while True:
                async with maker() as session:
                    report = report_out(alert_id, await audience.delivery_report(session, alert_id))
                if report != last:
                    last = report
                    yield ServerSentEventMessage(
                        event="delivery", data=_json.encode(report).decode()
                    )
                if report.done:
                    return
                await anyio.sleep(pause)

        return ServerSentEvent(events(), headers={"Cache-Control": "no-store"})


def report_out(alert_id: uuid.UUID, channels: dict[str, dict[str, int]]) -> s.DeliveryReport:
    """Wire form of `audience.delivery_report`."""
    total = {k: sum(c[k] for c in channels.values()) for k in audience.COUNTS}
    return s.DeliveryReport(
        alert_id=alert_id,
        channels={name: s.DeliveryCounts(**counts) for name, counts in channels.items()},
        total=s.DeliveryCounts(**total),
        done=total["pending"] == 0,
    )
