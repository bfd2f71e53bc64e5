"""A task's or hazard's entries of the same instant show in the order of its lifecycle, on the
phone and in the server's reads (its SQL order), by the one rank in `schemas.states` (two
offline taps within a millisecond came back swapped when the server's order for such ties was
not defined)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import create_engine, literal, select

from mobile.core.views import in_timeline_order
from schemas.states import (
    HAZARD_STEP_ORDER,
    HAZARD_TRANSITIONS,
    TASK_STEP_ORDER,
    HazardStatus,
    TaskStatus,
    hazard_step_rank,
    step_rank,
    task_step_rank,
)
from server.crud import step_rank as step_rank_in_sql


def test_steps_of_one_instant_follow_the_lifecycle() -> None:
    at = "2026-11-29T10:00:00.123Z"
    steps = [
        {"at": at, "to": "on_scene", "from": "en_route"},
        {"at": at, "to": "en_route", "from": "en_route", "note": "stuck in traffic"},
        {"at": at, "to": "en_route", "from": "accepted"},
        {"at": "2026-11-29T10:00:00.100Z", "to": "assigned"},
        {"at": at, "to": "accepted", "from": "assigned"},
        {"at": "2026-11-29T10:05:00Z", "to": "completed", "from": "on_scene"},
    ]
    shown = [(s["to"], "note" in s) for s in in_timeline_order(steps, task_step_rank)]
    assert shown == [
        ("assigned", False),
        ("accepted", False),
        ("en_route", False),
        ("en_route", True),
        ("on_scene", False),
        ("completed", False),
    ]


def test_a_step_at_a_whole_second_goes_before_the_later_steps_of_that_second() -> None:
    """The wire leaves out a whole second's fraction: `...:18Z` came after `...:18.001000Z`
    as text, so a step stamped on the second showed after the next one (seen once in the
    phone core's responder-day test, about one step in a thousand)."""
    steps: list[dict[str, Any]] = [
        {"at": "2026-11-30T04:30:18.120000Z", "to": "on_scene", "from": "en_route"},
        {"at": "2026-11-30T04:30:18Z", "to": "en_route", "from": "accepted"},
        {"at": "2026-11-30T04:30:17.999000Z", "to": "accepted", "from": "assigned"},
        {"at": None, "to": "assigned"},
    ]
    shown = [s["to"] for s in in_timeline_order(steps, task_step_rank)]
    assert shown == ["assigned", "accepted", "en_route", "on_scene"]


@pytest.mark.parametrize(
    ("order", "statuses"),
    [(TASK_STEP_ORDER, TaskStatus), (HAZARD_STEP_ORDER, HazardStatus)],
    ids=["task", "hazard"],
)
def test_the_servers_sql_rank_is_the_shared_rank(
    order: Mapping[str, int], statuses: type[TaskStatus] | type[HazardStatus]
) -> None:
    values = [*(s.value for s in statuses), "unknown", None]
    pairs = list(itertools.product(values, repeat=2))
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        for to_status, from_status in pairs:
            in_sql = conn.scalar(
                select(step_rank_in_sql(order, literal(to_status), literal(from_status)))
            )
            assert in_sql == step_rank(order, to_status, from_status), (to_status, from_status)
    assert len({step_rank(order, s.value) for s in statuses}) == len(statuses)


def test_a_hazards_steps_go_up_its_order_except_out_of_a_reopening() -> None:
    """The hazard's order is the loop's: each allowed step goes to a later status (so steps of
    one instant read back as taken), but for the steps out of REOPENED, where the loop starts
    again; and an escalation goes after the step into the status it kept."""
    for old, news in HAZARD_TRANSITIONS.items():
        for new in news:
            if old is HazardStatus.REOPENED:
                continue
            assert hazard_step_rank(new, old) > hazard_step_rank(old), (old, new)
    assigned = HazardStatus.RECTIFICATION_ASSIGNED
    into, escalation = hazard_step_rank(assigned, "verified"), hazard_step_rank(assigned, assigned)
    assert into < escalation < hazard_step_rank("rectified", assigned)
