"""Outbox and sync: what waits, what was refused and why, photos pending, last sync, data
used, and "send now"."""

from __future__ import annotations

import time
from typing import Any

from kivy.metrics import dp

from i18n import N_
from mobile.screens.common import FieldScreen
from mobile.ui import tr

ENTITY = {
    "hazard": N_("Hazard report"),
    "hazard_step": N_("Hazard step"),
    "task_step": N_("Task step"),
    "check_submission": N_("Self-check"),
    "position_fix": N_("Position"),
}


class OutboxScreen(FieldScreen):
    """Every queued item with its state, and the sender's status."""

    def fetch(self, core: Any) -> dict[str, Any]:
        lang = tr.lang
        rows = []
        items = [i for i in core.outbox.items() if i.entity != "position_fix"]
        for i in reversed(items):
            what = tr._(ENTITY.get(i.entity, i.entity))
            detail = i.fields.get("to_status") or i.fields.get("category") or ""
            rows.append(
                {
                    "viewclass": "RecordRow",
                    "title": f"{what} · {detail}" if detail else what,
                    "line2": i.state_text(lang),
                    "line3": i.reason(lang) or "",
                    "tag": i.state_text(lang).split(" · ")[0],
                    "tag_alarm": str(i.state) == "refused",
                    "target": "",
                    "key": None,
                    "extra": None,
                    "size": (None, dp(96)),
                }
            )
        counts = {str(k): v for k, v in core.outbox.counts().items()}
        photos = [p for p in core.photos.all() if str(p.state) != "stored"]
        used = core.usage.total().text(tr.lang) if hasattr(core, "usage") else ""
        return {"rows": rows, "counts": counts, "photos": len(photos), "used": used}

    def show(self, data: Any) -> None:
        if data is None:
            return
        app = self.app
        c = data["counts"]
        ids = self.ids
        ids.rv.data = data["rows"]
        waiting = c.get("waiting", 0) + c.get("sending", 0)
        ids.waiting.text = tr.n_("{n} item waiting to send", "{n} items waiting to send", waiting)
        ids.refused.text = tr.n_("{n} item refused", "{n} items refused", c.get("refused", 0))
        ids.sent.text = tr.n_("{n} item sent", "{n} items sent", c.get("sent", 0))
        ids.photos.text = tr.n_(
            "{n} photo waiting to upload", "{n} photos waiting to upload", data["photos"]
        )
        if app.last_sync:
            ago = max(0, int(time.time() - app.last_sync))
            last = (
                tr._("Last sync {n} s ago", n=ago)
                if ago < 120
                else tr._("Last sync {n} min ago", n=ago // 60)
            )
        else:
            last = tr._("Not synced yet")
        link = (
            tr._("Sending…")
            if app.syncing
            else (tr._("Online") if app.online else tr._("Offline: will retry"))
        )
        ids.status.text = f"{link} · {last}"
        ids.used.text = data["used"] or tr._("Data used: {kb} KB", kb=app.data_used // 1024)

    def send_now(self) -> None:
        self.app.request_sync()
        self.refresh()


SCREEN = OutboxScreen
