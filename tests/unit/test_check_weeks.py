"""ISO weeks of the self-check schedule (server/domain/checks/schedule.py): in the deployment's
zone, the due day's end, and which weeks a submission may still name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from server.domain.checks import schedule

SHANGHAI = ZoneInfo("Asia/Shanghai")
P = schedule.CheckPolicy()


def test_a_week_is_read_in_the_deployments_zone() -> None:
    # Sunday 23:30 in Shanghai is still week 48 there, though Monday has begun nowhere else...
    sunday_night = datetime(2026, 11, 29, 23, 30, tzinfo=SHANGHAI)
    assert schedule.week_of(sunday_night, P) == "2026-W48"
    # ...and Monday 00:30 in Shanghai (Sunday in UTC) is week 49.
    monday = datetime(2026, 11, 30, 0, 30, tzinfo=SHANGHAI)
    assert monday.astimezone(UTC).day == 29
    assert schedule.week_of(monday, P) == "2026-W49"


def test_due_day_end_and_week_end() -> None:
    assert schedule.due_day("2026-W48", 5).isoformat() == "2026-11-27"
    assert schedule.due_at("2026-W48", 7, P) == datetime(2026, 11, 30, tzinfo=SHANGHAI)
    assert schedule.week_end("2026-W48", P) == datetime(2026, 11, 30, tzinfo=SHANGHAI)
    assert schedule.week_offset("2026-W53", 1) == "2027-W01"  # 2026 has 53 ISO weeks
    assert schedule.week_offset("2027-W01", -1) == "2026-W53"


def test_which_weeks_a_submission_may_name() -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert schedule.accepts_week("2026-W48", now, P)
    assert schedule.accepts_week("2026-W47", now, P)
    assert not schedule.accepts_week("2026-W46", now, P)
    assert not schedule.accepts_week("2026-W49", now, P)  # the future
    assert not schedule.accepts_week("2025-W53", now, P)  # 2025 has no week 53
    assert schedule.accepts_week("2026-W46", now, schedule.CheckPolicy(grace_weeks=2))


@given(
    at=st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
        max_value=datetime(2090, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    weeks=st.integers(-200, 200),
)
def test_weeks_count_and_contain_their_moments(at: datetime, weeks: int) -> None:
    week = schedule.week_of(at, P)
    # The moment lies inside its week, and moving n weeks and back is the identity.
    assert schedule.week_end(schedule.week_offset(week, -1), P) <= at < schedule.week_end(week, P)
    assert schedule.week_offset(schedule.week_offset(week, weeks), -weeks) == week
    assert schedule.weeks_between(week, schedule.week_offset(week, weeks)) == weeks
    assert schedule.week_of(at + timedelta(weeks=weeks), P) == schedule.week_offset(week, weeks)
