"""The sync client's HTTP transport (httpx): msgpack bodies, gzip, bearer token, SSE wake-ups.

`HttpTransport` implements `sync.client.Transport`. Any failure to get an answer (connection
refused, timeout, a 5xx, a cut stream) becomes `TransportError`, so the client backs off and
re-sends the same batch later; the server deduplicates. 429/503 (the server shedding load)
become `ServerBusyError` with the answer's `Retry-After`, which the sender honours. HTTP 426
carries the `UpgradeRequired` answer, which the client turns into `UpgradeRequiredError`.

It also counts what crosses the socket (request line, headers and body as sent; status line,
headers and the body as received, compressed) for the benchmarks and the app's data usage.

Push and pull run a blocking `httpx.Client` in a worker thread (`asyncio.to_thread`): encoding,
the exchange, gunzip and decoding never hold up the event loop, so the UI stays live and the
sync client can apply one pull page (on the loop) while the next is on the wire
(`SyncClient.pull`). The "pull now" stream is long-lived and uses an `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from schemas.sync import (
    ExchangeReply,
    ExchangeRequest,
    PullReply,
    PullRequest,
    PushReply,
    PushRequest,
    exchange_reply_json,
    exchange_reply_msgpack,
    json_encoder,
    msgpack_encoder,
    pull_reply_json,
    pull_reply_msgpack,
    push_reply_json,
    push_reply_msgpack,
)
from sync.client import ExchangeUnsupportedError, TransportError

MSGPACK = "application/msgpack"
JSON = "application/json"

TokenSource = str | Callable[[], str]
#: statuses a server answers when it sheds load or throttles (with `Retry-After`)
BUSY = frozenset({429, 503})
EXCHANGE = "/api/v1/sync/exchange"


def verify_tls(url: str | httpx.URL) -> bool:
    """Whether a request to `url` is verified against the CA bundle: yes for https; for plain
    http (a test or intranet server) no TLS context is needed at all, and httpx otherwise loads
    the whole CA bundle (~50 ms of CPU on a PC, more on a phone) for connections that never use
    it. A redirect is never followed, so http cannot turn into https without verification."""
    return httpx.URL(url).scheme == "https"


KEEPALIVE_S = 4.0
"""How long the phone keeps an idle connection for its next request: a push then a pull, a
photo after its hazard, reuse it. Shorter than the server's (server/serving.py
`KEEP_ALIVE_S`, 5 s), so the server never closes a connection just as the phone reuses it
(httpx's default, 5 s, raced it). Longer was measured worse for the server under load."""
LIMITS = httpx.Limits(keepalive_expiry=KEEPALIVE_S)

_T = TypeVar("_T", bound=httpx.HTTPTransport | httpx.AsyncHTTPTransport)


class _ByScheme(Generic[_T]):
    """The plain transport at once; the verified one (its TLS context, the CA bundle) at the
    first request that `verify_tls` says needs it, never for a client that only speaks http."""

    def __init__(self, make: Callable[[bool], _T]) -> None:
        self._make = make
        self.plain = make(False)
        self.verified: _T | None = None
        self._lock = threading.Lock()  # a sync client is used from several worker threads

    def pick(self, request: httpx.Request) -> _T:
        if not verify_tls(request.url):
            return self.plain
        with self._lock:
            if self.verified is None:
                self.verified = self._make(True)
            return self.verified

    def built(self) -> list[_T]:
        return [self.plain] + ([self.verified] if self.verified is not None else [])


class TlsOnDemand(httpx.BaseTransport):
    """The transport of every blocking client the phone core builds (`http_client`)."""

    def __init__(self) -> None:
        self.parts = _ByScheme(lambda verify: httpx.HTTPTransport(verify=verify, limits=LIMITS))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.parts.pick(request).handle_request(request)

    def close(self) -> None:
        for part in self.parts.built():
            part.close()


class AsyncTlsOnDemand(httpx.AsyncBaseTransport):
    """`TlsOnDemand` for an `httpx.AsyncClient` (the "pull now" listener)."""

    def __init__(self) -> None:
        self.parts = _ByScheme(
            lambda verify: httpx.AsyncHTTPTransport(verify=verify, limits=LIMITS)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.parts.pick(request).handle_async_request(request)

    async def aclose(self) -> None:
        for part in self.parts.built():
            await part.aclose()


def http_client(timeout: float | httpx.Timeout) -> httpx.Client:
    """A blocking client as the phone core uses (sign-in, push/pull, photo upload): https
    verified against the CA bundle, loaded only when the first https request is made."""
    return httpx.Client(timeout=timeout, transport=TlsOnDemand())


def async_http_client(timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    """`http_client` for asyncio (the "pull now" listener)."""
    return httpx.AsyncClient(timeout=timeout, transport=AsyncTlsOnDemand())


class ServerBusyError(TransportError):
    """The server shed the request (429/503); `retry_after_s` is its `Retry-After`, if any.
    The sender waits at least that long before the next round (also after "send now")."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after(r: httpx.Response, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date, RFC 9110 §10.2.3), or None."""
    value = r.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def check_busy(r: httpx.Response, what: str) -> None:
    """Raise `ServerBusyError` when `r` says the server is shedding load."""
    if r.status_code in BUSY:
        raise ServerBusyError(f"{what}: HTTP {r.status_code}", retry_after(r))


class HttpTransport:
    """POST /api/v1/sync/push|pull|exchange against `base_url` (docs/sync-protocol.md §2)."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        fmt: str = "msgpack",
        gzip_requests: bool = True,
        gzip_min_bytes: int = 1024,
        timeout_s: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.fmt = fmt
        self.gzip_requests = gzip_requests
        self.gzip_min_bytes = gzip_min_bytes
        self._own = client is None
        self.client = client or http_client(timeout_s)
        self._events: httpx.AsyncClient | None = None
        self._counting = threading.Lock()
        self._timeout_s = timeout_s
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0

    @property
    def token(self) -> str:
        """The current bearer token."""
        return self._token if isinstance(self._token, str) else self._token()

    async def aclose(self) -> None:
        """Close the HTTP clients this transport made."""
        if self._events is not None:
            await self._events.aclose()
        if self._own:
            self.client.close()

    def _headers(self) -> dict[str, str]:
        ctype = MSGPACK if self.fmt == "msgpack" else JSON
        return {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": ctype,
            "Accept": ctype,
            "Accept-Encoding": "gzip",
        }

    async def _post(self, path: str, msg: Any, mp: Any, js: Any) -> Any:
        return await asyncio.to_thread(self._exchange, path, msg, mp, js)

    def _exchange(self, path: str, msg: Any, mp: Any, js: Any) -> Any:
        """One blocking POST and its decoded answer (runs in a worker thread)."""
        body = msgpack_encoder.encode(msg) if self.fmt == "msgpack" else json_encoder.encode(msg)
        headers = self._headers()
        if self.gzip_requests and len(body) >= self.gzip_min_bytes:
            body = gzip.compress(body, 5)
            headers["Content-Encoding"] = "gzip"
        try:
            r = self.client.post(self.base_url + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(f"{path}: {exc!r}") from exc
        self._count(r)
        check_busy(r, path)
        if path == EXCHANGE and r.status_code in (404, 405):  # a server older than the app
            raise ExchangeUnsupportedError(f"{path}: HTTP {r.status_code}")
        if r.status_code not in (200, 426):
            raise TransportError(f"{path}: HTTP {r.status_code}")
        try:
            if MSGPACK in r.headers.get("content-type", ""):
                return mp.decode(r.content)
            return js.decode(r.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TransportError(f"{path}: unreadable answer: {exc}") from exc

    def _count(self, r: httpx.Response) -> None:
        req = r.request
        line = len(f"{req.method} {req.url.raw_path.decode()} HTTP/1.1\r\n")
        sent = line + _headers_len(req.headers.raw) + len(req.content)
        status = len(f"HTTP/1.1 {r.status_code} {r.reason_phrase}\r\n")
        received = status + _headers_len(r.headers.raw) + r.num_bytes_downloaded
        with self._counting:  # exchanges may overlap (a pull page fetched ahead)
            self.requests += 1
            self.bytes_sent += sent
            self.bytes_received += received

    async def push(self, req: PushRequest) -> PushReply:
        """Send a push batch."""
        reply: PushReply = await self._post(
            "/api/v1/sync/push", req, push_reply_msgpack, push_reply_json
        )
        return reply

    async def pull(self, req: PullRequest) -> PullReply:
        """Send a pull."""
        reply: PullReply = await self._post(
            "/api/v1/sync/pull", req, pull_reply_msgpack, pull_reply_json
        )
        return reply

    async def exchange(self, req: ExchangeRequest) -> ExchangeReply:
        """Send a push and a pull in one round trip."""
        reply: ExchangeReply = await self._post(
            EXCHANGE, req, exchange_reply_msgpack, exchange_reply_json
        )
        return reply

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """Server-Sent Events from /api/v1/sync/events as (event, data); ends when the stream
        does. Raises TransportError when it cannot connect."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self._events is None:
            # Connect within the request timeout; then read for as long as the stream lasts.
            self._events = async_http_client(httpx.Timeout(self._timeout_s, read=None))
        try:
            async with self._events.stream(
                "GET", self.base_url + "/api/v1/sync/events", headers=headers, timeout=None
            ) as r:
                check_busy(r, "events")
                if r.status_code != 200:
                    raise TransportError(f"events: HTTP {r.status_code}")
                name, data = "message", list[str]()
                async for line in r.aiter_lines():
                    if line == "":
                        if data or name != "message":
                            yield name, "\n".join(data)
                        name, data = "message", []
                    elif line.startswith(":"):
                        continue
                    elif line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
        except httpx.HTTPError as exc:
            raise TransportError(f"events: {exc!r}") from exc


def _headers_len(raw: list[tuple[bytes, bytes]]) -> int:
    # "name: value\r\n" per header, then the blank line.
    return sum(len(k) + len(v) + 4 for k, v in raw) + 2
