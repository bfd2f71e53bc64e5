"""Garbage-collector settings of the processes that carry bulk work (a serving process's
lifespan, a phone's sync): what start-up built is frozen, and a request's or a page's working
set does not start collections that cannot free it (`server.app.frozen_heap`,
`sync.client.collector_paused`; the pull benchmark measured those passes at 15-25 % of the
server's CPU and a third of the phone's wall time)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from server.app import YOUNG_COLLECTION_AFTER, frozen_heap

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def collections_started() -> Iterator[list[int]]:
    """The generations of the collections that start inside the block, in order."""
    started: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)


async def test_serving_freezes_start_up_and_lets_a_page_come_and_go_without_collections() -> None:
    before = gc.get_threshold()
    assert gc.isenabled()  # else no collection could start, whatever the threshold
    async with frozen_heap(None):  # type: ignore[arg-type]
        assert gc.get_threshold() == YOUNG_COLLECTION_AFTER
        assert gc.get_freeze_count() > 0
        with collections_started() as started:
            # A request's working set (a pull page's dicts: its records' structs are not
            # tracked), alive together, then freed by reference counting.
            page = [{"id": n, "fields": {"n": [n]}} for n in range(YOUNG_COLLECTION_AFTER[0] // 4)]
            del page
        assert started == []
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_serving_collects_the_cycles_requests_leave_in_small_bites() -> None:
    """Each request leaves a few dozen containers in reference cycles (its SQLAlchemy session,
    transaction and connection); a young collection walks them all at once and stops the
    process meanwhile, so it must come long before 50,000 pile up (a 100-250 ms stall)."""

    class Node:
        def __init__(self) -> None:
            self.me = self

    async with frozen_heap(None):  # type: ignore[arg-type]
        with collections_started() as started:
            for _ in range(12_000):  # garbage cycles, as 200 pulls leave behind
                Node()
    assert YOUNG_COLLECTION_AFTER[0] <= 10_000
    assert started and started[0] == 0
