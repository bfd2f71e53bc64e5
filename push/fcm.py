"""FCM HTTP v1 through the official firebase-admin SDK.

The SDK is synchronous (requests). `FcmSender.send` hands one blocking `messaging.send` to a
small pool of sender threads (`max_concurrency` of them); the SDK's `_MessagingService` for one
app keeps a single `requests` session, so every thread reuses pooled keep-alive connections.
Per-message `messaging.send` from threads over one pooled session is as fast as `send_each`
(which spins up a fresh `ThreadPoolExecutor` per call) and keeps the one-message-one-result shape
the outbox needs.

Where the CPU goes (tests/bench/bench_push.py, `make bench BENCH=push`): ~0.75 ms per message is
the SDK's own stack (requests, urllib3, http.client, message encoding), under the GIL, so more
threads do not send faster; a process sends at most ~1,000 messages/s. The pool exists to keep
the rest small: `anyio.to_thread.run_sync` cost ~0.1 ms per call (a cancel scope, a capacity
limiter, a queue.Queue hand-off and a loop wake-up per message); our threads take jobs from a
`SimpleQueue`, send back to back, and wake the event loop once per *batch* of finished sends.
For more than one core's worth of sending, run more processes (`liandong worker --processes N`).

Two SDK defaults are replaced on purpose:

- The SDK's HTTP adapter retries 500/503 up to four times with backoff, sleeping inside a worker
  thread and hiding the Retry-After from us, and it retries a POST after a read error, which can
  deliver twice. We mount an adapter that only retries a failed *connect* (nothing was sent) and
  leave every other retry to the outbox, which has the jitter, the Retry-After and the attempt
  budget.
- The send URL. `_MessagingService` keeps it in `_fcm_url`; tests point it at the loopback
  stand-in (`tests/peers/fcm_standin.py`) and use anonymous credentials, so nothing reaches
  Google. That attribute is private SDK API: `_point_at` checks it exists so an SDK upgrade that
  renames it fails loudly instead of silently sending to Google.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import firebase_admin
import requests
import requests.adapters
from firebase_admin import exceptions as fb_exc
from firebase_admin import messaging
from urllib3.util.retry import Retry

from push.base import (
    Channel,
    Delivered,
    DeliveryResult,
    PermanentFailure,
    PushMessage,
    RetryAfter,
    TransientFailure,
    parse_retry_after,
)

__all__ = ["FcmSender", "classify_fcm_error", "fcm_send_url", "firebase_app"]

log = logging.getLogger(__name__)

_FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE: Final = "type.googleapis.com/google.rpc.BadRequest"

# Retry only a failed connect (the request never left); read errors, 5xx and 429 go back to the
# outbox as results.
_CONNECT_ONLY_RETRY: Final = Retry(
    total=1,
    connect=1,
    read=0,
    status=0,
    redirect=0,
    other=0,
    allowed_methods=None,
    raise_on_status=False,
    respect_retry_after_header=False,
)


def fcm_send_url(base_url: str, project_id: str) -> str:
    """The FCM v1 send URL for `project_id` under `base_url` (e.g. the loopback stand-in)."""
    return f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"


def firebase_app(
    project_id: str,
    *,
    name: str,
    credential: Any = None,
    http_timeout: float = 10.0,
) -> firebase_admin.App:
    """Initialise (or return the existing) firebase-admin app called `name`.

    `credential=None` means *anonymous*: `google.auth.credentials.AnonymousCredentials`, which
    the SDK accepts (it wraps any google-auth credential) and which never fetches an OAuth token,
    so it adds no Authorization header and makes no network call. Use it only against the
    loopback stand-in; production passes `firebase_admin.credentials.Certificate(path)` or
    `ApplicationDefault()`.
    """
    try:
        return firebase_admin.get_app(name)
    except ValueError:
        pass  # not initialised yet: the SDK signals "no such app" with ValueError
    if credential is None:
        from google.auth.credentials import AnonymousCredentials

        credential = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return firebase_admin.initialize_app(
        credential,
        {"projectId": project_id, "httpTimeout": http_timeout},
        name=name,
    )


def _response_json(response: Any) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _is_invalid_token(exc: fb_exc.FirebaseError) -> bool:
    """True when an INVALID_ARGUMENT is about the registration token, not the payload.

    FCM answers a malformed or foreign token with `errorCode: INVALID_ARGUMENT` and the message
    "The registration token is not a valid FCM registration token"; a bad payload comes with a
    `google.rpc.BadRequest` naming another field. Only the token case may prune.
    """
    error = _response_json(exc.http_response).get("error", {})
    if not isinstance(error, dict):
        return False
    for detail in error.get("details", []) or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == _BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations", []) or []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return True
    message = str(error.get("message", ""))
    return "registration token" in message.lower()


def _retry_after_of(exc: fb_exc.FirebaseError) -> float | None:
    response = exc.http_response
    if response is None:
        return None
    return parse_retry_after(response.headers.get("Retry-After"))


def classify_fcm_error(exc: Exception) -> DeliveryResult:
    """Map an exception raised by `messaging.send` to a `DeliveryResult`.

    Promises (FCM v1 error codes, https://firebase.google.com/docs/cloud-messaging/error-codes):
    UNREGISTERED, SENDER_ID_MISMATCH and an invalid-token INVALID_ARGUMENT are dead tokens;
    any other INVALID_ARGUMENT is a permanent failure of the message; QUOTA_EXCEEDED (429) and
    UNAVAILABLE (503) become `RetryAfter` when the answer carries Retry-After, else transient;
    INTERNAL (500), timeouts, connection errors and auth/config errors are transient.
    """
    if isinstance(exc, messaging.UnregisteredError):
        return PermanentFailure(dead_token=True, code="UNREGISTERED", detail=str(exc))
    if isinstance(exc, messaging.SenderIdMismatchError):
        return PermanentFailure(dead_token=True, code="SENDER_ID_MISMATCH", detail=str(exc))
    if isinstance(exc, fb_exc.InvalidArgumentError):
        return PermanentFailure(
            dead_token=_is_invalid_token(exc), code="INVALID_ARGUMENT", detail=str(exc)
        )
    if isinstance(exc, fb_exc.ResourceExhaustedError | fb_exc.UnavailableError):
        code = "QUOTA_EXCEEDED" if isinstance(exc, fb_exc.ResourceExhaustedError) else "UNAVAILABLE"
        seconds = _retry_after_of(exc)
        if seconds is not None:
            return RetryAfter(seconds=seconds, code=code)
        # No HTTP answer at all (connection refused/reset) is reported by the SDK as UNAVAILABLE.
        return TransientFailure(code=code, detail=str(exc), ambiguous=exc.http_response is None)
    if isinstance(exc, fb_exc.DeadlineExceededError):
        return TransientFailure(code="DEADLINE_EXCEEDED", detail=str(exc), ambiguous=True)
    if isinstance(exc, fb_exc.FirebaseError):
        # INTERNAL, UNKNOWN, THIRD_PARTY_AUTH_ERROR, UNAUTHENTICATED, PERMISSION_DENIED...: either
        # FCM's trouble or our configuration; neither says the token is dead.
        return TransientFailure(code=str(exc.code).upper(), detail=str(exc))
    if isinstance(exc, requests.RequestException):
        return TransientFailure(code="NETWORK", detail=str(exc), ambiguous=True)
    raise TypeError(f"not an FCM send error: {exc!r}") from exc


_Send = Callable[[str, PushMessage], DeliveryResult]
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[DeliveryResult]", str, PushMessage]
_Outcome = tuple["asyncio.Future[DeliveryResult]", DeliveryResult | None, BaseException | None]


class _SendThreads:
    """Up to `size` daemon threads running `send(address, message)` for asyncio callers.

    A caller puts a job on one `SimpleQueue` and awaits a future; a thread that finishes a send
    takes the next job at once, without going through the event loop, and finished results are
    handed back to each loop in batches: one `call_soon_threadsafe` wakes the loop for every
    result that arrived since its last wake-up. Threads start on demand and end after
    `idle_seconds` without work, so a sender that is no longer used leaves no threads behind.
    """

    def __init__(self, size: int, send: _Send, *, idle_seconds: float = 10.0) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._send = send
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._alive = 0
        self._idle = 0
        self._queued = 0  # jobs counted in `run` and not yet taken by a thread
        self._finished: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}

    async def run(self, address: str, message: PushMessage) -> DeliveryResult:
        """Send in a pool thread; the send runs to completion even if the caller is cancelled
        (as `anyio.to_thread.run_sync` does by default), so its result is never half-known."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DeliveryResult] = loop.create_future()
        with self._lock:
            # Count the job before it is queued: a thread about to time out re-checks `_queued`
            # under this lock, so a job never waits with no thread left to take it. Start a
            # thread whenever waiting jobs outnumber idle threads (up to `size`).
            self._queued += 1
            start = self._queued > self._idle and self._alive < self._size
            if start:
                self._alive += 1
        self._jobs.put((loop, future, address, message))
        if start:
            threading.Thread(target=self._work, name="fcm-send", daemon=True).start()
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                loop, future, address, message = self._jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._queued == 0:
                        self._alive -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            try:
                outcome: _Outcome = (future, self._send(address, message), None)
            except BaseException as exc:  # handed to the awaiting task, which re-raises it
                outcome = (future, None, exc)
            self._hand_back(loop, outcome)

    def _hand_back(self, loop: asyncio.AbstractEventLoop, outcome: _Outcome) -> None:
        with self._lock:
            batch = self._finished.get(loop)
            if batch is not None:
                batch.append(outcome)  # a wake-up for this loop is already on its way
                return
            self._finished[loop] = [outcome]
        try:
            loop.call_soon_threadsafe(self._settle, loop)
        except RuntimeError:  # the loop was closed meanwhile: nobody is waiting any more
            with self._lock:
                self._finished.pop(loop, None)

    def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch = self._finished.pop(loop, [])
        for future, result, exc in batch:
            if future.cancelled():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]  # result is set when exc is None


