"""SmsSender's own bookkeeping: a closing sender sends what lingers and waits for batches under
way (their tasks are held, not left to the loop's weak references). The provider here is a
stand-in of our `SmsProvider` interface that blocks until released; the real Tencent adapter
against its loopback stand-in is tests/integration/push/test_sms.py."""

from __future__ import annotations

import asyncio
import threading

from push.base import Delivered, DeliveryResult, PushMessage
from push.sms import SmsBatch, SmsSender


class HeldProvider:
    max_batch = 200

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[SmsBatch] = []

    def send_batch(self, batch: SmsBatch) -> list[DeliveryResult]:
        self.release.wait(5)
        self.batches.append(batch)
        return [Delivered(provider_id=n) for n in batch.numbers]


MESSAGE = PushMessage(data={"sms_template": "warning", "sms_params": '["红色预警"]'})


def test_aclose_sends_what_lingers_and_waits_for_batches_under_way() -> None:
    provider = HeldProvider()

    async def main() -> None:
        sender = SmsSender(provider, linger_s=60)  # would linger for a minute
        sends = [asyncio.create_task(sender.send(f"+861390000000{i}", MESSAGE)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(sender.aclose())
        await asyncio.sleep(0.05)
        assert not closing.done()  # the batch is in the provider's hands
        provider.release.set()
        await asyncio.wait_for(closing, 5)
        assert [r.provider_id for r in await asyncio.gather(*sends)] == [  # type: ignore[union-attr]
            "+8613900000001",
            "+8613900000002",
        ]

    asyncio.run(main())
    assert len(provider.batches) == 1
