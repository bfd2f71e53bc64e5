"""The start screen, by role: a responder's tasks; an inspector's grid hazards with what waits
for re-inspection first; an enterprise officer's self-check of the week and hazards to rectify.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from kivy.clock import Clock
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
    photos_text,
    word,
)
from mobile.ui import tr

DONE_TASK = ("completed", "cancelled", "declined")
#: hazards read at a time for the inspector's list: the start screen shows the first page of
#: the grid's hazards (a few screens' worth) and loads the next as the user scrolls near the
#: end, so every hazard is reached by scrolling while a phone holding 10,000 starts quickly
PAGE = 60
#: the next page loads when less than this many list heights are left below the view
AHEAD = 3.0
#: an enterprise's hazards to rectify (a few: all of them are shown)
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
    photos = photos_text(sent, total) if total else ""
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


@dataclass(frozen=True)
class Part:
    """One section of a paged hazard list: its heading (with its count) and the filter of
    `Views.hazards` that lists its rows."""

    heading: str
    query: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Cursor:
    """Where the next page of a paged list starts: part `index`, after `offset` of its
    hazards; `started` once its heading is in the list."""

    parts: tuple[Part, ...]
    index: int = 0
    offset: int = 0
    started: bool = False


def hazard_page(core: Any, at: Cursor, want: int) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Up to `want` hazard rows from `at` on (each part's heading before its first row, an
    empty part's heading too), and where the next page starts (None: the list is complete).
    Runs on the core's thread."""
    rows: list[dict[str, Any]] = []
    got = 0
    while at.index < len(at.parts):
        part = at.parts[at.index]
        if not at.started:
            rows.append(section(part.heading))
            at = replace(at, started=True)
        limit = want - got
        found = core.views.hazards(**dict(part.query), limit=limit, offset=at.offset)
        rows += [hazard_row(core, h) for h in found]
        got += len(found)
        if len(found) < limit:  # this part is complete: the next one follows
            at = replace(at, index=at.index + 1, offset=0, started=False)
            continue
        return rows, replace(at, offset=at.offset + len(found))
    return rows, None


class HomeScreen(FieldScreen):
    """My work, by role. The inspector's hazards come a page at a time (`PAGE`): the next
    page loads on the core's thread when the list is scrolled near its end."""

    def __init__(self, **kwargs: Any) -> None:
        self.next_page: Cursor | None = None  # where the list goes on (None: complete)
        self.loaded = 0  # hazard rows in the list
        self.pages = 0  # further pages loaded since the list was last fetched
        self._generation = 0  # a page asked for before the list was fetched again is dropped
        self._asked = False  # a page is being read
        self._near_end = Clock.create_trigger(self._more_if_near_end)
        super().__init__(**kwargs)

    def on_kv_post(self, base_widget: Any) -> None:
        super().on_kv_post(base_widget)
        rv = self.ids.rv
        rv.bind(scroll_y=self._near_end, height=self._near_end)
        rv.layout_manager.bind(height=self._near_end)

    def fetch(self, core: Any) -> dict[str, Any]:
        account = core.account
        role = account.role
        rows: list[dict[str, Any]] = []
        summary = ""
        next_page: Cursor | None = None
        if role == "inspector":
            views = core.views
            waiting = views.hazard_count(status="rectified")
            others = views.hazard_count() - waiting
            parts = (
                Part(
                    tr._("Waiting for re-inspection ({n})", n=waiting),
                    (("status", "rectified"),),
                ),
                Part(tr._("Hazards in my grids ({n})", n=others), (("exclude", "rectified"),)),
            )
            # as many rows as the list held (a refresh keeps what the user scrolled through)
            rows, next_page = hazard_page(core, Cursor(parts), max(PAGE, self.loaded))
            summary = tr._("{n} to re-inspect", n=waiting)
        elif role == "enterprise_staff":
            week = core.views.checks_this_week()
            rows.append(section(tr._("Self-check of week {week}", week=week.week)))
            for enterprise_id, tpl in week.due:
                rows.append(
                    {
                        "viewclass": "RecordRow",
                        "title": tpl.get("name") or "",
                        "line2": tr.n_(
                            "{n} item · not done yet",
                            "{n} items · not done yet",
                            len(tpl.get("items") or []),
                        ),
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
                        "line2": tr.n_("{n} failed item", "{n} failed items", failed),
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
                for h in core.views.hazards(
                    status=("rectification_assigned", "reopened"), limit=HAZARD_ROWS
                )
                if h.record.get("rectify_org_id") in (account.org_id, None)
            ]
            rows.append(section(tr._("Hazards to rectify ({n})", n=len(mine))))
            rows += [hazard_row(core, h) for h in mine]
            summary = tr.n_("{n} self-check due", "{n} self-checks due", len(week.due))
        else:
            tasks = core.views.my_tasks()
            active = [t for t in tasks if t.status not in DONE_TASK]
            done = [t for t in tasks if t.status in DONE_TASK]
            rows.append(section(tr._("My tasks ({n})", n=len(active))))
            rows += [task_row(core, t) for t in active]
            if done:
                rows.append(section(tr._("Finished ({n})", n=len(done))))
                rows += [task_row(core, t) for t in done]
            summary = tr.n_("{n} open task", "{n} open tasks", len(active))
        who = f"{account.display_name} · {word(ROLE, role)}"
        return {"rows": rows, "who": who, "summary": summary, "role": role, "next": next_page}

    def show(self, data: Any) -> None:
        if data is None:
            return
        self._generation += 1
        self._asked = False
        self.next_page = data["next"]
        self.loaded = _hazard_rows(data["rows"])
        self.pages = 0
        self.ids.rv.data = data["rows"]
        self.ids.who.text = data["who"]
        self.ids.summary.text = data["summary"]
        self.role = data["role"]
        self.ids.report.opacity = 1 if data["role"] in ("inspector", "enterprise_staff") else 0
        self.ids.report.disabled = data["role"] not in ("inspector", "enterprise_staff")

    def _more_if_near_end(self, *_args: Any) -> None:
        """Read the next page when the list is complete up to `AHEAD` list heights below
        the view (at once when it does not fill the screen)."""
        core = self.app.core if self.app is not None else None
        if self.next_page is None or self._asked or core is None or core.account is None:
            return
        rv = self.ids.rv
        below = rv.scroll_y * max(0.0, rv.layout_manager.height - rv.height)
        if below > AHEAD * rv.height:
            return
        self._asked = True
        generation = self._generation
        self.app.run_core(
            hazard_page,
            core,
            self.next_page,
            PAGE,
            then=lambda got: self._got_page(generation, *got),
            fail=self._page_failed,
        )

    def _page_failed(self, exc: BaseException) -> None:
        self._asked = False  # the next scroll asks again
        self._failed(exc)

    def _got_page(self, generation: int, rows: list[dict[str, Any]], at: Cursor | None) -> None:
        if generation != self._generation:  # the list was fetched again meanwhile
            return
        self._asked = False
        self.next_page = at
        self.loaded += _hazard_rows(rows)
        self.pages += 1
        self.ids.rv.data.extend(rows)
        self._near_end()


def _hazard_rows(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r.get("target") == "hazard_detail")


SCREEN = HomeScreen