class FcmSender:
    """`PushSender` for FCM HTTP v1 data messages through firebase-admin.

    One instance per process: it owns the SDK messaging service of `app` (one pooled session).
    `endpoint`, when given, replaces `https://fcm.googleapis.com` (tests: the loopback stand-in).
    `max_concurrency` (default 8, the best level in `make bench BENCH=push`) bounds both the
    sender threads and the HTTP connection pool; a handful is
    enough, since the GIL serialises the SDK's CPU work and only the network wait overlaps.
    `trust_env=False` stops requests reading proxy settings and .netrc from the environment.
    """

    channel = Channel.FCM

    def __init__(
        self,
        app: firebase_admin.App,
        *,
        endpoint: str | None = None,
        max_concurrency: int = 8,
        trust_env: bool = False,
    ) -> None:
        self._app = app
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._threads = _SendThreads(max_concurrency, self.send_sync)
        # Private SDK accessor: the public `messaging.send(app=...)` goes through the same object,
        # and we need it to repoint the URL and remount the adapter.
        service = messaging._get_messaging_service(app)
        base = endpoint.rstrip("/") if endpoint else "https://fcm.googleapis.com"
        if endpoint:
            self._point_at(service, fcm_send_url(base, app.project_id))
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4,
            pool_maxsize=max_concurrency,
            max_retries=_CONNECT_ONLY_RETRY,
        )
        parts = urlsplit(base)
        session = service._client.session
        session.mount(f"{parts.scheme}://{parts.netloc}", adapter)
        # requests re-reads proxy variables from os.environ on every request when trust_env is
        # on: ~0.4 ms of CPU per message, a third of our per-message cost. Egress proxies are
        # set explicitly (`session.proxies`) rather than inherited by accident.
        session.trust_env = trust_env
        self.send_url: str = service._fcm_url

    @staticmethod
    def _point_at(service: Any, url: str) -> None:
        if not isinstance(getattr(service, "_fcm_url", None), str):
            raise RuntimeError(
                "firebase_admin.messaging._MessagingService has no _fcm_url: the SDK changed; "
                "refusing to run with an endpoint override that would be ignored"
            )
        service._fcm_url = url

    @staticmethod
    def build_message(address: str, message: PushMessage) -> messaging.Message:
        """The SDK message for one device: data + Android priority/TTL/collapse key."""
        notification = None
        if message.title is not None or message.body is not None:
            notification = messaging.Notification(title=message.title, body=message.body)
        fcm_message = messaging.Message(
            data=dict(message.data),
            notification=notification,
            android=messaging.AndroidConfig(
                priority=message.priority,
                ttl=timedelta(seconds=message.ttl_seconds),
                collapse_key=message.collapse_key,
            ),
        )
        # firebase-admin 7.7 deprecates `token=` in favour of Firebase Installation IDs (`fid`)
        # and warns when the constructor gets one. Our Android app registers classic FCM
        # registration tokens, which FCM v1 still takes (the encoder sends `message.token`);
        # moving to FIDs is a phone-side change. Setting the attribute skips the warning without
        # `warnings.catch_warnings()`, which swaps process-wide filters and is not thread-safe.
        fcm_message.token = address
        return fcm_message

    def send_sync(self, address: str, message: PushMessage) -> DeliveryResult:
        """Blocking single attempt; see `PushSender.send` for the promises."""
        fcm_message = self.build_message(address, message)
        try:
            name = messaging.send(fcm_message, app=self._app)
        except (fb_exc.FirebaseError, requests.RequestException) as exc:
            result = classify_fcm_error(exc)
            log.debug("fcm send to %s...: %s", address[:12], result)
            return result
        return Delivered(provider_id=str(name))

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        """Send in a sender thread (at most `max_concurrency` at once); never blocks the event
        loop. On asyncio (the server, `liandong worker`) through the sender's own threads; on any
        other anyio backend through `anyio.to_thread`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return await anyio.to_thread.run_sync(
                self.send_sync, address, message, limiter=self._limiter
            )
        return await self._threads.run(address, message)
