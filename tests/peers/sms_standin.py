"""Tencent Cloud SMS (API 2021-01-11 `SendSms`) on loopback, for the real SDK to talk to.

The real `tencentcloud-sdk-python-sms` client is pointed here (`HttpProfile(protocol="http",
endpoint="127.0.0.1:PORT")`). The stand-in checks what Tencent checks first:

- `X-TC-Action: SendSms`, `X-TC-Version: 2021-01-11`, a JSON body;
- the TC3-HMAC-SHA256 signature, recomputed with the secret key it was started with (a wrong
  key or a tampered body is `AuthFailure.SignatureFailure`);
- `SmsSdkAppId`, `SignName`, `TemplateId` present; 1-200 numbers in `PhoneNumberSet`
  (more is `LimitExceeded.PhoneNumberCountLimit`), each E.164.

Success answers a `SendStatusSet` entry per number, `Code: "Ok"` unless a test scripted a code
for that number (`script(number, code)`), e.g. `InvalidParameterValue.IncorrectPhoneNumber`.
`requests` records each accepted request's numbers, template and parameters.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.peers.http11 import LoopbackHttpServer, _Request

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MAX_NUMBERS = 200


@dataclass(frozen=True)
class SmsRequest:
    numbers: list[str]
    template_id: str
    params: list[str]
    sign: str
    app_id: str


def _signature(secret_key: str, date: str, string_to_sign: str) -> str:
    key = ("TC3" + secret_key).encode()
    for part in (date, "sms", "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class TencentSmsStandIn(LoopbackHttpServer):
    """Start/stop (or `with`); `endpoint` is what the SDK's HttpProfile takes."""

    server_name = b"tencent-sms-standin"

    def __init__(self, *, secret_id: str, secret_key: str, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self._scripted: dict[str, str] = {}
        self._serial = itertools.count(1)
        self.requests: list[SmsRequest] = []
        self.refusals: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"{self._host}:{self.port}"

    def script(self, number: str, code: str) -> None:
        """Answer `code` for `number` in every later request."""
        with self._lock:
            self._scripted[number] = code

    def numbers(self) -> list[str]:
        """Every number an accepted request carried, in order."""
        with self._lock:
            return [n for r in self.requests for n in r.numbers]

    def _error(self, code: str, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.refusals.append(code)
        body = {
            "Response": {
                "Error": {"Code": code, "Message": message},
                "RequestId": str(uuid.uuid4()),
            }
        }
        return 200, body, {}

    def _check_signature(self, request: _Request, raw: bytes) -> str | None:
        headers = request.headers
        auth = headers.get("authorization", "")
        match = re.match(
            r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
            r"SignedHeaders=content-type;host, Signature=([0-9a-f]{64})$",
            auth,
        )
        if match is None:
            return "malformed Authorization"
        secret_id, date, signature = match.groups()
        if secret_id != self._secret_id:
            return "unknown SecretId"
        timestamp = headers.get("x-tc-timestamp", "")
        if not timestamp.isdigit():
            return "missing X-TC-Timestamp"
        if datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d") != date:
            return "date does not match the timestamp"
        canonical = "\n".join(
            [
                "POST",
                "/",
                "",
                f"content-type:{headers.get('content-type', '')}\nhost:{headers.get('host', '')}\n",
                "content-type;host",
                hashlib.sha256(raw).hexdigest(),
            ]
        )
        to_sign = "\n".join(
            [
                "TC3-HMAC-SHA256",
                timestamp,
                f"{date}/sms/tc3_request",
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        expected = _signature(self._secret_key, date, to_sign)
        return None if hmac.compare_digest(expected, signature) else "signature mismatch"

    def _respond(self, request: _Request, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        if request.method != "POST" or request.target != "/":
            return 404, {}, {}
        if request.headers.get("x-tc-action") != "SendSms":
            return self._error("InvalidAction", "only SendSms here")
        if request.headers.get("x-tc-version") != "2021-01-11":
            return self._error("InvalidParameter.Version", "API version 2021-01-11 only")
        refused = self._check_signature(request, raw)
        if refused is not None:
            return self._error("AuthFailure.SignatureFailure", refused)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error("InvalidParameter", "body is not JSON")
        numbers = body.get("PhoneNumberSet") or []
        for name in ("SmsSdkAppId", "SignName", "TemplateId"):
            if not body.get(name):
                return self._error("MissingParameter", f"{name} is required")
        if not numbers:
            return self._error("MissingParameter", "PhoneNumberSet is required")
        if len(numbers) > MAX_NUMBERS:
            return self._error("LimitExceeded.PhoneNumberCountLimit", "at most 200 numbers")
        statuses = []
        with self._lock:
            self.requests.append(
                SmsRequest(
                    numbers=list(numbers),
                    template_id=body["TemplateId"],
                    params=list(body.get("TemplateParamSet") or []),
                    sign=body["SignName"],
                    app_id=body["SmsSdkAppId"],
                )
            )
            for number in numbers:
                code = self._scripted.get(number, "Ok")
                if not _E164.match(number):
                    code = "InvalidParameterValue.IncorrectPhoneNumber"
                statuses.append(
                    {
                        "SerialNo": f"2433:{next(self._serial)}" if code == "Ok" else "",
                        "PhoneNumber": number,
                        "Fee": 1 if code == "Ok" else 0,
                        "SessionContext": "",
                        "Code": code,
                        "Message": "send success" if code == "Ok" else code,
                        "IsoCode": "CN",
                    }
                )
        return 200, {"Response": {"SendStatusSet": statuses, "RequestId": str(uuid.uuid4())}}, {}
