"""A hazard: its photos (sent or waiting), timeline, and the steps this user may take with the
evidence each needs (the core's `hazard_steps` table)."""

from __future__ import annotations

import uuid
from typing import Any

from mobile.core.steps import StepChoice, hazard_steps
from mobile.screens.common import (
    CATEGORY,
    SEVERITY,
    STATUS,
    FieldScreen,
    distance_text,
    distance_to,
    local_time,
    photos_text,
    while_they_have_text,
    word,
)
from mobile.ui import Btn, tr


class HazardDetailScreen(FieldScreen):
    """One hazard. The note and the photos belong to the hazard they were given for (a
    draft per hazard)."""

    form = "hazard_step"
    form_fields = ("note",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps: list[StepChoice] = []

    def optional_lines_of(self) -> tuple[Any, ...]:
        # The optional lines take no room while empty (no description, deadline, steps'
        # evidence, "nothing to do", message): each left a blank band of a line and a spacing.
        ids = self.ids
        return (
            *while_they_have_text(
                ids.description, ids.meta, ids.deadline, ids.photo_state, above=ids.timeline_title
            ),
            *while_they_have_text(ids.no_steps, ids.evidence, above=ids.note),
            *while_they_have_text(ids.message, above=ids.steps),
        )

    @property
    def photos(self) -> list[Any]:
        """The photos taken for this hazard's next step."""
        return self.pending.of(self.form_key)

    def form_restored(self) -> None:
        self._show_photo_count()

    def _show_photo_count(self) -> None:
        self.ids.photo_count.text = tr.n_("{n} photo", "{n} photos", len(self.photos))

    @property
    def hazard_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.params["key"]))

    def fetch(self, core: Any) -> dict[str, Any] | None:
        found = core.views.hazards(ids=[self.hazard_id], limit=1)
        if not found:
            return None
        h = found[0]
        account = core.account
        steps = hazard_steps(
            h.status,
            account.role,
            my_org_id=account.org_id,
            rectify_org_id=h.record.get("rectify_org_id"),
        )
        return {"hazard": h, "steps": steps, "distance": distance_text(distance_to(core, h.record))}

    def show(self, data: Any) -> None:
        ids = self.ids
        if data is None:
            ids.title.text = tr._("This hazard is no longer on the phone.")
            return
        h = data["hazard"]
        rec = h.record
        ids.title.text = (
            f"{word(CATEGORY, rec.get('category'))} · {word(SEVERITY, rec.get('severity'))}"
        )
        status = word(STATUS, h.status)
        if h.overdue:
            status += " · " + tr._("Overdue")
        if h.pending:
            status += " · " + tr._("waiting to send")
        ids.status.text = status
        ids.description.text = rec.get("description") or ""
        when = local_time(rec.get("reported_at") or rec.get("created_at"))
        acc = rec.get("accuracy_m")
        where = tr._("±{m} m", m=round(acc)) if acc else ""
        ids.meta.text = " · ".join(x for x in (when, data["distance"], where) if x)
        deadline = local_time(rec.get("rectify_deadline"))
        ids.deadline.text = tr._("Rectify by {at}", at=deadline) if deadline else ""
        sent, total = h.photos_sent
        ids.photo_state.text = photos_text(sent, total) if total else tr._("No photos")
        lines = []
        for e in h.timeline:
            bits = [local_time(e.get("at")), word(STATUS, e.get("to")), e.get("note") or ""]
            lines.append(" · ".join(b for b in bits if b))
        ids.timeline.text = "\n".join(lines) or word(STATUS, h.status)
        self.steps = data["steps"]
        box = ids.steps
        box.clear_widgets()
        for step in self.steps:
            b = Btn(text=tr._(step.label), kind="danger" if step.needs_reason else "ok")
            b.bind(on_release=lambda _b, s=step: self.take(s))
            box.add_widget(b)
        ids.evidence.text = "\n".join(
            f"{tr._(s.label)}: {tr._(s.evidence)}" for s in self.steps if s.evidence
        )
        ids.no_steps.text = "" if self.steps else tr._("Nothing for you to do on this hazard now.")
        self._show_photo_count()

    def take_photo(self) -> None:
        key = self.form_key

        def got(ref: Any) -> None:
            if ref is not None:
                self.pending.of(key).append(ref)
                if key == self.form_key:
                    self.save_draft()
            self._show_photo_count()

        self.app.run_core(self.app.core.take_photo, then=got, fail=self._failed)

    def take(self, step: StepChoice) -> None:
        """Take a step with the note and photos on the form (the core refuses what is missing)."""
        actions = self.app.core.actions
        fn = getattr(actions, step.action)
        note = self.ids.note.text.strip()
        done = tr._("Saved. It is sent when the network allows.")
        key = str(self.form_key)

        def sent(_result: Any) -> None:
            self.form_sent(key)

        if step.needs_photos:
            photos = list(self.photos)
            self.act(fn, self.hazard_id, photos, note or None, done=done, then=sent)
        elif step.needs_reason:
            self.act(fn, self.hazard_id, note, done=done, then=sent)
        else:
            self.act(fn, self.hazard_id, note or None, done=done, then=sent)


SCREEN = HazardDetailScreen
