"""Field actions: one function per thing a field user does, each one local write plus its
outbox entry in one transaction (`ClientStore.write`), stamped with the device time and the
current GPS fix.

Every action here is one the server accepts through sync (docs/sync-protocol.md §12): a
hazard's report, correction and withdrawal (`hazard` c/u/d), each hazard step
(`hazard_step`), each task step and progress note (`task_step`), a self-check
(`check_submission`), a position fix (`position_fix`). Steps get uuid7 ids (time-ordered), made
once, so a retried push is the same step. What no server state could accept (a decline
without a reason, a rectification without after-photos, a step the task's current status does
not allow) is refused here at once with the same `rule` the server would name, so the user can
fix it before leaving the form.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mobile.core.clock import Now, instant, rfc3339, utcnow
from mobile.core.geo import Fix, Geolocator, usable_fix
from mobile.core.photos import PhotoRef, PhotoStore
from schemas.ids import uuid7
from schemas.states import (
    HAZARD_TRANSITIONS,
    TASK_TRANSITIONS,
    HazardStatus,
    TaskStatus,
    can_transition,
)
from schemas.sync import Op
from sync.store import ClientStore


class ActionRefusedError(ValueError):
    """The phone refuses an action before queuing it; `rule` is the server's name for the
    same refusal (translated for the user by `mobile.core.i18n`)."""

    def __init__(self, rule: str, message: str, field: str = "") -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.field = field


class BeingSentError(ActionRefusedError):
    """The record is in a push right now: it can be edited once the answer is in."""

    def __init__(self, entity: str, record_id: uuid.UUID) -> None:
        super().__init__("being_sent", f"{entity} {record_id} is being sent")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One answered item of a self-check: `pass`, `fail` or `na`, with a note and photos."""

    item_id: str
    result: str
    note: str | None = None
    photos: Sequence[PhotoRef] = ()


InFlight = Callable[[str, uuid.UUID], bool]


