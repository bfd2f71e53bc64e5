"""An FCM HTTP v1 stand-in on loopback.

It implements `POST /v1/projects/{project}/messages:send` the way FCM does, closely enough for
the real firebase-admin SDK to talk to it and to map its errors to the SDK's typed exceptions:

- the body must be `{"message": {...}, "validate_only"?: bool}`; the message must have exactly one
  of `token`, `topic`, `condition`, only known fields, `data` values that are strings and a valid
  `android.ttl` / `android.priority`; violations get FCM's 400 INVALID_ARGUMENT with a
  `google.rpc.BadRequest` detail;
- success answers `{"name": "projects/{project}/messages/{id}"}`;
- errors use FCM's JSON shape: `error.code`, `error.message`, `error.status` and a detail
  `{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": ...}`, which
  is what the SDK reads to raise `UnregisteredError`, `QuotaExceededError`, ...

Tests script answers per token (`script()`), read what arrived (`messages()`), and wait for a
count (`wait_for()`). The SDK's `send_each` posts every message to the same per-message URL
(firebase-admin 7.x has no batch endpoint any more), so this one route is all it needs.

Also runnable as a process (`python -m tests.peers.fcm_standin --port 0`), printing
`PORT <n>`; then `GET /_stats` returns the counters. The benchmark uses that so the stand-in does
not compete with the code under test for one GIL.

The HTTP side is a small HTTP/1.1 keep-alive server on an asyncio event loop in one background
thread (Content-Length bodies, pipelining, `Connection: close`, `Expect: 100-continue`), not
`http.server`: a thread per connection and `email`-based header parsing cost ~0.25 ms of CPU per
request, which on the benchmark's two cores was taken from the code under test. Real FCM does not
run on our machine, so its CPU is an artefact of the measurement; the validation and the answers
are the same code either way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.peers.http11 import LoopbackHttpServer, _Request

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[A-Za-z0-9_.:-]+)/messages:send$")
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
_MESSAGE_FIELDS = frozenset(
    {
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "fid",
        "topic",
        "condition",
    }
)
_TARGETS = ("token", "fid", "topic", "condition")


@dataclass(frozen=True)
class FcmReply:
    """One scripted FCM error answer."""

    http_status: int
    status: str
    message: str
    error_code: str | None = None
    retry_after: str | None = None
    extra_details: tuple[dict[str, Any], ...] = ()

    def body(self) -> dict[str, Any]:
        details: list[dict[str, Any]] = []
        if self.error_code is not None:
            details.append({"@type": FCM_ERROR_TYPE, "errorCode": self.error_code})
        details.extend(self.extra_details)
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "status": self.status,
        }
        if details:
            error["details"] = details
        return {"error": error}


# FCM's real answers for the cases the outbox must handle.
UNREGISTERED = FcmReply(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
SENDER_ID_MISMATCH = FcmReply(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
INVALID_TOKEN = FcmReply(
    400,
    "INVALID_ARGUMENT",
    "The registration token is not a valid FCM registration token",
    "INVALID_ARGUMENT",
)
INVALID_PAYLOAD = FcmReply(
    400,
    "INVALID_ARGUMENT",
    "Message is too big",
    "INVALID_ARGUMENT",
    extra_details=(
        {
            "@type": BAD_REQUEST_TYPE,
            "fieldViolations": [{"field": "message", "description": "Message is too big"}],
        },
    ),
)
INTERNAL = FcmReply(500, "INTERNAL", "Internal error encountered.", "INTERNAL")


def quota_exceeded(retry_after: str | None = "1") -> FcmReply:
    """429 QUOTA_EXCEEDED, optionally with a Retry-After header (seconds or an HTTP date)."""
    return FcmReply(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests'",
        "QUOTA_EXCEEDED",
        retry_after=retry_after,
    )


def unavailable(retry_after: str | None = "1") -> FcmReply:
    """503 UNAVAILABLE, optionally with a Retry-After header."""
    return FcmReply(
        503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE", retry_after
    )


@dataclass(frozen=True)
class ReceivedMessage:
    """A message FCM accepted: target token, the whole message JSON, and arrival time."""

    project: str
    token: str | None
    message: dict[str, Any]
    authorization: str | None
    at: float = field(default_factory=time.perf_counter)


class _Validation(Exception):
    def __init__(self, field_name: str, description: str) -> None:
        super().__init__(description)
        self.field_name = field_name
        self.description = description


def _validate(body: Any) -> tuple[dict[str, Any], bool]:
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise _Validation("message", "Request contains an invalid argument: message is required")
    unknown = set(body) - {"message", "validate_only"}
    if unknown:
        name = sorted(unknown)[0]
        raise _Validation(name, f'Invalid JSON payload received. Unknown name "{name}"')
    message: dict[str, Any] = body["message"]
    unknown = set(message) - _MESSAGE_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise _Validation(
            f"message.{name}", f'Invalid JSON payload received. Unknown name "{name}"'
        )
    targets = [t for t in _TARGETS if message.get(t)]
    if len(targets) != 1:
        raise _Validation(
            "message", "Exactly one of fid, token, topic or condition must be specified"
        )
    data = message.get("data", {})
    if not isinstance(data, dict):
        raise _Validation("message.data", "Invalid value at 'message.data'")
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            raise _Validation(
                f"message.data[{index}].value",
                f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value!r}",
            )
        if key.startswith(("google", "gcm")) or key in {"from", "message_type"}:
            raise _Validation(f"message.data[{index}].key", f"Invalid data key {key!r}")
    android = message.get("android", {})
    if not isinstance(android, dict):
        raise _Validation("message.android", "Invalid value at 'message.android'")
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not _TTL.match(ttl)):
        raise _Validation("message.android.ttl", f"Invalid value at 'message.android.ttl', {ttl}")
    priority = android.get("priority")
    if priority is not None and str(priority).upper() not in {"NORMAL", "HIGH"}:
        raise _Validation(
            "message.android.priority", f"Invalid value at 'message.android.priority', {priority}"
        )
    return message, bool(body.get("validate_only", False))


class FcmStandIn(LoopbackHttpServer):
    """The stand-in server. Use as a context manager or call `start()` / `stop()`."""

    server_name = b"fcm-standin"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        super().__init__(host=host, port=port)
        self._record = record
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._scripts: dict[str, deque[FcmReply]] = {}
        self._always: dict[str, FcmReply] = {}
        self._ids = itertools.count(1)
        self.request_count = 0
        self.accepted_count = 0
        self.first_request_at: float | None = None

    @property
    def base_url(self) -> str:
        """What `FcmSender(endpoint=...)` takes."""
        return f"http://{self._host}:{self.port}"

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return FcmReply(status, "INVALID_ARGUMENT", message).body()

    # -- scripting and inspection ----------------------------------------------------------------

    def script(self, token: str, *replies: FcmReply) -> None:
        """Answer the next len(replies) requests for `token` with these errors, then accept."""
        with self._lock:
            self._scripts.setdefault(token, deque()).extend(replies)

    def always(self, token: str, reply: FcmReply) -> None:
        """Answer every request for `token` with `reply` (a dead token)."""
        with self._lock:
            self._always[token] = reply

    def messages(self) -> list[ReceivedMessage]:
        """A copy of every accepted (recorded) message, in arrival order."""
        with self._lock:
            return list(self._messages)

    def tokens(self) -> list[str | None]:
        return [m.token for m in self.messages()]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` messages were accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.accepted_count < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def reset(self) -> None:
        """Back to a fresh stand-in: no messages, scripts or counts; message ids from 0:1."""
        with self._lock:
            self._ids = itertools.count(1)
            self._messages.clear()
            self._scripts.clear()
            self._always.clear()
            self.request_count = 0
            self.accepted_count = 0
            self.first_request_at = None

    # -- request handling (called on the server's loop thread) -------------------------------------

    def _respond(self, request: _Request, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Route one request: the FCM send route, `GET /_stats`, else FCM-style errors."""
        method = request.method
        if method == "GET":
            if request.target == "/_stats":
                return 200, self.stats(), {}
            return 404, FcmReply(404, "NOT_FOUND", "Not found").body(), {}
        if method != "POST":
            return 501, FcmReply(501, "UNIMPLEMENTED", f"Unsupported method {method!r}").body(), {}
        match = _SEND_PATH.match(request.target)
        if match is None:
            return 404, FcmReply(404, "NOT_FOUND", "Not found").body(), {}
        try:
            body = json.loads(raw)
        except ValueError:
            reply = FcmReply(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
            return reply.http_status, reply.body(), {}
        return self._handle(match["project"], body, request.headers.get("authorization"))

    def _handle(
        self, project: str, body: Any, authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.request_count += 1
            if self.first_request_at is None:
                self.first_request_at = time.perf_counter()
        try:
            message, validate_only = _validate(body)
        except _Validation as exc:
            reply = FcmReply(
                400,
                "INVALID_ARGUMENT",
                exc.description,
                extra_details=(
                    {
                        "@type": BAD_REQUEST_TYPE,
                        "fieldViolations": [
                            {"field": exc.field_name, "description": exc.description}
                        ],
                    },
                ),
            )
            return reply.http_status, reply.body(), {}
        token = message.get("token") or message.get("fid")
        with self._lock:
            scripted: FcmReply | None = None
            if isinstance(token, str):
                scripted = self._always.get(token)
                queue = self._scripts.get(token)
                if scripted is None and queue:
                    scripted = queue.popleft()
            if scripted is not None:
                headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
                return scripted.http_status, scripted.body(), headers
            name = f"projects/{project}/messages/0:{next(self._ids)}"
            if not validate_only:
                self.accepted_count += 1
                if self._record:
                    self._messages.append(ReceivedMessage(project, token, message, authorization))
                self._lock.notify_all()
        return 200, {"name": name}, {}

    def stats(self) -> dict[str, Any]:
        """The counters, and the CPU time of the process serving them (user + system): what
        the benchmark charges to the stand-in when it runs as its own process."""
        with self._lock:
            return {
                "request_count": self.request_count,
                "accepted_count": self.accepted_count,
                "first_request_at": self.first_request_at,
                "process_cpu_s": time.process_time(),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description="FCM HTTP v1 stand-in on loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="count only, keep no messages")
    args = parser.parse_args()
    standin = FcmStandIn(port=args.port, record=not args.no_record).start()
    print(f"PORT {standin.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
