"""Waiting for a usable fix: threshold, timeout, explicit acceptance of a worse fix; no sleeps
(the simulated clock moves when the wait naps)."""

from __future__ import annotations

import asyncio

import pytest

from mobile.core.clock import ManualClock
from mobile.core.geo import (
    FixedGeolocator,
    TrackGeolocator,
    TrackPoint,
    haversine_m,
    usable_fix,
    wait_for_fix,
)


def _track(clock: ManualClock) -> TrackGeolocator:
    # A cold GPS: coarse at first, then better.
    return TrackGeolocator(
        [
            TrackPoint(2, 121.48, 31.23, 3000.0),
            TrackPoint(5, 121.4855, 31.2375, 60.0),
            TrackPoint(9, 121.4856, 31.2376, 8.0),
        ],
        now=clock,
    )


def test_waits_until_the_fix_is_accurate_enough() -> None:
    clock = ManualClock()
    seen: list[float | None] = []
    result = asyncio.run(
        wait_for_fix(
            _track(clock),
            threshold_m=10,
            timeout_s=30,
            now=clock,
            sleep=clock.sleep,
            on_progress=lambda f: seen.append(f.accuracy_m if f else None),
        )
    )
    assert result.accurate and result.fix is not None and result.fix.accuracy_m == 8.0
    assert not result.timed_out
    assert seen[:3] == [None, None, 3000.0] and 60.0 in seen  # live accuracy while waiting


def test_timeout_offers_the_best_fix_but_only_explicitly() -> None:
    clock = ManualClock()
    result = asyncio.run(
        wait_for_fix(_track(clock), threshold_m=5, timeout_s=7, now=clock, sleep=clock.sleep)
    )
    assert result.timed_out and not result.accurate and result.fix is None
    assert result.best is not None and result.best.accuracy_m == 60.0
    assert result.accept_worse() == result.best  # the user's explicit choice


def test_no_fix_at_all_cannot_be_accepted() -> None:
    clock = ManualClock()
    track = TrackGeolocator([TrackPoint(100, 0, 0, 5)], now=clock)
    result = asyncio.run(wait_for_fix(track, timeout_s=3, now=clock, sleep=clock.sleep))
    assert result.best is None
    with pytest.raises(LookupError):
        result.accept_worse()


def test_a_stale_fix_is_not_usable() -> None:
    clock = ManualClock()
    geo = TrackGeolocator([TrackPoint(0, 121.0, 31.0, 5.0)], now=clock)
    geo.start()
    assert usable_fix(geo, max_age_s=60, now=clock) is not None
    clock.advance(61)
    assert usable_fix(geo, max_age_s=60, now=clock) is None
    result = asyncio.run(wait_for_fix(geo, max_age_s=30, timeout_s=2, now=clock, sleep=clock.sleep))
    assert result.best is None  # an old fix is no position


def test_fixed_geolocator_and_haversine() -> None:
    geo = FixedGeolocator(121.4855, 31.2375, 4.0)
    assert geo.last_fix() is None
    geo.start()
    fix = geo.last_fix()
    assert fix is not None and fix.point() == {"type": "Point", "coordinates": [121.4855, 31.2375]}
    # One degree of latitude is about 111.2 km.
    assert abs(haversine_m(121.0, 31.0, 121.0, 32.0) - 111_195) < 50
