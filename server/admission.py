"""Load shedding: a bounded admission per process, so a surge gets a quick 503 instead of a
queue that grows for minutes (issue 13).

Each serving process lets at most `limit` requests work at once; a few more wait, FIFO, for at
most `max_wait_s`; anything beyond is answered at once with 503 `overloaded` (problem+json) and
a `Retry-After` the phone honours (`mobile/core/transport.py`, `sync/client.py`). Without this,
every request was taken: they queued for a database connection, the event loop fell behind,
and at twice the capacity p99 reached 82 s with read errors (issue 13's probe).

What waits and what is refused first:

- Writes (any POST/PUT/PATCH/DELETE except a sync pull and a login) and token refreshes are
  `urgent`: a field report or a status step must get through a surge, and a phone whose access
  token expired can do nothing else. They may fill the whole queue and are served first.
- Reads (GETs, sync pulls, which a phone repeats on its own every interval anyway) and logins
  (argon2 costs tens of milliseconds of CPU; a phone that signed in before keeps its session)
  may take only half the queue: under overload they are shed before any write is.
- `/healthz` and `/readyz` are never shed (they are excluded from the middleware): a load
  balancer that took a busy process for a dead one would restart it or move its load onto the
  others, turning a surge into an outage. Overload shows in the 503s and their rate, not in
  the probes.
- The "pull now" stream (`text/event-stream`) holds its slot only until its answer starts: the
  set-up (authentication, the user's scopes) is admitted like a read, so ten thousand phones
  reconnecting after a restart arrive in bounded steps; the open stream then costs no slot.

A request body is read before the request queues for a slot (up to `prefetch_bytes`), so a
phone trickling its upload over 2G does not hold a slot while it does.

Overload that lasts (`adaptive`, on by default; `LIANDONG_ADMISSION_ADAPTIVE=0` turns it off):
once the queue has not emptied for `STANDING_S`, as many requests as the readers' half of it (at
most `ENGAGE_REFUSALS`) have been refused meanwhile and the event loop runs late (`watch` reads it
every `LAG_PROBE_S`), new waiters wait at most `STANDING_WAIT_S` and fewer requests work at once
(`at_work`, down to `AT_WORK_MIN`), more again once the loop keeps up (`overloaded`). A burst,
which the queue absorbs and empties, and a load the fixed admission serves refusing fewer than
that are not touched: a surge benchmark hold that sheds nothing never engages it. In the full
surge benchmark it served twice the capacity within 1.1-2.0 s (2.5 s without it) and held the
knee as the fixed admission did (docs/capacity.md, "The knee held, and the overload served
within 2 s").
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgspec
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

import i18n
from server.config import Settings
from server.db import POOL_SIZE, is_sqlite
from server.errors import overloaded_problem
from server.tasks import running

PROBLEM_JSON = b"application/problem+json"
EXEMPT_PATHS = (r"^/healthz$", r"^/readyz$")
_READS_BY_POST = frozenset({"/api/v1/sync/pull", "/api/v1/auth/login"})
_URGENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_urgent(method: str, path: str) -> bool:
    """Whether a request may use the whole queue (writes, token refreshes) rather than half."""
    return method in _URGENT_METHODS and path not in _READS_BY_POST


@dataclass
class Admission:
    """One process's admission: `limit` at work, up to `queue` waiting for `max_wait_s`.

    `limit` 0 turns shedding off (every request is admitted at once). `adaptive`: under
    sustained overload, `at_work` (at most `limit`) and shorter waits (module docstring).
    """

    limit: int = 16
    queue: int = 64
    max_wait_s: float = 1.0
    retry_after_s: int = 10
    prefetch_bytes: int = 1024 * 1024
    adaptive: bool = True
    active: int = 0
    admitted: int = 0
    shed: int = 0
    at_work: int = 0  # the limit now: `limit` while the loop keeps up, less while it lags
    lag_s: float = 0.0  # the event loop's lateness, smoothed (`watch`)
    _emptied: float = 0.0  # when the queue was last empty (monotonic)
    _shed_then: int = 0  # `shed` when the queue was last empty
    _overload: bool = False  # the loop ran late while the queue stood (`note_lag`)
    _urgent: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    _normal: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        self.at_work = self.limit

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return len(self._urgent) + len(self._normal)

    def pull_limit(self, asked: int) -> int:
        """The changes a sync pull may answer now: what it asked, or at most `BUSY_PULL_LIMIT`
        while requests wait for a slot (see there)."""
        return min(asked, BUSY_PULL_LIMIT) if self.waiting else asked

    async def acquire(self, urgent: bool) -> bool:
        """Take a slot, waiting at most `wait_s` in the queue; False: shed the request."""
        if self.limit <= 0 or (self.active < self.at_work and not self.waiting):
            self.active += 1
            self.admitted += 1
            return True
        room = self.queue if urgent else self.queue // 2
        if self.waiting >= room:
            self.shed += 1
            return False
        line = self._urgent if urgent else self._normal
        loop = asyncio.get_running_loop()
        if not self.waiting:
            self._emptied, self._shed_then = loop.time(), self.shed
        fut: asyncio.Future[None] = loop.create_future()
        line.append(fut)
        try:
            async with asyncio.timeout(self.wait_s(loop.time())):
                await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():  # granted as the wait ran out: keep it
                self.admitted += 1
                return True
            _forget(line, fut)
            self.shed += 1
            return False
        except asyncio.CancelledError:  # the client went away while queued
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                _forget(line, fut)
            raise
        self.admitted += 1
        return True

    def wait_s(self, now: float) -> float:
        """How long a request may wait for a slot: `max_wait_s`, or `STANDING_WAIT_S` while
        `overloaded` (see there)."""
        if self.overloaded(now):
            return min(self.max_wait_s, STANDING_WAIT_S)
        return self.max_wait_s

    def overloaded(self, now: float) -> bool:
        """Overload that lasts: requests have waited, without the queue emptying, for
        `STANDING_S`, the fixed admission refused as many meanwhile as the readers' half of the
        queue holds (at most `ENGAGE_REFUSALS`), and the event loop ran late (`LAG_HIGH_S`) and has
        not caught up since (`LAG_LOW_S`; `note_lag` decides). Not a burst, which the queue
        absorbs and empties; not a load the fixed admission serves refusing a few in its bursts
        (with a single refusal as the trigger, a hold just past the knee went from a few
        hundred refused in five minutes to thousands, docs/capacity.md); not a queue for
        SQLite's one write lock either, which a shorter wait would only shed (its loop idles
        while it waits)."""
        return self._overload and self._standing(now)

    def _standing(self, now: float) -> bool:
        return bool(self.waiting) and now - self._emptied > STANDING_S

    def release(self) -> None:
        """Give a slot back: to the oldest urgent waiter, else the oldest other, else free it
        (and free it too while more are at work than `at_work` now lets)."""
        if self.active > self.at_work or not self._pass_on():
            self.active -= 1
            if not self.waiting:
                self._emptied, self._shed_then = asyncio.get_running_loop().time(), self.shed

    def _pass_on(self) -> bool:
        """Hand a slot to the oldest urgent waiter, else the oldest other; False: none waits."""
        for line in (self._urgent, self._normal):
            while line:
                fut = line.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot passes on; `active` is unchanged
                    return True
        return False

    def note_lag(self, late_s: float, now: float | None = None) -> None:
        """One reading of the loop's lateness: smooth it, tell an overload that lasts from a
        burst, and let fewer requests work at once while it lasts and the loop runs late, more
        again once the loop keeps up or the queue empties (see `LAG_HIGH_S`)."""
        self.lag_s += LAG_SMOOTHING * (late_s - self.lag_s)
        if not self.adaptive or self.limit <= 0:
            return
        if now is None:
            now = asyncio.get_running_loop().time()
        if not self._standing(now) or self.lag_s < LAG_LOW_S:
            self._overload = False
        elif self.lag_s > LAG_HIGH_S and self.shed - self._shed_then >= self._engage_after():
            self._overload = True
        if self._overload and self.lag_s > LAG_HIGH_S and self.active >= self.at_work:
            self.at_work = max(min(self.limit, AT_WORK_MIN), self.at_work - 1)
        elif self.at_work < self.limit and (
            self.lag_s < LAG_LOW_S or (not self._overload and self.lag_s < LAG_HIGH_S)
        ):
            self.at_work += 1
            self._grant()

    def _engage_after(self) -> int:
        """Refusals since the queue last emptied that make a standing queue an overload: the
        readers' half of the queue, at most `ENGAGE_REFUSALS`."""
        return max(1, min(self.queue // 2, ENGAGE_REFUSALS))

    def _grant(self) -> None:
        """Pass the slots a raised `at_work` frees to waiters."""
        while self.active < self.at_work and self._pass_on():
            self.active += 1

    async def watch(self) -> None:
        """Read the loop's lateness every `LAG_PROBE_S`, for ever (the app's lifespan runs it)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.note_lag(max(0.0, loop.time() - due))

    def retry_after(self) -> int:
        """Seconds a shed client should wait: the base plus up to as much again, so the phones
        refused together do not come back together."""
        return self.retry_after_s + random.randint(0, self.retry_after_s)  # noqa: S311 - jitter


@asynccontextmanager
async def watching_lag(app: Litestar) -> AsyncIterator[None]:
    """Run the app's admission's `watch` while the app serves (a lifespan)."""
    admission: Admission = app.state.admission
    if admission.limit <= 0 or not admission.adaptive:
        yield
        return
    async with running(admission.watch()):
        yield


def _forget(line: collections.deque[asyncio.Future[None]], fut: asyncio.Future[None]) -> None:
    fut.cancel()
    try:
        line.remove(fut)
    except ValueError:  # already popped by release() (it skips cancelled waiters)
        pass


def overloaded_answer(path: str, retry_after: int, lang: str) -> tuple[Message, Message]:
    """The 503 `overloaded` problem details in `lang`, as ASGI messages."""
    body = msgspec.json.encode(overloaded_problem(path, retry_after, lang))
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", PROBLEM_JSON),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
            (b"cache-control", b"no-store"),
            (b"content-language", lang.replace("_", "-").encode()),
            (b"vary", b"Accept-Language"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def _lang(scope: Scope) -> str:
    """The language the request asks for (its `Accept-Language`)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"accept-language":
            return i18n.negotiate(value.decode("latin-1"))
    return i18n.negotiate(None)


async def _prefetch(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bool]:
    """Read request body messages until the body ends or `limit` bytes; (messages, complete).
    A disconnect is kept as the last message for the app to see."""
    messages: list[ReceiveMessage] = []
    size = 0
    while size < limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, True
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, True
    return messages, False


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    pending = collections.deque(messages)

    async def replay() -> ReceiveMessage:
        return pending.popleft() if pending else await receive()

    return replay


class AdmissionMiddleware(ASGIMiddleware):
    """Admit each HTTP request through the process's `Admission`, or answer 503 at once."""

    scopes = (ScopeType.HTTP,)
    exclude_path_pattern = EXEMPT_PATHS

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Queue for a slot (after reading the body), run the request, give the slot back."""
        adm = self.admission
        if adm.limit <= 0:
            await next_app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        messages, _complete = await _prefetch(receive, adm.prefetch_bytes)
        if not await adm.acquire(is_urgent(method, scope["path"])):
            start, body = overloaded_answer(scope["path"], adm.retry_after(), _lang(scope))
            await send(start)
            await send(body)
            return
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                adm.release()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and _is_stream(message):
                give_back()  # a long-lived stream costs no slot once it has started
            await send(message)

        try:
            await next_app(scope, _replaying(messages, receive), sending)
        finally:
            give_back()


def _is_stream(start: Message) -> bool:
    headers: Iterable[tuple[bytes, bytes]] = start.get("headers", ())  # type: ignore[assignment]
    return any(
        k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
    )


ENGAGE_REFUSALS = 32
"""At most this many refusals since the queue last emptied engage the adaptive mode (fewer
with a queue shorter than twice it): 32 kept the overload's 2 s in the full benchmark."""
LAG_PROBE_S = 0.05
"""How often the loop's lateness is read (`Admission.watch`)."""
LAG_SMOOTHING = 0.2
"""Weight of each new reading in the smoothed lateness (about the last ten readings count)."""
LAG_HIGH_S = 0.010
LAG_LOW_S = 0.004
"""While the smoothed lateness is above `LAG_HIGH_S`, every slot is taken and the queue
stands (`STANDING_S`), one slot fewer at each reading (down to `AT_WORK_MIN`); below
`LAG_LOW_S`, one more (up to `limit`). Each request at work runs a slice of Python between its
database round trips, and every request waits for all the others' slices at each of its round
trips: in the surge probe's overload (10,000 phones, two workers on two cores) sixteen at work
made the loop ~15-20 ms late and a pull's work ~110 ms at p50; at four, 5-6 ms and ~37 ms, and
as many requests were served a second (the cores were full either way; docs/capacity.md,
"Overload that lasts"). A healthy loop reads ~1 ms late, a burst's up to ~10 ms."""
AT_WORK_MIN = 4
"""The fewest requests at work the lag may bring a process down to (a request waiting on a
row lock holds its slot, so some must stay to keep the core busy)."""
STANDING_S = 1.0
STANDING_WAIT_S = 0.1
"""Once the queue has not emptied for `STANDING_S`, a request queues for at most
`STANDING_WAIT_S` (CoDel's idea, as in Facebook's "Fail at scale"): a queue that never empties
only adds its length to every request it serves, and the one second a request may wait is for
a burst, which empties it."""

BUSY_PULL_LIMIT = 200
"""Changes a sync pull answers at most while other requests wait for a slot (the phone asks
for 2,000). A phone catching up on a long time offline pulls hundreds of changes at once
(about 40 µs of the worker's CPU each, plus the encoding and gzip of ~600 bytes), and while a
request builds its answer nothing else on that event loop runs: in the surge benchmark's
overload, phones coming online after a quarter of an hour held the loop for tens of
milliseconds a page, every other request waited that long at each of its statements, and the
writers holding the sync counter's lock to commit (`server.domain.sync.storage.next_seqs`)
made the others wait behind them. Smaller pages cost the catching-up phone more round trips
(each admitted again, so it takes its turn) and nobody else anything; the pull says
`has_more` and the phone asks again at once. An idle server answers what was asked."""

SQLITE_LIMIT = 2
"""SQLite's writers take its one write lock at BEGIN (server/db.py), so writes run one at a
time whatever the concurrency: more at work only queue on the lock, where a request holding it
waits its turn on the event loop among all the others, and waiters past SQLite's busy timeout
fail. Two at work keep one request's Python work beside the other's SQL. Pulls and the
authentication read beside a writer (`server.db.read_snapshot`); a higher limit for them is
not measured yet."""
POSTGRES_LIMIT = 16
"""Requests at work at once per process on PostgreSQL (the database pool is sized from it,
`pool_size`)."""

SQLITE_QUEUE = 256
"""Places in SQLite's queue (reads may use half). The wait bounds the latency; the queue only
bounds what the process holds. At 64, the SQLite part of the surge benchmark shed 264 requests
at 3,000 phones, each within about 3 ms (a full queue in a burst) while the served p99 was
510 ms; at 256 it shed none and held 3,000 phones at p99 630 ms (docs/capacity.md)."""
POSTGRES_QUEUE = 128
"""Places in PostgreSQL's queue per process (reads may use half). At 64, a 5-minute hold at the
knee (4,000 phones) shed 19 requests, each within 48 ms: the readers' 32 places full in a
burst. Under an overload that lasts the adaptive mode caps a new wait at `STANDING_WAIT_S`, so
the longer queue holds bursts without making served requests wait out a second (256 with the
fixed admission: p99 2.1 s against 1.5 s at twice the capacity; docs/capacity.md)."""

POOL_RESERVE = 4
"""Pooled connections beyond one per admitted request: the process's background jobs (the
outbox worker, escalation, the hazard jobs, the warning feed) take theirs from the same pool."""


def pool_size(admission: Admission) -> int:
    """Database connections to keep open: one per request at work plus `POOL_RESERVE`.

    The pool used to keep 10 (plus 10 overflow, closed at check-in) under an admission of 16:
    in the surge of 29 November about one connection a second was opened and closed again,
    each a new PostgreSQL backend with cold caches and every statement prepared anew.
    With admission off (`limit` 0) the engine's default, `server.db.POOL_SIZE`."""
    return (admission.limit if admission.limit > 0 else POOL_SIZE) + POOL_RESERVE


def admission_from(settings: Settings) -> Admission:
    """The process's admission from `Settings` (`admission_*`; the limit and the queue by
    backend unless set)."""
    sqlite = is_sqlite(settings.database_url)
    limit = settings.admission_limit
    if limit is None:
        limit = SQLITE_LIMIT if sqlite else POSTGRES_LIMIT
    queue = settings.admission_queue
    if queue is None:
        queue = SQLITE_QUEUE if sqlite else POSTGRES_QUEUE
    return Admission(
        adaptive=settings.admission_adaptive,
        limit=limit,
        queue=queue,
        max_wait_s=settings.admission_wait_s,
        retry_after_s=settings.admission_retry_after_s,
    )
