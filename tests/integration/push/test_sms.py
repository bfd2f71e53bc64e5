"""SMS through the real Tencent Cloud SDK against a loopback stand-in that checks its signature."""

from __future__ import annotations

import json

import anyio
import pytest

from push.base import Delivered, DeliveryResult, PermanentFailure, PushMessage, RetryAfter
from push.sms import SmsSender, TencentSms
from tests.peers.sms_standin import TencentSmsStandIn

SECRET_ID, SECRET_KEY = "AKIDtest", "test-secret-key"
WARNING = PushMessage(
    body="暴雨红色预警",
    data={
        "event_id": "alert:1",
        "sms_template": "warning",
        "sms_params": json.dumps(["红色预警", "暴雨", "转移"]),
    },
)


@pytest.fixture
def standin() -> TencentSmsStandIn:
    with TencentSmsStandIn(secret_id=SECRET_ID, secret_key=SECRET_KEY) as s:
        yield s


def provider(standin: TencentSmsStandIn, secret_key: str = SECRET_KEY) -> TencentSms:
    return TencentSms(
        secret_id=SECRET_ID, secret_key=secret_key, app_id="1400000000", sign_name="联动预警",
        templates={"warning": "100001", "code": "100002"}, endpoint=standin.endpoint, scheme="http",
    )  # fmt: skip


def send_many(
    sender: SmsSender, numbers: list[str], message: PushMessage = WARNING
) -> list[DeliveryResult]:
    async def main() -> list[DeliveryResult]:
        results: list[DeliveryResult] = [Delivered()] * len(numbers)

        async def one(i: int) -> None:
            results[i] = await sender.send(numbers[i], message)

        async with anyio.create_task_group() as tg:
            for i in range(len(numbers)):
                tg.start_soon(one, i)
        return results

    return anyio.run(main)


def test_concurrent_sends_become_batches_of_at_most_200(standin: TencentSmsStandIn) -> None:
    numbers = [f"+86138{n:08d}" for n in range(450)]
    sender = SmsSender(provider(standin), linger_s=0.05)
    results = send_many(sender, numbers)
    assert all(isinstance(r, Delivered) and r.provider_id for r in results)
    # The batches go out from worker threads: the stand-in may receive them in any order.
    sizes = sorted(len(r.numbers) for r in standin.requests)
    assert sizes == [50, 200, 200] and sender.requests == 3
    assert sorted(standin.numbers()) == sorted(numbers)
    assert all(
        r.template_id == "100001" and r.params == ["红色预警", "暴雨", "转移"]
        for r in standin.requests
    )
    assert standin.refusals == []


def test_a_dead_number_is_reported_per_number(standin: TencentSmsStandIn) -> None:
    standin.script("+8613800000002", "InvalidParameterValue.IncorrectPhoneNumber")
    standin.script("+8613800000003", "LimitExceeded.PhoneNumberThirtySecondLimit")
    results = send_many(SmsSender(provider(standin)), [f"+861380000000{n}" for n in range(1, 4)])
    assert isinstance(results[0], Delivered)
    assert isinstance(results[1], PermanentFailure) and results[1].dead_token
    assert results[2] == RetryAfter(30.0, "LimitExceeded.PhoneNumberThirtySecondLimit")


def test_a_wrong_key_is_refused_by_the_signature_check(standin: TencentSmsStandIn) -> None:
    [result] = send_many(SmsSender(provider(standin, "not-the-key")), ["+8613800000001"])
    assert not isinstance(result, Delivered)
    assert standin.refusals == ["AuthFailure.SignatureFailure"] and standin.requests == []


def test_bad_parameters_are_refused_before_any_request(standin: TencentSmsStandIn) -> None:
    bad = PushMessage(data={"sms_template": "warning", "sms_params": '{"not": "a list"}'})
    [result] = send_many(SmsSender(provider(standin)), ["+8613800000001"], bad)
    assert isinstance(result, PermanentFailure) and result.code == "BAD_SMS_PARAMS"
    assert standin.requests == []
