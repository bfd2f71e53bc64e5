""" "Pull now" notifications: a broker per process fed by commits, read by the SSE endpoint.

`publish(scopes)` is called from the session's `after_commit` (same event loop thread as the
SSE handlers); every subscriber whose scopes intersect gets one wake-up (coalesced: a queue of
size one).

Across processes (several `liandong serve` workers, `liandong worker`, the CLI) on PostgreSQL:
the committing transaction also sends `NOTIFY liandong_sync` (`notify_payloads`, sent by the
commit hook before commit, so PostgreSQL delivers it exactly when the commit succeeds), and every
process keeps one LISTEN connection (`listen`) that publishes what other processes committed
into its own broker. SQLite deployments are one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("liandong.sync")

CHANNEL = "liandong_sync"
_MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes


class Subscription:
    """One listening device: its scopes and a one-slot wake-up queue."""

    def __init__(self, scopes: Iterable[str]) -> None:
        self.scopes = frozenset(scopes)
        self.queue: asyncio.Queue[frozenset[str]] = asyncio.Queue(maxsize=1)
        self.pending: set[str] = set()

    def offer(self, scopes: frozenset[str]) -> None:
        """Queue a wake-up unless one is already waiting (its scopes are merged)."""
        self.pending |= scopes
        if self.queue.empty():
            self.queue.put_nowait(frozenset(self.pending))
            self.pending = set()


class Broker:
    """Fan-out of changed scopes to subscriptions, indexed by scope.

    A commit touches a few scopes while a process may hold thousands of streams: `publish`
    looks up only the subscriptions of the changed scopes (a scan of every subscription per
    commit grows with phones x commits, the first thing to stop scaling in docs/capacity.md).
    """

    def __init__(self) -> None:
        self._by_scope: dict[str, set[Subscription]] = {}
        self.origin = uuid.uuid4().hex  # this process's broker, in NOTIFY payloads

    @property
    def subscriptions(self) -> int:
        """Distinct subscriptions held now."""
        return len({sub for subs in self._by_scope.values() for sub in subs})

    def subscribe(self, scopes: Iterable[str]) -> Subscription:
        """Start listening for changes in `scopes`."""
        sub = Subscription(scopes)
        for scope in sub.scopes:
            self._by_scope.setdefault(scope, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop listening (nothing of the subscription stays behind)."""
        for scope in sub.scopes:
            subs = self._by_scope.get(scope)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_scope[scope]

    def publish(self, scopes: Iterable[str]) -> None:
        """Wake every subscription with a changed scope, once, with the scopes it shares."""
        hits: dict[Subscription, set[str]] = {}
        for scope in set(scopes):
            for sub in self._by_scope.get(scope, ()):
                hits.setdefault(sub, set()).add(scope)
        for sub, hit in hits.items():
            sub.offer(frozenset(hit))


def notify_payloads(origin: str, scopes: Iterable[str]) -> Iterator[str]:
    """NOTIFY payloads for `scopes`: `origin`, then space-separated scopes, each under the size
    PostgreSQL accepts (a huge commit becomes several notifications)."""
    line: list[str] = []
    size = len(origin)
    for scope in sorted(scopes):
        if line and size + 1 + len(scope) > _MAX_PAYLOAD:
            yield " ".join([origin, *line])
            line, size = [], len(origin)
        line.append(scope)
        size += 1 + len(scope)
    if line:
        yield " ".join([origin, *line])


def on_notify(broker: Broker, payload: str) -> None:
    """Publish another process's commit (`origin scope scope ...`) into `broker`."""
    origin, _, scopes = payload.partition(" ")
    if origin != broker.origin and scopes:
        broker.publish(scopes.split(" "))


async def listen(dsn: str, broker: Broker, *, retry_s: float = 1.0) -> None:
    """Keep a LISTEN connection (asyncpg) open and feed `broker`; reconnect when it drops.
    Runs until cancelled. While it is down, devices still sync on their own interval."""
    import asyncpg  # type: ignore[import-untyped]

    def received(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        on_notify(broker, payload)

    while True:
        conn: Any = None
        try:
            conn = await asyncpg.connect(dsn)
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _c, ev=closed: ev.set())
            await conn.add_listener(CHANNEL, received)
            await closed.wait()
            log.warning("sync LISTEN connection closed; reconnecting")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is down or restarting: try again shortly
            log.warning("sync LISTEN failed (%r); retrying in %.0f s", exc, retry_s)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()
        await asyncio.sleep(retry_s)
