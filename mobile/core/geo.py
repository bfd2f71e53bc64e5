"""Position: the `Geolocator` interface, desktop stand-ins, and waiting for a usable fix.

A fix accepted at 3 km accuracy is worse than none (collect#4679): `wait_for_fix` waits for a
fix at or under a threshold, shows the best one so far while it waits, and when the time is up
returns the best fix *without* accepting it; only `FixWait.accept_worse()`, a deliberate act of
the user, turns a coarse fix into one an action may use.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from mobile.core.clock import Now, Sleep, utcnow

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class Fix:
    """One position fix in WGS-84 with its horizontal accuracy (metres, 68 %)."""

    lon: float
    lat: float
    accuracy_m: float
    at: datetime

    def age_s(self, now: datetime) -> float:
        """Seconds since the fix was taken."""
        return (now - self.at).total_seconds()

    def point(self) -> dict[str, Any]:
        """The fix as a GeoJSON point (the wire's location format)."""
        return {"type": "Point", "coordinates": [self.lon, self.lat]}


class Geolocator(Protocol):
    """A source of fixes. Android: the fused provider behind a foreground service (fixes keep
    coming with the screen locked); desktop: fixed or simulated."""

    def start(self) -> None:
        """Begin delivering fixes (GPS warm-up: call when a form opens)."""
        ...

    def stop(self) -> None:
        """Stop delivering fixes (battery)."""
        ...

    def last_fix(self) -> Fix | None:
        """The newest fix, or None when there has been none."""
        ...


class FixedGeolocator:
    """Always the same place: a desk in a test, or a fix the user typed in."""

    def __init__(self, lon: float, lat: float, accuracy_m: float = 5.0, now: Now = utcnow):
        self.lon, self.lat, self.accuracy_m = lon, lat, accuracy_m
        self._now = now
        self.running = False

    def start(self) -> None:
        """Start (nothing to warm up)."""
        self.running = True

    def stop(self) -> None:
        """Stop; `last_fix` then answers None."""
        self.running = False

    def last_fix(self) -> Fix | None:
        """A fresh fix at the fixed place while running."""
        if not self.running:
            return None
        return Fix(self.lon, self.lat, self.accuracy_m, self._now())


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """A point of a simulated track: where and how accurate, `t` seconds after start."""

    t: float
    lon: float
    lat: float
    accuracy_m: float


class TrackGeolocator:
    """A simulated track: the fix at clock time is the last point reached since `start()`.

    Accuracy can improve over the track, which is how a cold GPS behaves (warm-up).
    """

    def __init__(self, track: Sequence[TrackPoint], now: Now = utcnow) -> None:
        if not track:
            raise ValueError("a track needs at least one point")
        self.track = sorted(track, key=lambda p: p.t)
        self._now = now
        self.started: datetime | None = None

    def start(self) -> None:
        """Start the track at the current clock time."""
        if self.started is None:
            self.started = self._now()

    def stop(self) -> None:
        """Stop the track (the next start begins again)."""
        self.started = None

    def last_fix(self) -> Fix | None:
        """The last track point reached, stamped with the time it was reached."""
        if self.started is None:
            return None
        elapsed = (self._now() - self.started).total_seconds()
        reached = [p for p in self.track if p.t <= elapsed]
        if not reached:
            return None
        p = reached[-1]
        return Fix(p.lon, p.lat, p.accuracy_m, self.started + timedelta(seconds=p.t))


@dataclass(frozen=True, slots=True)
class FixWait:
    """The outcome of `wait_for_fix`.

    `fix` is usable (accurate and fresh) or None; `best` is the best fix seen, shown to the
    user with its accuracy when `fix` is None so they may accept it knowingly.
    """

    fix: Fix | None
    best: Fix | None
    timed_out: bool

    @property
    def accurate(self) -> bool:
        """True when a fix at or under the threshold arrived in time."""
        return self.fix is not None

    def accept_worse(self) -> Fix:
        """The user accepts the best (coarse) fix explicitly. Raises when there is none."""
        if self.fix is not None:
            return self.fix
        if self.best is None:
            raise LookupError("no fix at all to accept")
        return self.best


async def wait_for_fix(
    geolocator: Geolocator,
    *,
    threshold_m: float = 20.0,
    timeout_s: float = 30.0,
    max_age_s: float = 30.0,
    poll_s: float = 1.0,
    now: Now = utcnow,
    sleep: Sleep | None = None,
    on_progress: Callable[[Fix | None], None] | None = None,
) -> FixWait:
    """Wait until a fix at most `threshold_m` accurate and `max_age_s` old arrives, or the
    timeout. Starts the geolocator (warm-up) and leaves it running for the form.

    `on_progress` sees the best fix so far at each poll (the live accuracy the screen shows).
    """
    nap: Sleep = sleep if sleep is not None else asyncio.sleep
    geolocator.start()
    deadline = now() + timedelta(seconds=timeout_s)
    best: Fix | None = None
    while True:
        current = geolocator.last_fix()
        t = now()
        if current is not None and current.age_s(t) <= max_age_s:
            if best is None or current.accuracy_m <= best.accuracy_m or best.age_s(t) > max_age_s:
                best = current
            if current.accuracy_m <= threshold_m:
                return FixWait(current, current, timed_out=False)
        if on_progress is not None:
            on_progress(best)
        if t >= deadline:
            return FixWait(None, best, timed_out=True)
        await nap(min(poll_s, (deadline - t).total_seconds()))


def usable_fix(
    geolocator: Geolocator | None, *, max_age_s: float = 120.0, now: Now = utcnow
) -> Fix | None:
    """The current fix if there is a fresh one (an action stamps it; accuracy travels along so
    the server can weigh it), else None."""
    if geolocator is None:
        return None
    fix = geolocator.last_fix()
    if fix is None or fix.age_s(now()) > max_age_s:
        return None
    return fix


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS-84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
