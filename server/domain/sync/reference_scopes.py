"""Which phones hold which reference data: resources and contacts by area, plans by unit kind.

The rule (issue 9, "scopes that fit a province"):

- A resource is in `refarea:A`, A its deepest administrative area; a contact is in `refarea:A`
  for each area it serves. Either with no area at all is in `ref` (everyone): a record nobody
  can place must not vanish from every phone.
- A user reads `refarea:` for the *reach* of their home area (their own area, else their
  organisation's) and of the area of each of their current tasks (assigned to them or to their
  unit; not completed, cancelled or declined; not deleted: cross-county aid). The reach of an
  area A is: A and every area below it; A's ancestors (a record placed only at the city level
  serves the whole city); and A's neighbours (areas of the same level whose boundaries touch or
  overlap A's, or lie within `NEIGHBOUR_GAP_DEG` of it, which absorbs digitising gaps) with
  every area below them and their ancestors. So a district dispatcher gets their district and
  the districts around it; a community inspector gets their community and the communities next
  to it, not a whole neighbouring district.
- Administrators read every area. Dispatchers read the reach of their command area.
- A plan is in `plans` (read by dispatchers and administrators) and, while it is active, in
  `plankind:K` for every unit kind K its task templates dispatch to (templates name unit kinds,
  not units: the nearest unit of the kind is chosen when the plan runs). A responder reads
  `plankind:` of their own unit's kind.

Plain synchronous SQLAlchemy: the sync engine calls it inside its own transaction. The area
reach lives in the reference domain (`server/domain/reference/reach.py`), REST contacts use it
too; the synced values of resources, contacts and plans are `mapping.py`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from schemas.common import Role
from server.auth.principal import Principal
from server.domain.reference.reach import organisation_facts, reference_areas
from server.domain.sync.mapping import plan_unit_kinds

REF = "ref"
"""Everyone's scope (also check templates)."""
PLANS = "plans"
"""Every plan: dispatchers and administrators."""
REFAREA = "refarea:"
REFALL = "refall"
"""Every placed resource and contact: what administrators read (one cursor instead of one per
area in the country: every pull request carries a cursor per scope)."""
PLANKIND = "plankind:"

_REFERENCE_ENTITIES = frozenset({"resource", "contact", "plan", "alert"})


def _area_keys(area_ids: Iterable[Any]) -> list[str]:
    return sorted({f"{REFAREA}{a}" for a in area_ids if a})


def reference_record_scopes(entity: str, values: dict[str, Any]) -> list[str] | None:
    """The scope keys of a `resource`, `contact`, `plan` or `alert` record from its synced
    values; None for any other entity (not reference data scoped here)."""
    if entity not in _REFERENCE_ENTITIES:
        return None
    if entity == "resource":
        placed = _area_keys([values.get("area_id")])
        return [*placed, REFALL] if placed else [REF]
    if entity == "contact":
        placed = _area_keys(values.get("area_ids") or [])
        return [*placed, REFALL] if placed else [REF]
    if entity == "alert":
        # A warning reaches the phones of the deepest areas it covers (and so of their
        # neighbours and of the areas above them, by each user's reach); administrators all.
        return [*_area_keys(values.get("area_ids") or []), REFALL]
    keys = [PLANS]
    if values.get("active"):
        keys += [f"{PLANKIND}{k}" for k in plan_unit_kinds(values.get("templates") or [])]
    return keys


# -- what a user reads ---------------------------------------------------------------------


def _unit_kind(session: Session, org_id: uuid.UUID | None) -> str | None:
    return organisation_facts(session, org_id)[1]


def reference_reads(
    session: Session,
    p: Principal,
    task_areas: set[uuid.UUID] | None = None,
    version: tuple[object, ...] | None = None,
) -> set[str]:
    """The reference scope keys `p` reads now: `ref`, `refarea:` of their areas, and the plan
    keys of their role (`plans` for dispatch, `plankind:` of a responder's unit kind).
    `task_areas`, `version`: the areas of `p`'s current tasks and the areas' version, when
    the caller read them already (`reference_areas`)."""
    out = {REF}
    areas = reference_areas(session, p, task_areas, version)
    if areas is None:
        out.add(REFALL)  # administrators: one scope, not one cursor per area of the country
    else:
        out.update(_area_keys(areas))
    if p.role in (Role.ADMIN, Role.DISPATCHER):
        out.add(PLANS)
    elif p.role is Role.RESPONDER:
        kind = _unit_kind(session, p.org_id)
        if kind:
            out.add(f"{PLANKIND}{kind}")
    return out
