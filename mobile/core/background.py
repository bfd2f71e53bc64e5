"""Sending in the background: a loop that never silently stops, and what wakes it.

`BackgroundSync.run` repeats `Sender.send_now` rounds (declare photos, push and pull, upload):

- **Connectivity**: while the `Connectivity` source says there is no network it does not try
  (no battery burnt on a dead radio); it goes as soon as the network is back.
- **Backoff**: a failed round waits exponentially longer (equal jitter, capped), and at least
  as long as the server's `Retry-After` when it shed the request (429/503): "send now" and
  wake-ups skip the exponential wait but never the server's (that is what load shedding needs
  from ten thousand phones).
- **Wake-ups**: a local write, "send now", the server's "pull now" stream while the app is open
  (`listen`: `GET /api/v1/sync/events`, reconnecting with backoff), a push (FCM or a UnifiedPush
  distributor: `on_push`), the network coming back. Otherwise a round every `interval_s`.
- **State you can see**: `status` (online, offline, backing off until, sign in again, update the
  app) in the user's language, with the last error; never a silent stop. An upgrade-required
  answer is the only thing that ends the loop, and it says so.
- **Data used**: every byte the core's HTTP client sends and receives is counted per day in the
  phone's file (`Usage`), for the app's settings screen.

Pushes are deduplicated by `data["event_id"]` (the server may deliver twice); `on_push` returns
the record a push names and `open_from_notification` the record a tapped notification opens.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

import httpx

from mobile.core import i18n
from mobile.core.clock import Now, utcnow
from mobile.core.outbox import Sender, SendReport
from sync.client import TransportError, UpgradeRequiredError

log = logging.getLogger("liandong.phone")

#: push `data` keys naming a record, in the order they are looked for
RECORD_KEYS = (
    ("task_id", "task"),
    ("hazard_id", "hazard"),
    ("alert_id", "alert"),
    ("submission_id", "check_submission"),
    ("incident_id", "incident"),
    ("plan_id", "plan"),
)


class Connectivity(Protocol):
    """Whether the phone has a network now (Android: `ConnectivityManager`)."""

    def online(self) -> bool:
        """True when a network is available (it may still fail: the sender backs off)."""
        ...


class AlwaysOnline:
    """Desktop: assume a network; failures are handled by backoff."""

    def online(self) -> bool:
        """Always True."""
        return True


class ManualConnectivity:
    """A switch (tests, and the Android adapter's callback target)."""

    def __init__(self, online: bool = True) -> None:
        self.is_online = online

    def online(self) -> bool:
        """The switch's position."""
        return self.is_online


class LinkState(enum.StrEnum):
    """What the sender is doing, as the app's status line shows it."""

    ONLINE = "online"
    OFFLINE = "offline"
    BACKING_OFF = "backing_off"
    SIGN_IN_AGAIN = "sign_in_again"
    UPGRADE_REQUIRED = "upgrade_required"


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """The sender's state; `retry_at` when backing off, `last_error` of the last failed round."""

    state: LinkState = LinkState.ONLINE
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    last_ok_at: datetime | None = None
    rounds: int = 0

    def text(self, lang: str = i18n.DEFAULT_LANG, now: datetime | None = None) -> str:
        """The status line in the user's language."""
        if self.state is LinkState.BACKING_OFF:
            wait = (self.retry_at - (now or utcnow())).total_seconds() if self.retry_at else 0
            return i18n.text("backing_off", lang, seconds=max(0, round(wait)))
        return i18n.text(str(self.state), lang)


@dataclass(frozen=True, slots=True)
class RecordRef:
    """A record a push or a notification names: the screen to open."""

    entity: str
    id: str
    kind: str | None = None  # the push's `kind` (e.g. "task.assigned"), if any


def record_of(data: dict[str, str]) -> RecordRef | None:
    """The record a push's `data` names (`task_id`, `hazard_id`, ...), or None."""
    for key, entity in RECORD_KEYS:
        if data.get(key):
            return RecordRef(entity, data[key], data.get("kind"))
    return None


@dataclass(frozen=True, slots=True)
class DataUsed:
    """Bytes over the core's HTTP client (request and status lines, headers, bodies as sent
    and received, compressed)."""

    sent: int = 0
    received: int = 0
    requests: int = 0

    def text(self, lang: str = i18n.DEFAULT_LANG) -> str:
        """ "Data used: n KB sent, m KB received"."""
        return i18n.text("data_used", lang, kb=self.sent // 1024, kb_in=self.received // 1024)


class Usage:
    """Counts the bytes of every exchange of an `httpx.Client` (a response hook), per day,
    kept in the phone's file (`mobile_usage`) when `flush` is called (after each round)."""

    def __init__(self, db: sqlite3.Connection, *, now: Now = utcnow) -> None:
        self.db = db
        self._now = now
        self._lock = threading.Lock()
        self._pending = [0, 0, 0]

    def attach(self, client: httpx.Client) -> None:
        """Count `client`'s exchanges from now on (once per client)."""
        hooks = client.event_hooks
        if any(getattr(h, "__self__", None) is self for h in hooks.get("response", [])):
            return
        hooks.setdefault("response", []).append(self._response)
        client.event_hooks = hooks

    def _response(self, r: httpx.Response) -> None:
        r.read()
        req = r.request
        sent = len(f"{req.method} {req.url.raw_path.decode()} HTTP/1.1\r\n")
        sent += _headers_len(req.headers.raw) + len(req.content)
        received = len(f"HTTP/1.1 {r.status_code} {r.reason_phrase}\r\n")
        # A response built in memory (a test double) downloaded nothing: count its body.
        received += _headers_len(r.headers.raw) + (r.num_bytes_downloaded or len(r.content))
        self.count(sent, received)

    def count(self, sent: int, received: int, requests: int = 1) -> None:
        """Add an exchange (also for streams the hook does not see)."""
        with self._lock:
            self._pending[0] += sent
            self._pending[1] += received
            self._pending[2] += requests

    def flush(self) -> None:
        """Write what was counted since the last flush into today's row."""
        with self._lock:
            sent, received, requests = self._pending
            self._pending = [0, 0, 0]
        if not requests and not sent and not received:
            return
        self.db.execute(
            "INSERT INTO mobile_usage(day, sent, received, requests) VALUES(?,?,?,?)"
            " ON CONFLICT(day) DO UPDATE SET sent=sent+excluded.sent,"
            " received=received+excluded.received, requests=requests+excluded.requests",
            (self._now().date().isoformat(), sent, received, requests),
        )

    def total(self, since: str | None = None) -> DataUsed:
        """Data used since the day `since` (ISO date; default: everything), unflushed too."""
        row = self.db.execute(
            "SELECT coalesce(sum(sent),0), coalesce(sum(received),0), coalesce(sum(requests),0)"
            " FROM mobile_usage WHERE day >= ?",
            (since or "",),
        ).fetchone()
        with self._lock:
            sent, received, requests = self._pending
        return DataUsed(int(row[0]) + sent, int(row[1]) + received, int(row[2]) + requests)


def _headers_len(raw: list[tuple[bytes, bytes]]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in raw) + 2


EventStream = Callable[[], AsyncIterator[tuple[str, str]]]
StatusHook = Callable[[SyncStatus], None]


class BackgroundSync:
    """The send loop with its wake-ups (see the module's docstring)."""

    def __init__(
        self,
        sender: Sender,
        *,
        connectivity: Connectivity | None = None,
        events: EventStream | None = None,
        usage: Usage | None = None,
        needs_login: Callable[[], bool] = lambda: False,
        interval_s: float = 300.0,
        backoff_base_s: float = 2.0,
        backoff_cap_s: float = 600.0,
        on_status: StatusHook | None = None,
        on_report: Callable[[SendReport], None] | None = None,
        on_round: Callable[[], None] | None = None,
        now: Now = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.sender = sender
        self.connectivity = connectivity or AlwaysOnline()
        self.events = events
        self.usage = usage
        self.needs_login = needs_login
        self.interval_s = interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.on_status = on_status
        self.on_report = on_report
        self.on_round = on_round  # told when a round starts (the app animates its strip)
        self._now = now
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self.status = SyncStatus()
        self._wake = asyncio.Event()
        self._forced = False  # "send now": skip the exponential wait
        self._not_before: datetime | None = None  # the server's Retry-After
        self._seen: OrderedDict[str, None] = OrderedDict()  # push event ids already handled
        self.wakeups: dict[str, int] = {}

    # -- what wakes it ----------------------------------------------------------------------
    def wake(self, reason: str = "write") -> None:
        """Start a round soon (a local write, a push, "pull now", the network back)."""
        self.wakeups[reason] = self.wakeups.get(reason, 0) + 1
        # Anything but a local write also cuts a backoff short (a write would only retry a
        # failing link sooner); nothing cuts the server's Retry-After short.
        self._forced = self._forced or reason != "write"
        self._wake.set()

    def send_now(self) -> None:
        """The user's "send now": a round at once, unless the server asked to wait."""
        self.wake("send_now")

    def network_changed(self, online: bool) -> None:
        """The connectivity callback: the network came back (or went)."""
        if online:
            self.wake("network")

    def on_push(self, data: dict[str, str]) -> RecordRef | None:
        """A push arrived (FCM data message or a UnifiedPush message, decrypted): pull now.
        Returns the record it names (for a notification), None for a duplicate delivery."""
        event_id = data.get("event_id")
        if event_id:
            if event_id in self._seen:
                return None
            self._seen[event_id] = None
            while len(self._seen) > 512:
                self._seen.popitem(last=False)
        self.wake("push")
        return record_of(data)

    @staticmethod
    def open_from_notification(data: dict[str, str]) -> RecordRef | None:
        """The record a tapped notification opens (its `data`, as the push carried it)."""
        return record_of(data)

    # -- the loop ---------------------------------------------------------------------------
    def _set(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]
        if self.on_status is not None:
            self.on_status(self.status)

    def backoff_delay(self, failures: int) -> float:
        """Exponential in the failures so far, half fixed and half random (equal jitter)."""
        exp = min(self.backoff_cap_s, self.backoff_base_s * (2.0 ** min(failures, 30)))
        return exp / 2 + self._rng.uniform(0, exp / 2)

    async def round(self) -> SendReport | None:
        """One round now (None when offline or signed out: nothing was tried)."""
        if not self.connectivity.online():
            self._set(state=LinkState.OFFLINE)
            return None
        if self.needs_login():
            self._set(state=LinkState.SIGN_IN_AGAIN)
            return None
        if self.on_round is not None:
            self.on_round()
        try:
            report = await self.sender.send_now()
        except (UpgradeRequiredError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or a full disk: a failed round, never a dead loop
            log.exception("send round failed")
            report = SendReport(error=f"round: {exc!r}")
        finally:
            if self.usage is not None:
                self.usage.flush()
        self._after(report)
        if self.on_report is not None:
            self.on_report(report)
        return report

    def _after(self, report: SendReport) -> None:
        now = self._now()
        if report.ok:
            self._not_before = None
            self._set(
                state=LinkState.ONLINE,
                failures=0,
                retry_at=None,
                last_ok_at=now,
                rounds=self.status.rounds + 1,
            )
            return
        failures = self.status.failures + 1
        delay = self.backoff_delay(failures - 1)
        if report.retry_after_s is not None:
            delay = max(delay, report.retry_after_s)
            self._not_before = now + timedelta(seconds=report.retry_after_s)
        self._set(
            state=LinkState.BACKING_OFF,
            failures=failures,
            retry_at=now + timedelta(seconds=delay),
            last_error=report.error,
            rounds=self.status.rounds + 1,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set or the server requires a newer app."""
        while not stop.is_set():
            self._wake.clear()
            self._forced = False
            try:
                await self.round()
            except UpgradeRequiredError as exc:
                self._set(state=LinkState.UPGRADE_REQUIRED, last_error=str(exc))
                return
            await self._wait(stop)

    async def _wait(self, stop: asyncio.Event) -> None:
        """Until the next round is due: a wake-up (after the server's Retry-After, if any),
        the backoff or interval deadline, or `stop`."""
        st = self.status
        if st.state is LinkState.BACKING_OFF and st.retry_at is not None:
            deadline = st.retry_at
        else:
            deadline = self._now() + timedelta(seconds=self.interval_s)
        while not stop.is_set():
            now = self._now()
            if now >= deadline:
                return
            if self._wake.is_set():
                if st.state is LinkState.BACKING_OFF and not self._forced:
                    self._wake.clear()  # a write during a backoff waits for its end
                    continue
                if self._not_before is None or now >= self._not_before:
                    return
                # The server said when: wait for that, then go (the wake-up is kept).
                deadline = self._not_before
                self._wake.clear()
                continue
            await self._until(stop, (deadline - now).total_seconds())

    async def _until(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep up to `seconds`, ending early on a wake-up or `stop`."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(self._wake.wait())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (sleeper, waiter, stopper):
                f.cancel()

    # -- "pull now" while open --------------------------------------------------------------
    async def listen(self, stop: asyncio.Event, *, reconnect_cap_s: float = 60.0) -> None:
        """Hold the server's "pull now" stream while the app is open: each `pull` event wakes
        the loop. Reconnects with backoff when the stream ends or cannot connect; only while
        the network is up. Run it as a task beside `run` while in the foreground."""
        if self.events is None:
            return
        failures = 0
        while not stop.is_set():
            if not self.connectivity.online() or self.needs_login():
                await self._pause(stop, min(reconnect_cap_s, 5.0))
                continue
            try:
                async for name, _data in self.events():
                    failures = 0
                    if name == "pull":
                        self.wake("pull_now")
                    if stop.is_set():
                        return
            except TransportError as exc:
                failures += 1
                delay = min(reconnect_cap_s, self.backoff_delay(failures - 1))
                busy = getattr(exc, "retry_after_s", None)
                await self._pause(stop, max(delay, busy or 0.0))
                continue
            failures += 1  # the stream ended: the server restarted or a proxy cut it
            await self._pause(stop, min(reconnect_cap_s, self.backoff_delay(failures - 1)))

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
