"""SMS: a provider interface and a Tencent Cloud SMS adapter that batches up to 200 numbers.

An SMS is a `PushMessage` to a phone number (E.164). The text is a provider-approved template
(mainland Chinese SMS must be), chosen by `data["sms_template"]` (`"code"`, `"warning"`) and
filled with `data["sms_params"]` (a JSON list of strings). `SmsSender` is a `PushSender`, so
SMS goes through the same outbox as Web Push and FCM (retries, dead numbers, the delivery
report); underneath it collects the concurrent sends of the outbox's lanes into one provider
request per template and parameters, at most `max_batch` numbers (Tencent: 200, Aliyun: 1,000),
waiting at most `linger_s` for a batch to fill.

`SmsProvider` is what an adapter implements: one request for many numbers, a result per number.
`TencentSms` is the adapter over `tencentcloud-sdk-python-sms` (API 2021-01-11 `SendSms`);
`endpoint`/`scheme` point the real SDK at a loopback stand-in in tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio.to_thread

from push.base import (
    Channel,
    Delivered,
    DeliveryResult,
    PermanentFailure,
    PushMessage,
    RetryAfter,
    TransientFailure,
)

__all__ = ["SmsBatch", "SmsProvider", "SmsSender", "TencentSms", "classify_tencent_code"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmsBatch:
    """One provider request: the same template and parameters to many numbers."""

    template: str
    params: tuple[str, ...]
    numbers: tuple[str, ...]


class SmsProvider(Protocol):
    """Sends one batch; returns a result per number (same order). Blocking; called in a thread.

    Never raises for what the provider answered or for a network failure.
    """

    max_batch: int

    def send_batch(self, batch: SmsBatch) -> list[DeliveryResult]:
        """Send `batch.template` with `batch.params` to every number of the batch."""
        ...


# Tencent Cloud SMS answer codes (per number, or for the whole request).
_DEAD_NUMBER = frozenset(
    {
        "InvalidParameterValue.IncorrectPhoneNumber",
        "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
        "FailedOperation.PhoneNumberInBlacklist",
        "FailedOperation.PhoneNumberOnBlacklist",
    }
)
_SLOW_DOWN = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": 6 * 3600.0,
    "LimitExceeded.PhoneNumberDailyLimit": 6 * 3600.0,
    "RequestLimitExceeded": 1.0,
    "LimitExceeded.DeliveryFrequencyLimit": 30.0,
}


def classify_tencent_code(code: str, message: str = "") -> DeliveryResult:
    """Map a Tencent Cloud SMS code to a `DeliveryResult` ("Ok" is delivered to the carrier)."""
    if code == "Ok":
        return Delivered()
    if code in _DEAD_NUMBER:
        return PermanentFailure(dead_token=True, code=code, detail=message)
    if code in _SLOW_DOWN:
        return RetryAfter(seconds=_SLOW_DOWN[code], code=code)
    if code.startswith(("InvalidParameter", "MissingParameter", "UnsupportedOperation")):
        return PermanentFailure(dead_token=False, code=code, detail=message)
    return TransientFailure(code=code or "SMS_ERROR", detail=message)


class TencentSms:
    """`SmsProvider` over the Tencent Cloud SMS SDK (`SendSms`, ≤ 200 numbers a request)."""

    max_batch = 200

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        app_id: str,
        sign_name: str,
        templates: Mapping[str, str],
        region: str = "ap-guangzhou",
        endpoint: str | None = None,
        scheme: str = "https",
        timeout_s: int = 10,
    ) -> None:
        from tencentcloud.common import credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.sms.v20210111 import sms_client

        http = HttpProfile(protocol=scheme, endpoint=endpoint or "sms.tencentcloudapi.com")
        http.reqTimeout = timeout_s
        http.keepAlive = True
        self._client = sms_client.SmsClient(
            credential.Credential(secret_id, secret_key), region, ClientProfile(httpProfile=http)
        )
        self._app_id = app_id
        self._sign = sign_name
        self._templates = dict(templates)

    def send_batch(self, batch: SmsBatch) -> list[DeliveryResult]:
        """One `SendSms` request; a result per number in the batch's order."""
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
            TencentCloudSDKException,
        )
        from tencentcloud.sms.v20210111 import models

        template = self._templates.get(batch.template)
        if template is None:
            failure = PermanentFailure(False, "NO_TEMPLATE", f"no template for {batch.template}")
            return [failure] * len(batch.numbers)
        request = models.SendSmsRequest()
        request.PhoneNumberSet = list(batch.numbers)
        request.SmsSdkAppId = self._app_id
        request.SignName = self._sign
        request.TemplateId = template
        request.TemplateParamSet = list(batch.params)
        try:
            response = self._client.SendSms(request)
        except TencentCloudSDKException as exc:
            code = str(exc.get_code() or "")
            if code.startswith("ClientNetworkError") or code == "ClientError":
                result: DeliveryResult = TransientFailure("NETWORK", str(exc), ambiguous=True)
            else:
                result = classify_tencent_code(code, str(exc.get_message()))
                if isinstance(result, PermanentFailure):  # the request, not a number, was bad
                    result = PermanentFailure(False, result.code, result.detail)
            return [result] * len(batch.numbers)
        by_number: dict[str, DeliveryResult] = {}
        for status in response.SendStatusSet or []:
            result = classify_tencent_code(str(status.Code), str(status.Message or ""))
            if isinstance(result, Delivered):
                result = Delivered(provider_id=status.SerialNo)
            by_number[str(status.PhoneNumber)] = result
        missing = TransientFailure("NO_STATUS", "the answer named no status for this number")
        return [by_number.get(n, missing) for n in batch.numbers]


