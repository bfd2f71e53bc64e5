"""Drafts: an unfinished form is saved as the user types and offered back after a crash.

A form that dies with the app is the field worker's worst loss (Survey123Community#200: a
crash while taking a photo lost the whole form). The screens call `Drafts.save` on every
change (one small upsert in the phone's file, committed before it returns, so a killed app
loses at most the keystroke being typed); after a restart `Drafts.all()` lists what is waiting and
`offer_text` asks the user whether to continue. Sending the form (the action) or the user's
"discard" removes the draft (`discard`).

A draft is keyed by the form's name and what it edits (`key`: a task or hazard id, or a
fixed name such as "new" for a new report), so a form has at most one draft per record.
Photos taken for a draft are tracked by the photo store (prepared, declared and uploaded like
any other: nothing is lost when the form is finished later); the draft keeps their refs.
Drafts belong to the user's file: they stay across sign-out with the unsent items.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from mobile.core import i18n
from mobile.core.clock import Now, display_time, rfc3339, utcnow
from mobile.core.photos import PhotoRef

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Draft:
    """One saved unfinished form."""

    form: str  # the form's name, e.g. "hazard_report", "task_complete", "self_check"
    key: str  # what it edits: a record id, or "new"
    values: dict[str, Any]  # the form's fields as the screen keeps them (JSON-able)
    photos: list[PhotoRef] = field(default_factory=list)
    saved_at: datetime | None = None
    revision: int = 0  # how many times it was saved

    def offer_text(self, lang: str = i18n.DEFAULT_LANG) -> str:
        """The question shown after a restart ("continue it?") with the time it was saved."""
        when = display_time(self.saved_at) or "?"
        return i18n.text("draft_offer", lang, when=when)


class Drafts:
    """The drafts of the signed-in user (the core's connection to their file)."""

    def __init__(self, db: sqlite3.Connection, *, now: Now = utcnow) -> None:
        self.db = db
        self._now = now

    def save(
        self,
        form: str,
        values: dict[str, Any],
        *,
        key: str = "new",
        photos: Sequence[PhotoRef] = (),
    ) -> Draft:
        """Save (replace) the draft of `form` for `key`. Durable when it returns."""
        at = rfc3339(self._now())
        refs = [{"media_id": p.media_id, "sha256": p.sha256} for p in photos]
        (revision,) = self.db.execute(
            "INSERT INTO mobile_drafts(form, key, fields, photos, saved_at, revision)"
            " VALUES(?,?,?,?,?,1) ON CONFLICT(form, key) DO UPDATE SET fields=excluded.fields,"
            " photos=excluded.photos, saved_at=excluded.saved_at,"
            " revision=mobile_drafts.revision+1 RETURNING revision",
            (form, key, _enc.encode(values), _enc.encode(refs), at),
        ).fetchall()[0]
        return Draft(form, key, dict(values), list(photos), datetime.fromisoformat(at), revision)

    def get(self, form: str, key: str = "new") -> Draft | None:
        """The draft of `form` for `key`, if one was saved."""
        row = self.db.execute(
            "SELECT form, key, fields, photos, saved_at, revision FROM mobile_drafts"
            " WHERE form=? AND key=?",
            (form, key),
        ).fetchone()
        return _draft(row) if row else None

    def all(self) -> list[Draft]:
        """Every saved draft, newest first (what a restarted app offers back)."""
        rows = self.db.execute(
            "SELECT form, key, fields, photos, saved_at, revision FROM mobile_drafts"
            " ORDER BY saved_at DESC, form, key"
        )
        return [_draft(r) for r in rows]

    def discard(self, form: str, key: str = "new") -> bool:
        """Remove a draft (the form was sent, or the user discarded it). True if one was."""
        cur = self.db.execute("DELETE FROM mobile_drafts WHERE form=? AND key=?", (form, key))
        return cur.rowcount > 0


def _draft(row: tuple[Any, ...]) -> Draft:
    form, key, blob, photos, saved_at, revision = row
    refs = [PhotoRef(str(p["media_id"]), str(p["sha256"])) for p in _dec.decode(photos)]
    return Draft(
        form,
        key,
        dict(_dec.decode(blob)),
        refs,
        datetime.fromisoformat(saved_at),
        int(revision),
    )
