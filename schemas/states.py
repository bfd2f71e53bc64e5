"""State machines shared by the server, the sync engine and the phone.

Each machine is data: the allowed transitions and a rank that the sync merge uses so that a stale
status never reverts a later one (a delayed "accepted" arriving after "completed" loses).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

S = TypeVar("S", bound=enum.StrEnum)


class TaskStatus(enum.StrEnum):
    """Status of a dispatched task."""

    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.ASSIGNED: frozenset(
        {TaskStatus.ACCEPTED, TaskStatus.DECLINED, TaskStatus.CANCELLED}
    ),
    TaskStatus.ACCEPTED: frozenset({TaskStatus.EN_ROUTE, TaskStatus.CANCELLED}),
    TaskStatus.EN_ROUTE: frozenset({TaskStatus.ON_SCENE, TaskStatus.CANCELLED}),
    TaskStatus.ON_SCENE: frozenset({TaskStatus.COMPLETED, TaskStatus.CANCELLED}),
    TaskStatus.DECLINED: frozenset({TaskStatus.ASSIGNED, TaskStatus.CANCELLED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

# Higher rank = further along. Terminal states share the top rank.
TASK_RANK: Mapping[TaskStatus, int] = {
    TaskStatus.ASSIGNED: 0,
    TaskStatus.DECLINED: 1,
    TaskStatus.ACCEPTED: 1,
    TaskStatus.EN_ROUTE: 2,
    TaskStatus.ON_SCENE: 3,
    TaskStatus.COMPLETED: 4,
    TaskStatus.CANCELLED: 4,
}

# A task's timeline is in time order; entries of one instant (two steps tapped offline within a
# millisecond, or written in one server transaction) follow the lifecycle: the order of the
# statuses above. One definition for the server's reads (as SQL) and the phone's timeline.
TASK_STEP_ORDER: Mapping[str, int] = {status.value: n for n, status in enumerate(TaskStatus)}


def step_rank(
    order: Mapping[str, int], to_status: str | None, from_status: str | None = None
) -> int:
    """Where a timeline entry goes among those of its instant, by `order` (a machine's
    `*_STEP_ORDER`): by the status it moved the record to (unknown statuses last), and an entry
    that kept the status (a note, an escalation) after the step into that status."""
    rank = order.get(to_status or "", len(order))
    return 2 * rank + (1 if from_status is not None and from_status == to_status else 0)


def task_step_rank(to_status: str | None, from_status: str | None = None) -> int:
    """`step_rank` of a task's timeline entry (`TASK_STEP_ORDER`)."""
    return step_rank(TASK_STEP_ORDER, to_status, from_status)


class HazardStatus(enum.StrEnum):
    """Lifecycle of a hazard report (隐患闭环)."""

    REPORTED = "reported"
    VERIFIED = "verified"
    REJECTED = "rejected"
    RECTIFICATION_ASSIGNED = "rectification_assigned"
    RECTIFIED = "rectified"
    REINSPECTED = "reinspected"
    CLOSED = "closed"
    REOPENED = "reopened"


HAZARD_TRANSITIONS: Mapping[HazardStatus, frozenset[HazardStatus]] = {
    HazardStatus.REPORTED: frozenset({HazardStatus.VERIFIED, HazardStatus.REJECTED}),
    HazardStatus.VERIFIED: frozenset({HazardStatus.RECTIFICATION_ASSIGNED, HazardStatus.CLOSED}),
    HazardStatus.REJECTED: frozenset({HazardStatus.REOPENED}),
    HazardStatus.RECTIFICATION_ASSIGNED: frozenset({HazardStatus.RECTIFIED}),
    HazardStatus.RECTIFIED: frozenset({HazardStatus.REINSPECTED, HazardStatus.REOPENED}),
    HazardStatus.REINSPECTED: frozenset({HazardStatus.CLOSED, HazardStatus.REOPENED}),
    HazardStatus.CLOSED: frozenset({HazardStatus.REOPENED}),
    HazardStatus.REOPENED: frozenset({HazardStatus.VERIFIED, HazardStatus.RECTIFICATION_ASSIGNED}),
}

HAZARD_RANK: Mapping[HazardStatus, int] = {
    HazardStatus.REPORTED: 0,
    HazardStatus.VERIFIED: 1,
    HazardStatus.REJECTED: 1,
    HazardStatus.RECTIFICATION_ASSIGNED: 2,
    HazardStatus.RECTIFIED: 3,
    HazardStatus.REINSPECTED: 4,
    HazardStatus.CLOSED: 5,
    HazardStatus.REOPENED: 6,
}

# A hazard's timeline likewise: entries of one instant (steps whose `at` two clients gave
# alike, or written in one transaction at the server's clock) in the order of the statuses
# above, an escalation (the status kept) after the step into its status. Every transition goes to a
# later status except those out of REOPENED, where the loop starts again: a reopening needs an
# inspector's reason and the next step is a dispatcher's, so it never shares their instant in
# practice (tests/unit/test_timeline_order.py holds the order to the transitions).
HAZARD_STEP_ORDER: Mapping[str, int] = {status.value: n for n, status in enumerate(HazardStatus)}


def hazard_step_rank(to_status: str | None, from_status: str | None = None) -> int:
    """`step_rank` of a hazard's timeline entry (`HAZARD_STEP_ORDER`)."""
    return step_rank(HAZARD_STEP_ORDER, to_status, from_status)


class IncidentStatus(enum.StrEnum):
    """Status of an incident."""

    OPEN = "open"
    RESPONDING = "responding"
    CONTAINED = "contained"
    CLOSED = "closed"


INCIDENT_TRANSITIONS: Mapping[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.OPEN: frozenset({IncidentStatus.RESPONDING, IncidentStatus.CLOSED}),
    IncidentStatus.RESPONDING: frozenset({IncidentStatus.CONTAINED, IncidentStatus.CLOSED}),
    IncidentStatus.CONTAINED: frozenset({IncidentStatus.RESPONDING, IncidentStatus.CLOSED}),
    IncidentStatus.CLOSED: frozenset(),
}


def can_transition(transitions: Mapping[S, frozenset[S]], old: S, new: S) -> bool:
    """True when `old -> new` is an allowed step (staying put is not a step)."""
    return new in transitions.get(old, frozenset())