@dataclass
class _Pending:
    numbers: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[DeliveryResult]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class SmsSender:
    """`PushSender` for SMS: the outbox's concurrent sends become provider batches.

    Sends with the same template and parameters that arrive within `linger_s` of the first
    (or until `provider.max_batch` numbers) go out as one request, in a worker thread (the SDKs
    are blocking). Each caller gets its own number's result.
    """

    channel = Channel.SMS

    def __init__(self, provider: SmsProvider, *, linger_s: float = 0.02) -> None:
        self._provider = provider
        self._linger_s = linger_s
        self._pending: dict[tuple[str, tuple[str, ...]], _Pending] = {}
        # Batches being sent: the loop keeps only weak references to tasks, so a task nobody
        # holds may be collected mid-send; `aclose` awaits them.
        self._running: set[asyncio.Task[None]] = set()
        self.requests = 0  # provider requests made (tests prove the batching)

    @staticmethod
    def template_of(message: PushMessage) -> tuple[str, tuple[str, ...]]:
        """(template key, parameters) of a message; a bad `sms_params` is a ValueError."""
        template = message.data.get("sms_template", "warning")
        params = json.loads(message.data.get("sms_params", "[]"))
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise ValueError("sms_params must be a JSON list of strings")
        return template, tuple(params)

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        """Join (or start) the batch for this message's template and wait for its result."""
        try:
            key = self.template_of(message)
        except ValueError as exc:
            return PermanentFailure(dead_token=False, code="BAD_SMS_PARAMS", detail=str(exc))
        loop = asyncio.get_running_loop()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
            pending.timer = loop.call_later(self._linger_s, self._flush, key)
        waiter: asyncio.Future[DeliveryResult] = loop.create_future()
        pending.numbers.append(address)
        pending.waiters.append(waiter)
        if len(pending.numbers) >= self._provider.max_batch:
            self._flush(key)
        return await waiter

    def _flush(self, key: tuple[str, tuple[str, ...]]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        batch = SmsBatch(key[0], key[1], tuple(pending.numbers))
        self.requests += 1
        task = asyncio.get_running_loop().create_task(self._run(batch, pending.waiters))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, batch: SmsBatch, waiters: Sequence[asyncio.Future[DeliveryResult]]
    ) -> None:
        try:
            results = await anyio.to_thread.run_sync(self._provider.send_batch, batch)
        except Exception as exc:  # an adapter bug must not leave the lanes waiting forever
            log.exception("SMS provider raised")
            results = [TransientFailure("SENDER_ERROR", repr(exc))] * len(waiters)
        for waiter, result in zip(waiters, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)

    async def aclose(self) -> None:
        """Send the batches still lingering and wait for every batch under way, so no caller is
        left waiting (nothing pooled to close: the SDK keeps its own session)."""
        for key in list(self._pending):
            self._flush(key)
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
