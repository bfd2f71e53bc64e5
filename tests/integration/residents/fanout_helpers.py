"""Drive a published warning through the real outbox to loopback push services and SMS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from push.base import Channel, PushSender
from push.outbox import OutboxWorker
from push.sms import SmsSender, TencentSms
from push.webpush import WebPushSender
from server.db import make_engine, make_sessionmaker
from server.outbox import SqlOutboxStore
from tests import factories as f
from tests.conftest import TEST_VAPID_PRIVATE_KEY
from tests.peers.sms_standin import TencentSmsStandIn
from tests.peers.webpush_receiver import WebPushReceiver

SMS_ID, SMS_KEY = "AKIDresidents", "residents-sms-key"
API = "/api/v1/public/subscriptions"
CENTRE = (121.4855, 31.2375)  # inside the warning square below
AREA = f.square(*CENTRE, d=0.004)


def sms_provider(standin: TencentSmsStandIn) -> TencentSms:
    return TencentSms(
        secret_id=SMS_ID, secret_key=SMS_KEY, app_id="1400000001", sign_name="联动预警",
        templates={"warning": "200001", "code": "200002"}, endpoint=standin.endpoint, scheme="http",
    )  # fmt: skip


def drain(
    database_url: str,
    senders: Mapping[Channel, PushSender] | None = None,
    *,
    key: str | None = None,
    **worker: Any,
) -> dict[str, int]:
    """Run the outbox worker until nothing is due; returns the summed batch reports. `key`:
    the server's secret key, which opens sealed messages (SMS codes)."""
    web = WebPushSender(
        TEST_VAPID_PRIVATE_KEY, "mailto:ops@liandong.example", allow_hosts=("127.0.0.1",)
    )
    chosen: dict[Channel, PushSender] = {Channel.WEBPUSH: web, **(senders or {})}

    async def main() -> dict[str, int]:
        engine = make_engine(database_url)
        store = SqlOutboxStore(make_sessionmaker(engine), secret_key=key)
        runner = OutboxWorker(store, chosen, **worker)
        total: dict[str, int] = {}
        try:
            while True:
                report = await runner.run_once()
                for name in ("claimed", "delivered", "dead", "retried", "pruned_addresses"):
                    total[name] = total.get(name, 0) + getattr(report, name)
                if report.claimed == 0:
                    return total
        finally:
            await web.aclose()
            await engine.dispose()

    return asyncio.run(main())


def sms_sender(standin: TencentSmsStandIn) -> SmsSender:
    return SmsSender(sms_provider(standin), linger_s=0.01)


def subscribe(
    client: TestClient[Any],
    receiver: WebPushReceiver,
    *places: Any,
    lang: str = "zh_CN",
    channel: str = "webpush",
) -> str:
    sub_id, sub = receiver.subscribe()
    body = {
        "channel": channel,
        "subscription": json.loads(sub),
        "lang": lang,
        "places": list(places),
    }
    r = client.post(API, json=body)
    assert r.status_code == 201, r.text
    return sub_id


def at(lon: float, lat: float) -> dict[str, float]:
    return {"lon": lon, "lat": lat}


def publish(
    client: TestClient[Any], auth: Any, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Draft as the dispatcher, publish as the chief (orange and red need a second person)."""
    if body is None:
        expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        body = f.alert(area=AREA, color="red", expires=expires)
    r = client.post("/api/v1/alerts", headers=auth("dispatcher"), json=body)
    assert r.status_code == 201, r.text
    published = client.post(f"/api/v1/alerts/{r.json()['id']}/publish", headers=auth("chief"))
    assert published.status_code == 200, published.text
    return published.json()
