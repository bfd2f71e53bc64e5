"""Hybrid logical clock packed into one int64.

Layout: the top 48 bits are milliseconds since the Unix epoch, the low 16 bits a counter. Packed
values compare like (ms, counter) tuples, so LWW compares plain integers. 48 bits of milliseconds
last until the year 10889 and the packed value stays below 2**63 (a signed BIGINT) until the year
6429.

The clock reads time through an injected `Clock`, so tests drive time by hand and no logic calls
`time.time()` directly.
"""

from __future__ import annotations

import time
from typing import Protocol

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1


class Clock(Protocol):
    """Source of wall-clock time."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch (UTC)."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch (UTC)."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told (tests, benchmarks, replays)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.ms = start_ms

    def now_ms(self) -> int:
        """The current manual time."""
        return self.ms

    def advance(self, ms: int = 1) -> None:
        """Move time forward by `ms`."""
        self.ms += ms


def pack(ms: int, counter: int) -> int:
    """Pack (milliseconds, counter) into one integer."""
    return (ms << COUNTER_BITS) | (counter & COUNTER_MASK)


def unpack(hlc: int) -> tuple[int, int]:
    """Split a packed HLC into (milliseconds, counter)."""
    return hlc >> COUNTER_BITS, hlc & COUNTER_MASK


class HLC:
    """A hybrid logical clock.

    Promises: `now()` is strictly greater than every value it returned before and every value
    passed to `update()`; it stays within a few milliseconds of the wall clock unless a remote
    clock ran ahead (then it follows the remote, as HLCs do).
    """

    def __init__(self, clock: Clock, last: int = 0) -> None:
        self._clock = clock
        self._last = last

    @property
    def last(self) -> int:
        """The last value issued or observed (persist it to stay monotonic across restarts)."""
        return self._last

    def now(self) -> int:
        """A new timestamp for a local event."""
        wall = self._clock.now_ms()
        last_ms, counter = unpack(self._last)
        if wall > last_ms:
            self._last = pack(wall, 0)
        elif counter < COUNTER_MASK:
            self._last = pack(last_ms, counter + 1)
        else:
            # Counter exhausted within one millisecond: borrow the next millisecond rather than
            # wrap, so the clock never goes backwards.
            self._last = pack(last_ms + 1, 0)
        return self._last

    def update(self, remote: int) -> int:
        """Observe a remote timestamp; return a new local one greater than both."""
        self._last = max(self._last, remote)
        return self.now()
