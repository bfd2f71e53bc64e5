"""Which hazard steps this phone's user may take now, and the evidence each needs.

The server decides (`server/domain/hazards/services.py`, `_authorise`; docs/hazards.md); this
is the same table seen from the phone, so the hazard screen offers only steps the server would
take: the grid's inspector re-inspects, closes or reopens a rectified hazard; the organisation
(or enterprise) assigned the rectification reports it rectified with after-photos. Dispatch
works from the console, not the phone.
"""

from __future__ import annotations

from dataclasses import dataclass

from i18n import N_
from schemas.states import HAZARD_TRANSITIONS, HazardStatus, can_transition


@dataclass(frozen=True, slots=True)
class StepChoice:
    """A step the user may take: the action to call and what it needs."""

    to: HazardStatus
    action: str  # the `FieldActions` method
    label: str  # English source; the screen translates it
    needs_reason: bool = False
    needs_photos: bool = False
    evidence: str = ""  # what to bring, English source


REINSPECT = StepChoice(
    HazardStatus.REINSPECTED,
    "reinspect_hazard",
    N_("Re-inspected: the rectification holds"),
    evidence=N_("Look at the place; a note is optional"),
)
CLOSE = StepChoice(HazardStatus.CLOSED, "close_hazard", N_("Close the hazard"))
REOPEN = StepChoice(
    HazardStatus.REOPENED,
    "reopen_hazard",
    N_("Reopen: not fixed"),
    needs_reason=True,
    evidence=N_("A reason is required"),
)
RECTIFIED = StepChoice(
    HazardStatus.RECTIFIED,
    "mark_rectified",
    N_("Report rectified"),
    needs_photos=True,
    evidence=N_("After-photos are required"),
)


def hazard_steps(
    status: str, role: str, *, my_org_id: str | None, rectify_org_id: str | None
) -> list[StepChoice]:
    """The steps `role` may take on a hazard in `status` (inspectors hold only their own
    grids' hazards, so an inspector holding it is its grid's inspector)."""
    current = HazardStatus(status)
    options: list[StepChoice] = []
    if role == "inspector":
        if current is HazardStatus.RECTIFIED:
            options += [REINSPECT, REOPEN]
        elif current is HazardStatus.REINSPECTED:
            options += [CLOSE, REOPEN]
    if current is HazardStatus.RECTIFICATION_ASSIGNED and my_org_id and my_org_id == rectify_org_id:
        options.append(RECTIFIED)
    return [o for o in options if can_transition(HAZARD_TRANSITIONS, current, o.to)]
