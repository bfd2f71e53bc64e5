"""Wall-clock time for the phone core, injectable so tests never sleep.

Times the core writes are timezone-aware UTC and go on the wire as RFC 3339 with `Z`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

Now = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


def utcnow() -> datetime:
    """The device's current time, aware UTC."""
    return datetime.now(UTC)


def rfc3339(at: datetime) -> str:
    """`at` as RFC 3339 UTC with a `Z` and millisecond precision (the server keeps it)."""
    if at.tzinfo is None:
        raise ValueError("a naive time has no place on the wire")
    text = at.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


class ManualClock:
    """A clock that moves only when told (tests, simulations). `sleep` advances it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now_dt = start or datetime(2026, 11, 20, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now_dt

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now_dt += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        """An `asyncio.sleep` stand-in that advances this clock instead of waiting."""
        self.advance(seconds)
        await asyncio.sleep(0)
