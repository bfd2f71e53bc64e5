"""The sync client the phone runs: push the outbox, pull every scope, repeat with backoff.

The transport is a Protocol so tests plug the in-memory server in-process and the app plugs
HTTP (mobile/core). The client never imports a UI: the app listens to `SyncEvent`s through the
`on_event` callback (Electrum's core/GUI split).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import msgspec

from schemas.sync import (
    SCHEMA_VERSION,
    ExchangeReply,
    ExchangeRequest,
    ExchangeResponse,
    PullReply,
    PullRequest,
    PullResponse,
    PushReply,
    PushRequest,
    PushResponse,
)
from sync.store import ClientStore, PullReport


class Transport(Protocol):
    """How requests reach the server. Raise `TransportError` (or OSError) when they don't."""

    async def push(self, req: PushRequest) -> PushReply:
        """Send a push; return the server's answer."""
        ...

    async def pull(self, req: PullRequest) -> PullReply:
        """Send a pull; return the server's answer."""
        ...


class ExchangeTransport(Transport, Protocol):
    """A transport that can also send a push and a pull in one round trip."""

    async def exchange(self, req: ExchangeRequest) -> ExchangeReply:
        """Send both; return the server's two answers. Raise `ExchangeUnsupportedError` when
        the server has no exchange (one older than the client)."""
        ...


class TransportError(Exception):
    """The request or its answer was lost; the client retries later.

    `retry_after_s` is set when the server answered but shed the request (503 or 429 with
    `Retry-After`): the client waits at least that long, whatever its backoff says.
    """

    retry_after_s: float | None = None


class ExchangeUnsupportedError(TransportError):
    """The server does not know `/sync/exchange`: the client pushes and pulls separately."""


class UpgradeRequiredError(Exception):
    """The server needs a newer app; syncing stops until the app is upgraded."""

    def __init__(self, min_version: int, message: str) -> None:
        super().__init__(message or f"schema {min_version} required")
        self.min_version = min_version


class EventKind(enum.StrEnum):
    """What a `SyncEvent` reports."""

    STARTED = "started"
    PUSHED = "pushed"
    PULLED = "pulled"
    REFUSED = "refused"
    LOST = "lost"  # a pushed value lost a merge on the server (kept there as a conflict)
    EVICTED = "evicted"
    KEPT_ASIDE = "kept_aside"
    RESYNC = "resync"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    DONE = "done"
    ERROR = "error"
    UPGRADE_REQUIRED = "upgrade_required"


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """One thing the app may show. `counts` is per scope for pulls, else a few totals."""

    kind: EventKind
    counts: dict[str, int] = field(default_factory=dict)
    detail: Any = None


@dataclass(slots=True)
class SyncResult:
    """Totals of one `sync_once`."""

    pushed: int = 0
    accepted: int = 0
    duplicate: int = 0
    refused: int = 0
    lost: int = 0
    pulled: dict[str, int] = field(default_factory=dict)
    evicted: dict[str, int] = field(default_factory=dict)
    requests: int = 0


EventHook = Callable[[SyncEvent], None]