class FieldActions:
    """The actions of one signed-in user on one store."""

    def __init__(
        self,
        store: ClientStore,
        *,
        photos: PhotoStore | None = None,
        geolocator: Geolocator | None = None,
        now: Now = utcnow,
        in_flight: InFlight | None = None,
        fix_max_age_s: float = 120.0,
        on_write: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.on_write = on_write  # told the entity after each write (wakes the sender)
        self._last_stamp: datetime | None = None
        self.photos = photos
        self.geolocator = geolocator
        self._now = now
        self._in_flight = in_flight
        self.fix_max_age_s = fix_max_age_s

    # -- plumbing ---------------------------------------------------------------------------
    def _stamp(self) -> str:
        """The device time for a write, strictly after the previous stamp of this phone (the
        server orders a timeline by it: two steps in one millisecond keep the user's order)."""
        now = self._now()
        at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the wire's precision
        last = self._last_stamp
        if last is not None and at <= last:
            at = last + timedelta(milliseconds=1)
        self._last_stamp = at
        return rfc3339(at)

    def _fix(self, fix: Fix | None) -> Fix | None:
        """The fix a write carries: the one given if it is fresh, else the geolocator's
        current one if fresh (a fix older than `fix_max_age_s` is nobody's position now: a
        form left open for an hour must not report the hazard where the user was then)."""
        if fix is not None:
            return fix if fix.age_s(self._now()) <= self.fix_max_age_s else None
        return usable_fix(self.geolocator, max_age_s=self.fix_max_age_s, now=self._now)

    def _ids(self, photos: Sequence[PhotoRef]) -> list[str]:
        """The ids a write names: the server's where it answered one for the same bytes (a
        screen or draft may hold a ref made before the photo was declared)."""
        if self.photos is None:
            return list(dict.fromkeys(p.media_id for p in photos))
        return list(dict.fromkeys(self.photos.media_id(p) for p in photos))

    def _link(self, entity: str, rid: uuid.UUID, photos: Sequence[PhotoRef]) -> None:
        # Linked before the write: a link to a record that never got written is harmless,
        # a written record without its link would show "0 of 0 photos".
        if photos and self.photos is not None:
            self.photos.link(entity, str(rid), photos)

    def _write(
        self, entity: str, rid: uuid.UUID, fields: dict[str, Any], op: Op = Op.CREATE
    ) -> uuid.UUID:
        self.store.write(entity, rid, {k: v for k, v in fields.items() if v is not None}, op=op)
        if self.on_write is not None:
            self.on_write(entity)
        return rid

    def _editable(self, entity: str, rid: uuid.UUID) -> None:
        if self._in_flight is not None and self._in_flight(entity, rid):
            raise BeingSentError(entity, rid)

    # -- hazards ----------------------------------------------------------------------------
    def report_hazard(
        self,
        *,
        category: str,
        severity: str,
        description: str,
        fix: Fix | None = None,
        enterprise_id: str | None = None,
        photos: Sequence[PhotoRef] = (),
    ) -> uuid.UUID:
        """Report a hazard where the user stands (or at `fix`). A hazard needs a place: with
        no fix at all the report is refused (`location_required`)."""
        where = self._fix(fix)
        if where is None:
            raise ActionRefusedError("location_required", "no position fix", "location")
        if not description.strip():
            raise ActionRefusedError("invalid", "a description is needed", "description")
        rid = uuid7()
        self._link("hazard", rid, photos)
        return self._write(
            "hazard",
            rid,
            {
                "category": category,
                "severity": severity,
                "description": description,
                "location": where.point(),
                "accuracy_m": where.accuracy_m,
                "reported_at": self._stamp(),
                "enterprise_id": enterprise_id,
                "photo_ids": self._ids(photos),
            },
        )

    def correct_hazard(
        self,
        hazard_id: uuid.UUID,
        *,
        category: str | None = None,
        severity: str | None = None,
        description: str | None = None,
        fix: Fix | None = None,
        add_photos: Sequence[PhotoRef] = (),
    ) -> uuid.UUID:
        """Correct a reported hazard: the fields given (a new `fix` moves it), photos added."""
        self._editable("hazard", hazard_id)
        fields: dict[str, Any] = {
            "category": category,
            "severity": severity,
            "description": description,
        }
        if fix is not None:
            fields["location"], fields["accuracy_m"] = fix.point(), fix.accuracy_m
        if add_photos:
            fields["photo_ids"] = self._ids(add_photos)
        fields = {k: v for k, v in fields.items() if v is not None}
        if not fields:
            raise ActionRefusedError("invalid", "nothing to correct")
        self._link("hazard", hazard_id, add_photos)
        return self._write("hazard", hazard_id, fields, Op.UPDATE)

    def withdraw_hazard(self, hazard_id: uuid.UUID) -> uuid.UUID:
        """Withdraw (delete) a hazard report."""
        self._editable("hazard", hazard_id)
        return self._write("hazard", hazard_id, {}, Op.DELETE)

    def _hazard_step(
        self,
        hazard_id: uuid.UUID,
        to: HazardStatus,
        *,
        note: str | None = None,
        photos: Sequence[PhotoRef] = (),
        **extra: Any,
    ) -> uuid.UUID:
        current = self.hazard_status(hazard_id)
        if current is not None and not can_transition(HAZARD_TRANSITIONS, current, to):
            raise ActionRefusedError(
                "illegal_transition", f"hazard is {current}, cannot go to {to}", "to_status"
            )
        step = uuid7()
        self._link("hazard_step", step, photos)
        fields = {
            "hazard_id": str(hazard_id),
            "to_status": str(to),
            "note": note,
            "photo_ids": self._ids(photos) or None,
            "at": self._stamp(),
            **extra,
        }
        return self._write("hazard_step", step, fields)

    def verify_hazard(self, hazard_id: uuid.UUID, note: str | None = None) -> uuid.UUID:
        """Confirm a reported hazard is real."""
        return self._hazard_step(hazard_id, HazardStatus.VERIFIED, note=note)

    def reject_hazard(self, hazard_id: uuid.UUID, reason: str) -> uuid.UUID:
        """Reject a report; a reason is required."""
        _need_reason(reason)
        return self._hazard_step(hazard_id, HazardStatus.REJECTED, note=reason)

    def assign_rectification(
        self,
        hazard_id: uuid.UUID,
        *,
        deadline: datetime,
        enterprise_id: str | None = None,
        org_id: str | None = None,
        note: str | None = None,
    ) -> uuid.UUID:
        """Assign the rectification to an enterprise or an organisation, with a deadline."""
        if (enterprise_id is None) == (org_id is None):
            raise ActionRefusedError(
                "assignee_required", "name one enterprise or one organisation", "assignee_org_id"
            )
        return self._hazard_step(
            hazard_id,
            HazardStatus.RECTIFICATION_ASSIGNED,
            note=note,
            assignee_enterprise_id=enterprise_id,
            assignee_org_id=org_id,
            deadline=rfc3339(deadline),
        )

    def mark_rectified(
        self, hazard_id: uuid.UUID, photos: Sequence[PhotoRef], note: str | None = None
    ) -> uuid.UUID:
        """Report the hazard rectified; after-photos are required."""
        if not photos:
            raise ActionRefusedError("evidence_required", "after-photos are needed", "photo_ids")
        return self._hazard_step(hazard_id, HazardStatus.RECTIFIED, note=note, photos=photos)

    def reinspect_hazard(self, hazard_id: uuid.UUID, note: str | None = None) -> uuid.UUID:
        """Record the re-inspection of a rectified hazard."""
        return self._hazard_step(hazard_id, HazardStatus.REINSPECTED, note=note)

    def close_hazard(self, hazard_id: uuid.UUID, note: str | None = None) -> uuid.UUID:
        """Close the hazard."""
        return self._hazard_step(hazard_id, HazardStatus.CLOSED, note=note)

    def reopen_hazard(self, hazard_id: uuid.UUID, reason: str) -> uuid.UUID:
        """Reopen a hazard; a reason is required."""
        _need_reason(reason)
        return self._hazard_step(hazard_id, HazardStatus.REOPENED, note=reason)

    def hazard_status(self, hazard_id: uuid.UUID) -> HazardStatus | None:
        """The hazard's status as the phone sees it: its last queued step, else the record's
        (None when the phone does not hold the hazard: the server decides)."""
        last = _last_pending(self.store, "hazard_step", "hazard_id", str(hazard_id))
        if last is not None:
            return HazardStatus(last)
        record = self.store.get("hazard", hazard_id)
        status = record.get("status") if record else None
        return HazardStatus(status) if status else None

    # -- tasks ------------------------------------------------------------------------------
    def _task_step(
        self,
        task_id: uuid.UUID,
        to: TaskStatus | None,
        *,
        note: str | None = None,
        photos: Sequence[PhotoRef] = (),
        fix: Fix | None = None,
    ) -> uuid.UUID:
        if to is not None:
            current = self.task_status(task_id)
            if current is not None and not can_transition(TASK_TRANSITIONS, current, to):
                raise ActionRefusedError(
                    "illegal_transition", f"task is {current}, cannot go to {to}", "to_status"
                )
        where = self._fix(fix)
        step = uuid7()
        self._link("task_step", step, photos)
        fields = {
            "task_id": str(task_id),
            "to_status": str(to) if to is not None else None,
            "note": note,
            "at": self._stamp(),
            "location": where.point() if where else None,
            "accuracy_m": where.accuracy_m if where else None,
            "device_id": self.store.device_id,
            "photo_ids": self._ids(photos) or None,
        }
        return self._write("task_step", step, fields)

    def accept_task(self, task_id: uuid.UUID, fix: Fix | None = None) -> uuid.UUID:
        """Accept an assigned task."""
        return self._task_step(task_id, TaskStatus.ACCEPTED, fix=fix)

    def decline_task(self, task_id: uuid.UUID, reason: str, fix: Fix | None = None) -> uuid.UUID:
        """Decline an assigned task; a reason is required (dispatch passes it on)."""
        _need_reason(reason)
        return self._task_step(task_id, TaskStatus.DECLINED, note=reason, fix=fix)

    def en_route(self, task_id: uuid.UUID, fix: Fix | None = None) -> uuid.UUID:
        """Set off to the task."""
        return self._task_step(task_id, TaskStatus.EN_ROUTE, fix=fix)

    def on_scene(self, task_id: uuid.UUID, fix: Fix | None = None) -> uuid.UUID:
        """Arrive at the task's place."""
        return self._task_step(task_id, TaskStatus.ON_SCENE, fix=fix)

    def complete_task(
        self,
        task_id: uuid.UUID,
        note: str | None = None,
        photos: Sequence[PhotoRef] = (),
        fix: Fix | None = None,
    ) -> uuid.UUID:
        """Complete the task, with an optional note and photos."""
        return self._task_step(task_id, TaskStatus.COMPLETED, note=note, photos=photos, fix=fix)

    def task_note(
        self,
        task_id: uuid.UUID,
        note: str,
        photos: Sequence[PhotoRef] = (),
        fix: Fix | None = None,
    ) -> uuid.UUID:
        """A progress note (no status change)."""
        if not note.strip():
            raise ActionRefusedError("invalid", "an empty note says nothing", "note")
        return self._task_step(task_id, None, note=note, photos=photos, fix=fix)

    def task_status(self, task_id: uuid.UUID) -> TaskStatus | None:
        """The task's status as the phone sees it: its last queued step, else the record's."""
        last = _last_pending(self.store, "task_step", "task_id", str(task_id))
        if last is not None:
            return TaskStatus(last)
        record = self.store.get("task", task_id)
        status = record.get("status") if record else None
        return TaskStatus(status) if status else None

    # -- self-checks and positions ----------------------------------------------------------
    def submit_check(
        self,
        *,
        enterprise_id: str | None,
        template_id: str,
        week: str,
        results: Sequence[CheckResult],
    ) -> uuid.UUID:
        """Submit a week's self-check (final once sent): every item of the template answered
        once; `enterprise_id` None lets the server take the user's enterprise."""
        if not results:
            raise ActionRefusedError("invalid", "no item answered", "results")
        rid = uuid7()
        self._link("check_submission", rid, [p for r in results for p in r.photos])
        items = [
            {
                "item_id": r.item_id,
                "result": r.result,
                **({"note": r.note} if r.note else {}),
                "photo_ids": self._ids(r.photos),
            }
            for r in results
        ]
        return self._write(
            "check_submission",
            rid,
            {
                "enterprise_id": enterprise_id,
                "template_id": template_id,
                "week": week,
                "results": items,
            },
        )

    def report_position(self, fix: Fix | None = None) -> uuid.UUID | None:
        """Queue the current fix for dispatch's map; None when there is no fix."""
        where = self._fix(fix)
        if where is None:
            return None
        return self._write(
            "position_fix",
            uuid7(),
            {
                "location": where.point(),
                "accuracy_m": where.accuracy_m,
                "at": rfc3339(where.at),
                "device_id": self.store.device_id,
            },
        )


def _need_reason(reason: str | None) -> None:
    if not (reason or "").strip():
        raise ActionRefusedError("reason_required", "a reason is required", "note")


def _last_pending(store: ClientStore, entity: str, key: str, value: str) -> str | None:
    """`to_status` of the newest step of a record the server has not confirmed in a pull:
    the last queued one, else the last one sent and acknowledged whose effect the next pull
    brings (between the push's answer and that pull the record still shows the old status;
    a step written then must build on the acknowledged one)."""
    last: str | None = None
    for m in store.pending():
        if m.entity == entity and m.fields.get(key) == value and m.fields.get("to_status"):
            last = str(m.fields["to_status"])
    if last is not None:
        return last
    acked = [
        (instant(step.get("at")), rid.bytes, str(step["to_status"]))
        for rid, step in store.all(entity).items()
        if step.get(key) == value and step.get("to_status")
    ]
    return max(acked)[2] if acked else None
