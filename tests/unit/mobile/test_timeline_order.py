"""A task's steps of the same instant show in the order of the task's lifecycle (the server's
order for such ties is not defined: two offline taps within a millisecond came back swapped)."""

from __future__ import annotations

from mobile.core.views import _timeline_order


def test_steps_of_one_instant_follow_the_lifecycle() -> None:
    at = "2026-11-29T10:00:00.123Z"
    steps = [
        {"at": at, "to": "en_route"},
        {"at": "2026-11-29T10:00:00.100Z", "to": "assigned"},
        {"at": at, "to": "accepted"},
        {"at": "2026-11-29T10:05:00Z", "to": "on_scene"},
    ]
    assert [s["to"] for s in sorted(steps, key=_timeline_order)] == [
        "assigned",
        "accepted",
        "en_route",
        "on_scene",
    ]