class SyncClient:
    """Runs sync for one `ClientStore` over one `Transport`.

    Promises: the outbox is pushed in seq order, in batches; a batch whose answer is lost is
    re-sent unchanged (the server deduplicates); a pull applies each answer and its cursors in
    one store transaction; `sync_once` ends with a complete pull, so afterwards the store
    equals the server for every scope (unless something was written meanwhile).
    """

    def __init__(
        self,
        store: ClientStore,
        transport: Transport,
        *,
        schema_version: int = SCHEMA_VERSION,
        push_batch: int = 500,
        pull_limit: int = 2000,
        on_event: EventHook | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        fetch_ahead: bool = True,
        exchange: bool = True,
    ) -> None:
        self.store = store
        self.transport = transport
        self.schema_version = schema_version
        self.push_batch = push_batch
        self.pull_limit = pull_limit
        self.on_event = on_event
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._sleep = sleep
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.fetch_ahead = fetch_ahead
        #: push and first pull page in one round trip while the server takes it
        self.use_exchange = exchange and callable(getattr(transport, "exchange", None))
        self.failures = 0
        self.progress: dict[str, int] = {}
        self._wake = asyncio.Event()

    def _emit(
        self, kind: EventKind, counts: dict[str, int] | None = None, detail: Any = None
    ) -> None:
        if self.on_event is not None:
            self.on_event(SyncEvent(kind, counts or {}, detail))

    async def push(self, result: SyncResult | None = None) -> SyncResult:
        """Push the whole outbox, batch by batch."""
        result = result if result is not None else SyncResult()
        while True:
            batch = self.store.pending(self.push_batch)
            if not batch:
                return result
            req = PushRequest(
                schema_version=self.schema_version,
                device_id=self.store.device_id,
                mutations=batch,
            )
            reply = await self.transport.push(req)
            result.requests += 1
            if not isinstance(reply, PushResponse):
                self._upgrade(reply)
            self._settle(batch, reply, result)

    def _upgrade(self, reply: Any) -> NoReturn:
        self._emit(EventKind.UPGRADE_REQUIRED, detail=reply.min_version)
        raise UpgradeRequiredError(reply.min_version, reply.message)

    def _settle(self, batch: list[Any], reply: PushResponse, result: SyncResult) -> None:
        """Apply a push's acks to the store and report them."""
        report = self.store.apply_acks(batch, reply.acks, reply.hlc)
        result.pushed += len(batch)
        result.accepted += report.accepted
        result.duplicate += report.duplicate
        result.refused += len(report.refused)
        result.lost += len(report.lost)
        self._emit(
            EventKind.PUSHED,
            {"accepted": report.accepted, "duplicate": report.duplicate},
        )
        for m, refusal in report.refused:
            self._emit(EventKind.REFUSED, detail=(m, refusal))
        for m, fields in report.lost:
            self._emit(EventKind.LOST, detail=(m, fields))

    async def _exchange(self, result: SyncResult) -> bool:
        """The first push batch and the first pull page in one round trip, then whatever is
        left as separate pushes and pulls. False (nothing sent) when there is nothing to push,
        or the server has no exchange: the caller pushes and pulls as before."""
        batch = self.store.pending(self.push_batch)
        if not batch:
            return False
        push = PushRequest(
            schema_version=self.schema_version, device_id=self.store.device_id, mutations=batch
        )
        exchange: ExchangeTransport = self.transport  # type: ignore[assignment]
        try:
            reply = await exchange.exchange(ExchangeRequest(push=push, pull=self._pull_request()))
        except ExchangeUnsupportedError:
            self.use_exchange = False
            return False
        result.requests += 1
        if not isinstance(reply, ExchangeResponse):
            self._upgrade(reply)
        self._settle(batch, reply.push, result)
        self.progress = {}
        report = self.store.apply_pull(reply.pull)
        self._report_pull(report, result)
        if self.store.pending(1):  # more than one batch, or a renewed device id
            await self.push(result)
            await self._pull(result)
        elif reply.pull.has_more or report.checksum_mismatch:
            await self._pull(result)
        else:
            self.store.finish_pull()
        return True

    def _pull_request(self) -> PullRequest:
        return PullRequest(
            schema_version=self.schema_version,
            device_id=self.store.device_id,
            cursors=self.store.cursors(),
            bases=self.store.bases(),
            limit=self.pull_limit,
        )

    def _fetch(self, req: PullRequest) -> asyncio.Future[PullReply]:
        return asyncio.ensure_future(self.transport.pull(req))

    async def pull(self, result: SyncResult | None = None) -> SyncResult:
        """Pull until no scope has more, then settle acked outbox rows.

        Pages are fetched one ahead: while a page is applied, the request for the next one,
        built from the cursors this page will leave behind (`next_pull_request`), is already
        on its way. After the apply the real next request is built from the store; if it
        differs (a checksum mismatch reset a scope, say) the early answer is dropped unread
        and the real request is sent, so the pages applied are exactly those of a sequential
        pull. A transport that does its I/O off the event loop (mobile/core HttpTransport)
        thus overlaps the server building page n+1 with the device storing page n.
        `fetch_ahead=False` keeps one request in flight (the benchmark's baseline).
        """
        with collector_paused():
            return await self._pull(result)

    async def _pull(self, result: SyncResult | None) -> SyncResult:
        # `pull` without its collector pause, for `sync_once`, which holds the pause already.
        result = result if result is not None else SyncResult()
        self.progress = {}
        refetched: set[str] = set()
        req = self._pull_request()
        current = self._fetch(req)
        fetch: asyncio.Future[PullReply] | None = current  # the answer not awaited yet
        try:
            while True:
                reply = await current
                fetch = None
                result.requests += 1
                if not isinstance(reply, PullResponse):
                    self._upgrade(reply)
                ahead = None
                if reply.has_more and self.fetch_ahead:
                    ahead = next_pull_request(req, reply)
                if ahead is not None:
                    fetch = self._fetch(ahead)
                    await asyncio.sleep(0)  # let the transport start the request
                report = self.store.apply_pull(reply)
                self._report_pull(report, result)
                # A checksum mismatch reset that scope's cursor: pull again to re-fetch it,
                # once per sync, so a persistent disagreement cannot spin the loop.
                again = set(report.checksum_mismatch) - refetched
                refetched |= again
                if not reply.has_more and not again:
                    break
                req = self._pull_request()
                if fetch is None or req != ahead:
                    if fetch is not None:
                        _discard(fetch)
                    fetch = self._fetch(req)
                current = fetch
        finally:
            if fetch is not None:
                _discard(fetch)
        self.store.finish_pull()
        return result

    def _report_pull(self, report: PullReport, result: SyncResult) -> None:
        for scope, n in report.changes.items():
            self.progress[scope] = self.progress.get(scope, 0) + n
            result.pulled[scope] = result.pulled.get(scope, 0) + n
        for scope, n in report.evictions.items():
            result.evicted[scope] = result.evicted.get(scope, 0) + n
        self._emit(EventKind.PULLED, dict(self.progress))
        if report.evictions:
            self._emit(EventKind.EVICTED, dict(report.evictions))
        if report.kept_aside:
            self._emit(EventKind.KEPT_ASIDE, {"records": report.kept_aside})
        for scope in report.resynced:
            self._emit(EventKind.RESYNC, detail=scope)
        for scope in report.checksum_mismatch:
            self._emit(EventKind.CHECKSUM_MISMATCH, detail=scope)

    async def sync_once(self) -> SyncResult:
        """Push everything, then pull everything (the first push batch and pull page in one
        exchange where the server takes it). Raises on transport failure."""
        self._emit(EventKind.STARTED)
        result = SyncResult()
        with collector_paused():
            if not (self.use_exchange and await self._exchange(result)):
                await self.push(result)
                await self._pull(result)
        self._emit(EventKind.DONE, dict(result.pulled), detail=result)
        return result

    def notify(self) -> None:
        """Ask the loop to sync now (the server's "pull now" event, or a local write)."""
        self._wake.set()

    def backoff_delay(self) -> float:
        """Delay before the next retry: exponential in the failures so far, with jitter.

        Half of the delay is fixed and half random ("equal jitter"), so phones that lost the
        network together do not retry together, and no retry comes immediately.
        """
        exp = min(self.backoff_cap_s, self.backoff_base_s * (2.0 ** min(self.failures, 30)))
        return exp / 2 + self._rng.uniform(0, exp / 2)

    async def run(self, stop: asyncio.Event, *, interval_s: float = 60.0) -> None:
        """Sync until `stop` is set: after each success wait for `notify()` or `interval_s`;
        after a failure back off. Stops (with an event) when an upgrade is required."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.sync_once()
                self.failures = 0
                delay = interval_s
            except UpgradeRequiredError:
                return
            except (TransportError, OSError) as exc:
                self.failures += 1
                delay = self.backoff_delay()
                told = exc.retry_after_s if isinstance(exc, TransportError) else None
                if told is not None:  # a shedding server said when: not sooner
                    delay = max(delay, told)
                self._emit(EventKind.ERROR, {"failures": self.failures}, detail=repr(exc))
                await self._sleep(delay)
                continue
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
                stopper.cancel()


class _CollectorPause:
    """Counts the syncs running in this process; the collector is off while any does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.was_enabled = False

    def enter(self) -> None:
        with self.lock:
            if self.running == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.running += 1

    def exit(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0 and self.was_enabled:
                gc.enable()


_collector = _CollectorPause()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a sync runs (nested and concurrent uses
    count; it resumes when the last ends, and only if it was running before the first).

    A pull page of 5,000 records is ~20,000 new containers (the decoded fields, the apply's
    rows): enough to start hundreds of young and several full collections per 100,000
    records, each full one walking every object the process holds, in both threads of the
    pull (the transport's decode and the store's apply) and under one GIL. They found
    nothing to free: the pull makes no reference cycles, so reference counting frees its
    objects as each page is done. Measured on the phone benchmark's 100,000-record pull: the
    collector took 2-4 s of a 6-10 s pull on a busy machine (tests/bench/bench_phone).
    """
    _collector.enter()
    try:
        yield
    finally:
        _collector.exit()


def next_pull_request(req: PullRequest, reply: PullResponse) -> PullRequest:
    """The request a store that held `req`'s cursors sends after applying `reply` (barring a
    checksum mismatch, which resets a scope): cursors advance to each page's cursor, dropped
    scopes go, and a scope's base stays at its last checkpoint until its feed is complete (a
    resync or a new scope starts from 0). Mirrors `ClientStore.apply_pull`; `SyncClient.pull`
    checks the prediction against the store before using an answer fetched with it."""
    cursors = dict(req.cursors)
    bases = dict(req.bases)
    for scope in reply.dropped:
        cursors.pop(scope, None)
        bases.pop(scope, None)
    for page in reply.scopes:
        held = 0 if page.resync else bases.get(page.scope, cursors.get(page.scope, 0))
        cursors[page.scope] = page.cursor
        base = held if page.has_more else page.cursor
        if base != page.cursor:
            bases[page.scope] = base
        else:
            bases.pop(page.scope, None)
    return msgspec.structs.replace(req, cursors=cursors, bases=bases)


def _discard(fetch: asyncio.Future[PullReply]) -> None:
    """Drop an answer fetched ahead that will not be used, without leaving its error unread."""
    fetch.cancel()
    fetch.add_done_callback(lambda f: f.cancelled() or f.exception())
