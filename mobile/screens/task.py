"""A task: incident, place, distance, deadline, timeline; one large button for the next step,
decline with a reason, a progress note with photos, and "navigate" to the phone's map app."""

from __future__ import annotations

import uuid
from typing import Any

from i18n import N_
from mobile.screens.common import (
    STATUS,
    FieldScreen,
    distance_text,
    distance_to,
    local_time,
    photos_text,
    while_they_have_text,
    word,
)
from mobile.ui import tr

#: status -> (the core action for the next step, its button text)
NEXT_STEP = {
    "assigned": ("accept_task", N_("Accept")),
    "declined": ("", ""),
    "accepted": ("en_route", N_("Set off (en route)")),
    "en_route": ("on_scene", N_("Arrived on scene")),
    "on_scene": ("complete_task", N_("Complete the task")),
}


class TaskScreen(FieldScreen):
    """One task and what the responder does next. The decline reason, the progress note and
    the photos belong to the task they were given for (a draft per task)."""

    form = "task"
    form_fields = ("reason", "note")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detail: Any = None

    @property
    def photos(self) -> list[Any]:
        """The photos taken for this task's next step."""
        return self.pending.of(self.form_key)

    def optional_lines_of(self) -> tuple[Any, ...]:
        # The task's optional lines take no room while empty (no incident, place, deadline or
        # description, no message): each left a blank band of a line and a spacing.
        ids = self.ids
        return (
            *while_they_have_text(ids.incident, above=ids.status),
            *while_they_have_text(
                ids.place, ids.deadline, ids.description, ids.message, above=ids.next
            ),
        )

    def form_restored(self) -> None:
        self._show_photo_count()

    def _show_photo_count(self) -> None:
        self.ids.photo_count.text = tr.n_(
            "{n} photo to send with the next step",
            "{n} photos to send with the next step",
            len(self.photos),
        )

    @property
    def task_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.params["key"]))

    def fetch(self, core: Any) -> dict[str, Any] | None:
        detail = core.views.task(self.task_id)
        if detail is None:
            return None
        rec = detail.task.record
        timeline = [
            {
                "status": word(STATUS, e.to_status) if e.to_status else tr._("Note"),
                "at": local_time(e.at),
                "note": e.note or "",
                "pending": e.pending,
                "photos": (e.photos_done, len(e.photo_ids)),
            }
            for e in detail.timeline
        ]
        return {
            "detail": detail,
            "distance": distance_text(distance_to(core, rec)),
            "timeline": timeline,
        }

    def show(self, data: Any) -> None:
        ids = self.ids
        if data is None:
            ids.title.text = tr._("This task is no longer on the phone.")
            return
        self.detail = detail = data["detail"]
        task, rec, inc = detail.task, detail.task.record, detail.task.incident or {}
        ids.title.text = rec.get("title") or ""
        level = tr._("Level {n}", n=inc["level"]) if inc.get("level") else ""
        ids.incident.text = " · ".join(x for x in (inc.get("title") or "", level) if x)
        status = word(STATUS, task.status)
        ids.status.text = status + (" · " + tr._("waiting to send") if task.pending else "")
        coords = (rec.get("location") or {}).get("coordinates") or []
        place = f"{coords[1]:.5f}, {coords[0]:.5f}" if coords else ""
        ids.place.text = " · ".join(x for x in (place, data["distance"]) if x)
        due = local_time(rec.get("deadline"))
        ids.deadline.text = tr._("due {at}", at=due) if due else ""
        ids.description.text = rec.get("description") or ""
        action, label = NEXT_STEP.get(task.status, ("", ""))
        ids.next.text = tr._(label) if label else word(STATUS, task.status)
        ids.next.disabled = not action
        ids.decline_box.opacity = 1 if task.status == "assigned" else 0
        ids.decline_box.disabled = task.status != "assigned"
        self._show_photo_count()
        lines = []
        for e in data["timeline"]:
            done, total = e["photos"]
            bits = [e["at"], e["status"], e["note"]]
            if total:
                bits.append(photos_text(done, total))
            if e["pending"]:
                bits.append(tr._("waiting to send"))
            lines.append(" · ".join(b for b in bits if b))
        ids.timeline.text = "\n".join(lines) or tr._("No steps yet.")

    # -- actions ----------------------------------------------------------------------------
    def next_step(self) -> None:
        if self.detail is None:
            return
        action, _label = NEXT_STEP.get(self.detail.task.status, ("", ""))
        if not action:
            return
        actions = self.app.core.actions
        fn = getattr(actions, action)
        if action == "complete_task":
            key = self.form_key
            note = self.ids.note.text.strip() or None
            self.act(
                fn,
                self.task_id,
                note=note,
                photos=list(self.photos),
                done=tr._("Saved. It is sent when the network allows."),
                then=lambda _r: self.form_sent(str(key)),
            )
        else:
            self.act(fn, self.task_id, done=tr._("Saved. It is sent when the network allows."))

    def decline(self) -> None:
        key = self.form_key
        reason = self.ids.reason.text.strip()
        actions = self.app.core.actions
        self.act(
            actions.decline_task,
            self.task_id,
            reason,
            done=tr._("Declined; dispatch is told."),
            then=lambda _r: self.form_sent(str(key)),
        )

    def add_note(self) -> None:
        key = self.form_key
        self.act(
            self.app.core.actions.task_note,
            self.task_id,
            self.ids.note.text,
            photos=list(self.photos),
            done=tr._("Note saved."),
            then=lambda _r: self.form_sent(str(key)),
        )

    def take_photo(self) -> None:
        key = self.form_key

        def got(ref: Any) -> None:
            if ref is not None:
                self.pending.of(key).append(ref)
                if key == self.form_key:
                    self.save_draft()
            self._show_photo_count()

        self.app.run_core(self.app.core.take_photo, then=got, fail=self._failed)

    def navigate(self) -> None:
        if self.detail is None:
            return
        rec = self.detail.task.record
        coords = (rec.get("location") or {}).get("coordinates")
        if coords:
            lon, lat = coords[0], coords[1]
            label = (rec.get("title") or "").replace("(", " ").replace(")", " ")
            self.app.open_uri(f"geo:{lat},{lon}?q={lat},{lon}({label})")


SCREEN = TaskScreen
