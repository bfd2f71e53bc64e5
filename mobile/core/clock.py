"""Wall-clock time for the phone core, injectable so tests never sleep.

Times the core writes are timezone-aware UTC and go on the wire as RFC 3339 with `Z`. Times
shown to the user are on the phone's own wall clock (`display_time`: the zone the device is
set to, as its status bar shows), everywhere the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo

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


_NO_TIME = datetime.min.replace(tzinfo=UTC)


def instant(at: datetime | str | None) -> datetime:
    """A stored or received time as an aware instant, for ordering (none, or one that does
    not parse, comes first). Never compare the texts: the server leaves out a whole second's
    fraction (`...:18Z`), which as text sorts after `...:18.001000Z` and `...:18.000Z`."""
    try:
        value = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    except ValueError:
        return _NO_TIME
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def device_zone() -> tzinfo:
    """The zone the phone is set to (the process's local time: `TZ`, `/etc/localtime`, or
    Android's setting, which its C library reads)."""
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


def display_time(
    at: datetime | str | None, *, with_date: bool = True, zone: tzinfo | None = None
) -> str:
    """`at` (an aware time or RFC 3339 text) as the user reads it: `MM-DD HH:MM` (or `HH:MM`)
    on the device's wall clock, or `zone`'s; empty for no time, the text itself when it is
    not a time. A naive time is taken as UTC (the core writes only UTC)."""
    if at is None or at == "":
        return ""
    if isinstance(at, str):
        try:
            parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            return at
        at = parsed
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(zone or device_zone())
    return local.strftime("%m-%d %H:%M" if with_date else "%H:%M")


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
