""" "Pull now" notifications: an in-process broker fed by commits, read by the SSE endpoint.

`publish(scopes)` is called from the session's `after_commit` (same event loop thread as the
SSE handlers); every subscriber whose scopes intersect gets one wake-up (coalesced: a queue of
size one). With several server processes this broker only sees its own process's commits; a
deployment with more than one process needs PostgreSQL LISTEN/NOTIFY (or the client's periodic
sync as the fallback) — see docs/sync-protocol.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


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
    """Fan-out of changed scopes to subscriptions."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(self, scopes: Iterable[str]) -> Subscription:
        """Start listening for changes in `scopes`."""
        sub = Subscription(scopes)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop listening."""
        self._subs.discard(sub)

    def publish(self, scopes: Iterable[str]) -> None:
        """Wake every subscription with a changed scope."""
        changed = frozenset(scopes)
        for sub in list(self._subs):
            hit = sub.scopes & changed
            if hit:
                sub.offer(hit)
