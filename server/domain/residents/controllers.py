"""HTTP for residents: public on purpose (no account), under /api/v1/public/.

The subscription's secret travels in the `X-Subscription-Secret` header, never in a URL (URLs
end up in access logs).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from push.webpush import application_server_key
from schemas import residents as s
from schemas.common import Role
from server import crud
from server.auth.principal import Principal
from server.config import Settings
from server.domain.residents import audience
from server.domain.residents import services as svc
from server.models import Alert
from server.scope import require

Secret = Annotated[
    str | None,
    HeaderParameter(name="X-Subscription-Secret", description="the secret registration returned"),
]


def client_address(request: Request[Any, Any, Any]) -> str:
    """The client's address under the server's one rule: uvicorn believes X-Forwarded-For only
    from `LIANDONG_TRUSTED_PROXIES` (server/serving.py), as for login throttling."""
    return request.client.host if request.client else "unknown"


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
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        # Its own transaction: a refused registration (bad endpoint, unknown area) counts too,
        # or the address check would be a free DNS probe.
        async with maker() as session:
            await svc.count_hit(
                session,
                "subscribe",
                client_address(request),
                limit=settings.resident_register_limit,
                window_s=settings.resident_register_window_s,
            )
            await session.commit()
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
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        sub_id: FromPath[uuid.UUID],
        data: JSONBody[s.SubscriptionUpdate],
        secret: Secret = None,
    ) -> s.Subscription:
        """Move, change language or push address; every call renews for 90 days."""
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
        # Its own transaction: a wrong code must count even though we answer 400.
        async with maker() as session:
            try:
                return await svc.confirm(session, sub_id, secret, data.code)
            finally:
                await session.commit()

    @delete("/subscriptions/{sub_id:uuid}", operation_id="Unsubscribe", status_code=204)
    async def unsubscribe(
        self, db: NamedDependency[AsyncSession], sub_id: FromPath[uuid.UUID], secret: Secret = None
    ) -> None:
        """Delete the subscription and its places."""
        await svc.remove(db, sub_id, secret)


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


def report_out(alert_id: uuid.UUID, channels: dict[str, dict[str, int]]) -> s.DeliveryReport:
    """Wire form of `audience.delivery_report`."""
    total = {
        k: sum(c[k] for c in channels.values())
        for k in ("targeted", "delivered", "failed", "pending")
    }
    return s.DeliveryReport(
        alert_id=alert_id,
        channels={name: s.DeliveryCounts(**counts) for name, counts in channels.items()},
        total=s.DeliveryCounts(**total),
        done=total["pending"] == 0,
    )
