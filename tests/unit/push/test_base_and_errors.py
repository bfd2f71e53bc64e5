"""Provider answer classification: FCM exceptions, Web Push statuses, Retry-After parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import msgspec
import pytest
import requests
from firebase_admin import exceptions as fb_exc
from firebase_admin import messaging

from push.base import (
    Delivered,
    PermanentFailure,
    PushMessage,
    RetryAfter,
    TransientFailure,
    parse_retry_after,
)
from push.fcm import classify_fcm_error
from push.webpush import classify_webpush_status

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def _response(status: int, body: dict[str, object], headers: dict[str, str] | None = None):
    # A real requests.Response, as the SDK attaches to its exceptions.
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update(headers or {})
    return response


def _fcm_body(status: str, message: str, code: str | None, extra=()) -> dict[str, object]:
    details = [{"@type": FCM_ERROR, "errorCode": code}] if code else []
    details.extend(extra)
    return {"error": {"code": 400, "message": message, "status": status, "details": details}}


def test_retry_after_forms() -> None:
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(90.0)
    past = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_push_message_round_trips_as_json_and_refuses_non_string_data() -> None:
    message = PushMessage(data={"event_id": "e1"}, title="t", collapse_key="k", ttl_seconds=0)
    raw = msgspec.json.encode(message)
    assert msgspec.json.decode(raw, type=PushMessage) == message
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"data": {"n": 1}}', type=PushMessage)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"ttl_seconds": -1}', type=PushMessage)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            messaging.UnregisteredError("gone"),
            PermanentFailure(dead_token=True, code="UNREGISTERED", detail="gone"),
        ),
        (
            messaging.SenderIdMismatchError("other sender"),
            PermanentFailure(dead_token=True, code="SENDER_ID_MISMATCH", detail="other sender"),
        ),
        (
            fb_exc.InternalError("boom"),
            TransientFailure(code="INTERNAL", detail="boom"),
        ),
        (
            fb_exc.DeadlineExceededError("slow"),
            TransientFailure(code="DEADLINE_EXCEEDED", detail="slow", ambiguous=True),
        ),
        (
            fb_exc.UnauthenticatedError("bad creds"),
            TransientFailure(code="UNAUTHENTICATED", detail="bad creds"),
        ),
    ],
)
def test_fcm_codes(exc: Exception, expected: object) -> None:
    assert classify_fcm_error(exc) == expected


def test_invalid_argument_prunes_only_for_the_token() -> None:
    token_msg = "The registration token is not a valid FCM registration token"
    bad_token = fb_exc.InvalidArgumentError(
        token_msg,
        http_response=_response(400, _fcm_body("INVALID_ARGUMENT", token_msg, "INVALID_ARGUMENT")),
    )
    result = classify_fcm_error(bad_token)
    assert isinstance(result, PermanentFailure) and result.dead_token

    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.token", "description": "Invalid"}],
    }
    by_field = fb_exc.InvalidArgumentError(
        "x", http_response=_response(400, _fcm_body("INVALID_ARGUMENT", "x", None, [violation]))
    )
    result = classify_fcm_error(by_field)
    assert isinstance(result, PermanentFailure) and result.dead_token

    payload = fb_exc.InvalidArgumentError(
        "too big",
        http_response=_response(
            400, _fcm_body("INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT")
        ),
    )
    result = classify_fcm_error(payload)
    assert isinstance(result, PermanentFailure) and not result.dead_token


def test_429_and_503_honour_retry_after_or_fall_back_to_backoff() -> None:
    quota = messaging.QuotaExceededError(
        "q", http_response=_response(429, {}, {"Retry-After": "30"})
    )
    assert classify_fcm_error(quota) == RetryAfter(seconds=30.0, code="QUOTA_EXCEEDED")
    busy = fb_exc.UnavailableError("u", http_response=_response(503, {}, {"Retry-After": "5"}))
    assert classify_fcm_error(busy) == RetryAfter(seconds=5.0, code="UNAVAILABLE")
    bare = messaging.QuotaExceededError("q", http_response=_response(429, {}))
    assert classify_fcm_error(bare) == TransientFailure(code="QUOTA_EXCEEDED", detail="q")
    # A connection failure is reported by the SDK as UNAVAILABLE without a response.
    no_answer = fb_exc.UnavailableError("refused")
    result = classify_fcm_error(no_answer)
    assert isinstance(result, TransientFailure) and result.ambiguous


def test_non_fcm_exception_is_a_bug_not_a_result() -> None:
    with pytest.raises(TypeError):
        classify_fcm_error(KeyError("x"))


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (201, None, Delivered()),
        (404, None, PermanentFailure(dead_token=True, code="HTTP_404")),
        (410, None, PermanentFailure(dead_token=True, code="HTTP_410")),
        (413, None, PermanentFailure(dead_token=False, code="HTTP_413")),
        (403, None, PermanentFailure(dead_token=False, code="HTTP_403")),
        (429, "12", RetryAfter(seconds=12.0, code="HTTP_429")),
        (429, None, TransientFailure(code="HTTP_429")),
        (503, "3", RetryAfter(seconds=3.0, code="HTTP_503")),
        (500, None, TransientFailure(code="HTTP_500")),
        (None, None, TransientFailure(code="NETWORK", ambiguous=True)),
    ],
)
def test_webpush_statuses(status: int | None, retry_after: str | None, expected: object) -> None:
    assert classify_webpush_status(status, retry_after) == expected
