"""argon2 never runs on the event loop: a login, and a storm of them, leave the loop free to
serve other requests, and the storm takes at most `PASSWORD_THREADS` threads (issue 13).

The real `login` service runs on both databases next to a ticker task on the same loop, which
wakes every millisecond and notes when it woke and whether a password thread was busy then.
Each argon2 check (30-400 ms of CPU here) notes when it started and ended: the real
`passwords.verify_password` / `hash_password`, wrapped by the test. The proof is that the
ticker woke *inside* the checks. On the loop it cannot: the loop is blocked from a check's
start to its end, so no tick falls strictly inside, however idle or loaded the machine. Off the
loop it wakes throughout, at a pace that depends on the CPU the other processes of this shared
2-core machine leave it (gaps up to ~75 ms measured under load 4): which is why the test counts
ticks inside the checks instead of bounding the loop's longest gap by one check's cost, which
failed now and then under load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import pytest

from schemas.auth import LoginRequest
from server.auth import passwords
from server.config import Settings
from server.domain.auth.services import LoginRefused, login
from tests.conftest import DEMO_PASSWORD
from tests.integration.dispatch_helpers import in_db

#: ticks each check must contain: one is proof enough; off the loop there are dozens (a check
#: takes 30-400 ms), so two still leave room for a loop preempted by other processes
INSIDE = 2


@dataclass
class Ticks:
    """What the ticker saw: when it woke (perf_counter), and at each tick the password threads
    busy and the threads of the loop's shared pool (anyio's default limiter) busy."""

    at: list[float] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    shared: list[int] = field(default_factory=list)

    def inside(self, spans: list[tuple[float, float]]) -> list[int]:
        """How often the loop woke strictly inside each span."""
        return [sum(1 for t in self.at if start < t < end) for start, end in spans]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, float]]]:
    """(start, end) of every argon2 hash and check from now on: the real functions, timed."""
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                with lock:
                    spans.append((start, time.perf_counter()))

        return run

    monkeypatch.setattr(passwords, "verify_password", timed(passwords.verify_password))
    monkeypatch.setattr(passwords, "hash_password", timed(passwords.hash_password))
    yield spans


async def ticking(work: Awaitable[Any]) -> tuple[Ticks, Any]:
    """Run `work` next to a 1 ms ticker on the same loop; what the ticker saw, and the result."""
    done = asyncio.Event()
    seen = Ticks()
    shared = anyio.to_thread.current_default_thread_limiter()

    async def tick() -> None:
        while not done.is_set():
            await asyncio.sleep(0.001)
            seen.at.append(time.perf_counter())
            seen.busy.append(passwords.password_limiter().borrowed_tokens)
            seen.shared.append(shared.borrowed_tokens)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.005)  # the ticker runs before the work starts
    try:
        result = await work
    finally:
        done.set()
    await ticker
    return seen, result


def test_a_login_leaves_the_event_loop_free(
    settings: Settings, checks: list[tuple[float, float]]
) -> None:
    request = LoginRequest(username="dispatcher", password=DEMO_PASSWORD, device_id="loop-probe")
    wrong = LoginRequest(username="nobody-here", password="wrong-password", device_id="loop-probe")

    async def good(session: Any) -> tuple[Ticks, Any]:
        return await ticking(login(session, settings, request, "127.0.0.9"))

    async def refused(session: Any) -> Ticks:
        async def attempt() -> None:
            try:
                await login(session, settings, wrong, "127.0.0.9")
            except LoginRefused:
                return
            raise AssertionError("an unknown user signed in")

        return (await ticking(attempt()))[0]

    seen, pair = in_db(settings.database_url, good)
    assert pair.access_token
    assert len(checks) == 1 and min(seen.inside(checks)) >= INSIDE, (checks, seen.at)
    # An unknown user is checked against the dummy hash: off the loop as well.
    checks.clear()
    seen = in_db(settings.database_url, refused)
    assert len(checks) == 1 and min(seen.inside(checks)) >= INSIDE, (checks, seen.at)


def test_a_login_storm_takes_a_bounded_number_of_threads(
    checks: list[tuple[float, float]],
) -> None:
    digest = passwords.hash_password("right")
    checks.clear()
    storm = 3 * passwords.PASSWORD_THREADS + 2

    async def main() -> tuple[Ticks, list[Any]]:
        async def all_checks() -> list[Any]:
            return list(
                await asyncio.gather(
                    *(passwords.verify_password_async(digest, "wrong") for _ in range(storm)),
                    passwords.verify_password_async(digest, "right"),
                    passwords.hash_password_async("new"),
                )
            )

        return await ticking(all_checks())

    seen, results = asyncio.run(main())
    assert results[:-1] == [False] * storm + [True] and str(results[-1]).startswith("$argon2id$")
    # The loop kept waking through the storm, with never more than PASSWORD_THREADS checks
    # running at once (the rest queued for them), and its shared thread pool left alone.
    assert len(checks) == storm + 2
    assert min(seen.inside(checks)) >= INSIDE, (checks, seen.at)
    assert max(seen.busy) == passwords.PASSWORD_THREADS
    assert set(seen.shared) == {0}
