"""The start screen, by role: a responder's tasks; an inspector's grid hazards with what waits
for re-inspection first; an enterprise officer's self-check of the week and hazards to rectify.
"""

from __future__ import annotations

from typing import Any

from kivy.metrics import dp

from mobile.screens.common import (
    CATEGORY,
    ROLE,
    SEVERITY,
    STATUS,
    FieldScreen,
    distance_text,
    distance_to,
    local_time,
    word,
)
from mobile.ui import tr

DONE_TASK = ("completed", "cancelled", "declined")
#: how many hazards the start list shows (the list is a RecycleView: thousands scroll fine)
HAZARD_ROWS = 2000


def section(title: str) -> dict[str, Any]:
    return {"viewclass": "SectionRow", "title": title, "size": (None, dp(44))}


def task_row(core: Any, t: Any) -> dict[str, Any]:
    rec, inc = t.record, t.incident or {}
    bits = [word(STATUS, t.status) + (" ⋯" if t.pending else "")]
    if inc.get("level"):
        bits.append(tr._("Level {n}", n=inc["level"]))
    bits.append(inc.get("title") or "")
    far = distance_text(distance_to(core, rec))
    due = local_time(rec.get("deadline"))
    line3 = " · ".join(x for x in (far, tr._("due {at}", at=due) if due else "") if x)
    return {
        "viewclass": "RecordRow",
        "title": rec.get("title") or "",
        "line2": " · ".join(b for b in bits if b),
        "line3": line3,
        "tag": word(STATUS, t.status),
        "tag_alarm": t.status == "assigned",
        "target": "task",
        "key": t.id,
        "extra": None,
        "size": (None, dp(96)),
    }


def hazard_row(core: Any, h: Any) -> dict[str, Any]:
    rec = h.record
    sent, total = h.photos_sent
    photos = tr._("{done}/{total} photos", done=sent, total=total) if total else ""
    line3 = " · ".join(
        x
        for x in (
            distance_text(distance_to(core, rec)),
            local_time(rec.get("reported_at") or rec.get("created_at")),
            photos,
            tr._("waiting to send") if h.pending else "",
        )
        if x
    )
    return {
        "viewclass": "RecordRow",
        "title": f"{word(CATEGORY, rec.get('category'))} · {word(SEVERITY, rec.get('severity'))}",
        "line2": rec.get("description") or "",
        "line3": line3,
        "tag": tr._("Overdue") if h.overdue else word(STATUS, h.status),
        "tag_alarm": h.overdue,
        "target": "hazard_detail",
        "key": h.id,
        "extra": None,
        "size": (None, dp(96)),
    }


class HomeScreen(FieldScreen):
    """My work, by role."""

    def fetch(self, core: Any) -> dict[str, Any]:
        account = core.account
        role = account.role
        rows: list[dict[str, Any]] = []
        summary = ""
        if role == "inspector":
            waiting = core.views.hazards(status="rectified", limit=HAZARD_ROWS)
            others = core.views.hazards(limit=HAZARD_ROWS)
            others = [h for h in others if h.status != "rectified"]
            rows.append(section(tr._("Waiting for re-inspection ({n})", n=len(waiting))))
            rows += [hazard_row(core, h) for h in waiting]
            rows.append(section(tr._("Hazards in my grids ({n})", n=len(others))))
            rows += [hazard_row(core, h) for h in others]
            summary = tr._("{n} to re-inspect", n=len(waiting))
        elif role == "enterprise_staff":
            week = core.views.checks_this_week()
            rows.append(section(tr._("Self-check of week {week}", week=week.week)))
            for enterprise_id, tpl in week.due:
                rows.append(
                    {
                        "viewclass": "RecordRow",
                        "title": tpl.get("name") or "",
                        "line2": tr._("{n} items · not done yet", n=len(tpl.get("items") or [])),
                        "line3": tr._("Tap to fill in"),
                        "tag": tr._("Due"),
                        "tag_alarm": True,
                        "target": "selfcheck",
                        "key": tpl["id"],
                        "extra": enterprise_id,
                        "size": (None, dp(96)),
                    }
                )
            for done in week.done:
                failed = sum(1 for r in done.get("results") or [] if r.get("result") == "fail")
                rows.append(
                    {
                        "viewclass": "RecordRow",
                        "title": tr._("Submitted"),
                        "line2": tr._("{n} failed items", n=failed),
                        "line3": local_time(done.get("submitted_at")),
                        "tag": tr._("Done"),
                        "tag_alarm": False,
                        "target": "",
                        "key": None,
                        "extra": None,
                        "size": (None, dp(96)),
                    }
                )
            mine = [
                h
                for h in core.views.hazards(limit=HAZARD_ROWS)
                if h.status in ("rectification_assigned", "reopened")
                and h.record.get("rectify_org_id") in (account.org_id, None)
            ]
            rows.append(section(tr._("Hazards to rectify ({n})", n=len(mine))))
            rows += [hazard_row(core, h) for h in mine]
            summary = tr._("{n} self-checks due", n=len(week.due))
        else:
            tasks = core.views.my_tasks()
            active = [t for t in tasks if t.status not in DONE_TASK]
            done = [t for t in tasks if t.status in DONE_TASK]
            rows.append(section(tr._("My tasks ({n})", n=len(active))))
            rows += [task_row(core, t) for t in active]
            if done:
                rows.append(section(tr._("Finished ({n})", n=len(done))))
                rows += [task_row(core, t) for t in done]
            summary = tr._("{n} open tasks", n=len(active))
        who = f"{account.display_name} · {word(ROLE, role)}"
        return {"rows": rows, "who": who, "summary": summary, "role": role}

    def show(self, data: Any) -> None:
        if data is None:
            return
        self.ids.rv.data = data["rows"]
        self.ids.who.text = data["who"]
        self.ids.summary.text = data["summary"]
        self.role = data["role"]
        self.ids.report.opacity = 1 if data["role"] in ("inspector", "enterprise_staff") else 0
        self.ids.report.disabled = data["role"] not in ("inspector", "enterprise_staff")


SCREEN = HomeScreen
