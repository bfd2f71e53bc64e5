"""A task's steps of the same instant show in the order of the task's lifecycle, on the phone
and in the server's reads (its SQL order), by the one rank in `schemas.states` (two offline
taps within a millisecond came back swapped when the server's order for such ties was not
defined)."""

from __future__ import annotations

import itertools

from sqlalchemy import create_engine, literal, select

from mobile.core.views import _timeline_order
from schemas.states import TaskStatus, task_step_rank
from server.domain.dispatch.services import step_rank


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
    shown = [(s["to"], "note" in s) for s in sorted(steps, key=_timeline_order)]
    assert shown == [
        ("assigned", False),
        ("accepted", False),
        ("en_route", False),
        ("en_route", True),
        ("on_scene", False),
        ("completed", False),
    ]


def test_the_servers_sql_rank_is_the_shared_rank() -> None:
    statuses = [*(s.value for s in TaskStatus), "unknown", None]
    pairs = list(itertools.product(statuses, repeat=2))
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        for to_status, from_status in pairs:
            in_sql = conn.scalar(select(step_rank(literal(to_status), literal(from_status))))
            assert in_sql == task_step_rank(to_status, from_status), (to_status, from_status)
    assert len({task_step_rank(s.value) for s in TaskStatus}) == len(TaskStatus)
