"""A settable wall clock for the push outbox tests (the worker takes `clock=` callables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class ManualClock:
    """Returns `now`, which starts at 2026-07-01 UTC and moves only by `advance`."""

    def __init__(self) -> None:
        self.now = datetime(2026, 7, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
