"""Drive a published warning through the real outbox to loopback push services and SMS."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from push.base import Channel, PushSender
from push.outbox import OutboxWorker
from push.sms import SmsSender, TencentSms
from push.webpush import WebPushSender
from server.db import make_engine, make_sessionmaker
from server.outbox import SqlOutboxStore
from tests.conftest import TEST_VAPID_PRIVATE_KEY
from tests.peers.sms_standin import TencentSmsStandIn

SMS_ID, SMS_KEY = "AKIDresidents", "residents-sms-key"


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
