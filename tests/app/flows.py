"""The role flows, offline and back, the held sync, languages and accessibility on every
screen, and screenshots: scenarios run inside the app (see tests/app/driver.py)."""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any

import httpx
from kivy.core.window import Window
from kivy.metrics import dp

from mobile.screens import NAMES
from mobile.ui import tr
from tests.app.a11y import audit
from tests.app.driver import (
    Scenario,
    by_text,
    check,
    released,
    settled,
    tap,
    visible,
    walk,
    xtap,
)
from tests.app.scenarios import (
    control,
    idle,
    message_room,
    on,
    press,
    scenario,
    screenshot,
)

HAN = re.compile(r"[\u4e00-\u9fff]")


def signed_in(app: Any) -> Scenario:
    """Wait for the automatic sign-in (--user/--password) and the first complete sync."""
    yield on(app, "home")
    yield lambda: "sync-ok" in app.events or "sync-failed" in app.events
    check("sync-ok" in app.events, f"first sync failed: {app.events}")
    yield idle(app)


def synced_again(app: Any) -> Scenario:
    """Ask for a round and wait for the answer of a round that started afterwards: one
    already under way (a "pull now" from the server, say) may have pushed before the last
    write, and "send now" runs after it."""
    mark = len(app.events)

    def answered() -> bool:
        later = app.events[mark:]
        if "sync-start" not in later:
            return False
        return any(e in ("sync-ok", "sync-failed") for e in later[later.index("sync-start") :])

    app.request_sync()
    yield answered
    yield idle(app)


def outcome(app: Any) -> str:
    """How the last finished round ended (the loop may have started the next one since: a
    failed round is retried after its backoff)."""
    return next((e for e in reversed(app.events) if e in ("sync-ok", "sync-failed")), "")


def row(app: Any, text: str) -> dict[str, Any]:
    rows = app.current.ids.rv.data
    found = [r for r in rows if text in str(r.get("title", ""))]
    check(bool(found), f"no row {text!r} in {[r.get('title') for r in rows]}")
    return found[0]


def tap_row(app: Any, text: str) -> Scenario:
    """Scroll a list row into view and tap it (the RecycleView's own widget)."""
    rv = app.current.ids.rv
    data = rv.data
    index = next(
        i for i, r in enumerate(data) if text in f"{r.get('title', '')} {r.get('line2', '')}"
    )
    rv.scroll_y = 1 - index / max(1, len(data) - 1) if len(data) > 1 else 1
    yield 0.1
    widget = next(
        (w for w in walk(rv) if getattr(w, "title", None) == data[index]["title"] and visible(w)),
        None,
    )
    check(widget is not None, f"row {text!r} not on screen")
    tap(widget)


def gap_dp(upper: Any, lower: Any) -> float:
    """The space between a widget and the one below it, in dp."""
    return round((upper.y - lower.top) / dp(1), 1)


def scroll_to_end(app: Any) -> Scenario:
    """Scroll the current screen's scroll views to their end (a form's submit button)."""
    from kivy.uix.scrollview import ScrollView

    for w in walk(app.current):
        if isinstance(w, ScrollView):
            w.scroll_y = 0
    yield 0.2


def outbox_states(app: Any) -> Scenario:
    app.open_screen("outbox")
    yield on(app, "outbox")
    app.scenario_results.setdefault("outbox", []).append(
        [(r["title"], r["line2"], r["line3"]) for r in app.current.ids.rv.data]
    )


# -- responder ---------------------------------------------------------------------------
@scenario
def responder_flow(app: Any) -> Scenario:
    r = app.scenario_results
    yield from signed_in(app)
    yield from tap_row(app, "灭火救援")
    yield on(app, "task")
    task = app.current
    r["task_id"] = str(task.params["key"])
    press("导航")
    r["opened"] = list(app.opened_uris)
    # decline needs a reason: the core refuses it before anything is queued
    tap(task.ids.decline_box.children[0])
    yield lambda: bool(task.message)
    r["decline_without_reason"] = task.message
    tap(task.ids.next)  # accept
    yield lambda: task.ids.status.text.startswith("已接受")
    r["after_accept"] = task.ids.status.text
    yield from synced_again(app)
    tap(task.ids.next)  # en route
    yield lambda: task.ids.status.text.startswith("在途")
    yield from synced_again(app)
    # offline: the proxy cuts the link; the step waits in the outbox, the badge says so
    control("offline")
    tap(task.ids.next)  # on scene
    yield lambda: task.ids.status.text.startswith("已到场")
    yield from synced_again(app)
    r["offline_sync"] = outcome(app)
    r["offline_badge"] = app.badge_text
    yield from outbox_states(app)
    r["a11y"] = {"outbox-light": audit()}
    control("online")
    press("立即发送")
    yield lambda: outcome(app) == "sync-ok"
    yield idle(app)
    r["online_badge"] = app.badge_text
    yield from outbox_states(app)
    app.go_back()
    yield on(app, "task")
    task.ids.note.text = "火已扑灭，现场无人员伤亡。"
    press("拍照")
    yield lambda: "1" in task.ids.photo_count.text
    tap(task.ids.next)  # complete with the note and the photo
    yield lambda: task.ids.status.text.startswith("已完成")
    yield from synced_again(app)
    yield from synced_again(app)  # the photo's bytes go after the record
    r["a11y"]["task-light"] = audit()
    r["final_badge"] = app.badge_text


def drafts_on_phone(app: Any) -> Scenario:
    """Read the core's drafts (on its thread) into the results as (form, key, values)."""
    got: list[Any] = []
    app.run_core(app.core.drafts.all, then=got.append)
    yield lambda: bool(got)
    app.scenario_results["drafts"] = [[d.form, d.key, d.values] for d in got[0]]


def task_form(app: Any, title: str) -> Scenario:
    """Open the task `title` from the start screen; wait for its draft to be read."""
    app.go_home()
    yield on(app, "home")
    yield from tap_row(app, title)
    yield on(app, "task")
    yield idle(app)


@scenario
def forms_per_record(app: Any) -> Scenario:
    """What is typed on a task stays with that task: open A, type a note and a reason, go
    back, open B (empty, no message of A's), type on B, back to A (A's words again, from its
    draft); emptying the fields leaves no draft."""
    r = app.scenario_results
    yield from signed_in(app)
    yield from task_form(app, "灭火救援")
    task = app.current
    a = str(task.params["key"])
    task.ids.note.text = "A：二楼有人被困"
    task.ids.reason.text = "A：车辆故障"
    task.say("A 的提示")
    yield idle(app)
    ids = task.ids
    yield settled(ids.next)
    r["message_a"] = ids.message.text
    # The lines between the deadline and the next step's button, each 8 dp from the next
    # (an empty description or message took a blank band of up to 40 dp).
    r["gaps_dp_a"] = {
        "due_description": gap_dp(ids.deadline, ids.description),
        "description_message": gap_dp(ids.description, ids.message),
        "message_next": gap_dp(ids.message, ids.next),
    }
    yield from drafts_on_phone(app)
    r["drafts_a"] = r.pop("drafts")
    app.go_back()
    yield from task_form(app, "疏散")
    b = str(task.params["key"])
    r["b"] = [task.ids.note.text, task.ids.reason.text, task.message]
    yield settled(task.ids.next)
    r["gaps_dp_b"] = {"due_next": gap_dp(task.ids.deadline, task.ids.next)}  # no description
    task.say("B 的提示")
    yield settled(task.ids.next)
    r["gaps_dp_b"]["due_message_next"] = [
        gap_dp(task.ids.deadline, task.ids.message),
        gap_dp(task.ids.message, task.ids.next),
    ]
    task.say("")
    yield settled(task.ids.next)
    r["gaps_dp_b"]["due_next_again"] = gap_dp(task.ids.deadline, task.ids.next)
    task.ids.note.text = "B：已疏散一半"
    yield idle(app)
    yield from task_form(app, "灭火救援")
    r["a"] = [task.ids.note.text, task.ids.reason.text]
    yield from task_form(app, "疏散")
    r["b_again"] = [task.ids.note.text, task.ids.reason.text]
    task.ids.note.text = ""  # emptied: B's draft goes
    yield idle(app)
    yield from task_form(app, "灭火救援")
    task.ids.note.text = ""
    task.ids.reason.text = ""
    yield idle(app)
    yield from drafts_on_phone(app)
    r["keys"] = [a, b]


# -- inspector ---------------------------------------------------------------------------
@scenario
def inspector_flow(app: Any) -> Scenario:
    r = app.scenario_results
    yield from signed_in(app)
    home = app.current
    r["rows"] = [x.get("title") for x in home.ids.rv.data]
    yield from paged(app, r)
    r["a11y"] = {"home-inspector": audit()}
    press("上报隐患")
    yield on(app, "hazard_report")
    form = app.current
    # the fix is coarse (150 m): the form says so and waits for an explicit accept
    yield lambda: "150" in form.ids.fix.text
    press("燃气")
    press("较大")
    form.ids.description.text = "小区门口燃气表箱锈穿，有轻微异味。"
    press("拍照")
    yield lambda: "1" in form.ids.photos.text
    press("上报")
    yield lambda: bool(form.message) and form.message_alarm
    r["refused_without_fix"] = form.message
    tap(form.ids.accept)
    yield lambda: "±150" in form.ids.fix.text and "定位" in form.ids.fix.text
    r["accepted_fix"] = form.ids.fix.text
    r["a11y"]["hazard_report"] = audit()
    press("上报")
    yield lambda: bool(form.message) and not form.message_alarm
    r["reported"] = form.message
    yield from synced_again(app)
    yield from synced_again(app)
    app.go_back()
    yield on(app, "home")
    r["rows_after"] = [x.get("title") for x in app.current.ids.rv.data]
    yield from tap_row(app, "电气")  # the rectified hazard waiting for re-inspection
    yield on(app, "hazard_detail")
    detail = app.current
    r["steps"] = [b.text for b in detail.ids.steps.children][::-1]
    # "What you can do", then the steps' evidence (no blank "nothing to do" line between)
    r["gap_dp_steps_evidence"] = gap_dp(detail.ids.steps_title, detail.ids.evidence)
    yield from message_room(app)
    r["a11y"]["hazard_detail"] = audit()
    press("复查合格")
    yield lambda: "已复查" in detail.ids.status.text
    r["after_step"] = detail.ids.status.text
    yield from synced_again(app)
    yield from synced_again(app)
    yield from outbox_states(app)


def paged(app: Any, r: dict[str, Any]) -> Scenario:
    """The start list a hazard at a time: the first page, then the next ones loaded as the
    list is scrolled near its end, which with a few rows is at once. It ends as the whole
    list read at once."""
    from mobile.screens import home as start

    screen = app.current
    size, start.PAGE = start.PAGE, 1
    try:
        screen.loaded = 0
        screen.refresh()
        yield idle(app)
        yield lambda: screen.next_page is None
        yield idle(app)
    finally:
        start.PAGE = size
    r["paged_rows"] = [x.get("title") for x in screen.ids.rv.data]
    r["pages_loaded"] = screen.pages


# -- enterprise --------------------------------------------------------------------------
@scenario
def enterprise_flow(app: Any) -> Scenario:
    r = app.scenario_results
    yield from signed_in(app)
    r["rows"] = [x.get("title") for x in app.current.ids.rv.data]
    yield from tap_row(app, "安全")  # the weekly self-check template
    yield on(app, "selfcheck")
    form = app.current
    items = form.items
    r["items"] = len(items)
    for i, item in enumerate(items):
        tap(item.buttons["fail" if i == 0 else "pass"])
    yield 0.05
    r["fail_notice"] = items[0].warning.text

    r["gaps_dp"] = {
        "pass": gap_dp(items[1].buttons["pass"].parent, items[1].note),
        "fail": gap_dp(items[0].buttons["pass"].parent, items[0].warning),
        "fail_note": gap_dp(items[0].warning, items[0].note),
    }
    items[0].note.text = "灭火器压力不足。"
    yield from message_room(app)
    r["a11y"] = {"selfcheck": audit()}
    yield from scroll_to_end(app)
    press("提交自查表")
    yield lambda: bool(form.message)
    r["submitted"] = form.message
    yield from synced_again(app)
    app.go_back()
    yield on(app, "home")
    r["rows_after"] = [x.get("title") for x in app.current.ids.rv.data]
    yield from tap_row(app, "商场消防通道")  # the hazard assigned to the enterprise
    yield on(app, "hazard_detail")
    detail = app.current
    press("报告已整改")
    yield lambda: bool(detail.message)
    r["without_photos"] = detail.message
    press("拍照")
    yield lambda: "1" in detail.ids.photo_count.text
    detail.ids.note.text = "已清理消防通道。"
    press("报告已整改")
    yield lambda: "已整改" in detail.ids.status.text
    yield from synced_again(app)
    yield from synced_again(app)
    r["final_badge"] = app.badge_text
    yield from outbox_states(app)


# -- input while a sync is held at the server --------------------------------------------
@scenario
def held_sync(app: Any) -> Scenario:
    r = app.scenario_results
    yield from signed_in(app)
    flips: list[float] = []
    Window.bind(on_flip=lambda *_a: flips.append(time.perf_counter()))
    control("hold")
    app.request_sync()
    url = os.environ["LIANDONG_APP_CONTROL"]
    held = {"n": 0, "asked": 0.0}

    def count_held() -> None:
        held["n"] = httpx.get(f"{url}/held", timeout=5).json()["held"]

    def pull_is_held() -> bool:
        """the server holds the sync pull"""
        import threading

        if time.monotonic() - held["asked"] > 0.3:  # ask the proxy off the UI thread
            held["asked"] = time.monotonic()
            threading.Thread(target=count_held).start()
        return held["n"] > 0 and app.syncing

    yield pull_is_held
    t0 = time.perf_counter()
    before = len(flips)
    settings = by_text("设置")
    check(settings is not None, "no settings button")
    thread = xtap(settings)  # a real X pointer click while the pull is held
    yield lambda: app.sm.current == "settings"
    thread.join()
    r["screen_during_hold"] = app.sm.current
    yield 1.5
    r["still_syncing"] = app.syncing
    r["frames_during_hold"] = len(flips) - before
    r["hold_seconds"] = round(time.perf_counter() - t0, 2)
    control("release")
    yield lambda: not app.syncing
    r["after_release"] = outcome(app)
    r["report_error"] = app.last_report.error if app.last_report is not None else None


# -- every screen: languages, themes, touch targets and contrast -------------------------
def open_every_screen(app: Any) -> Scenario:
    """Open each screen (with a record where it needs one) and yield its name when shown."""
    home = app.current
    rows = [x for x in home.ids.rv.data if x.get("target")]
    for name in NAMES:
        if name == "signin":
            continue
        params: dict[str, Any] = {}
        if name in ("task", "hazard_detail", "selfcheck"):
            match = [x for x in rows if x.get("target") == name]
            if not match:
                continue
            params = {"key": match[0]["key"], "extra": match[0]["extra"]}
        app.open_screen(name, **params)
        yield on(app, name)
        yield 0.3 if name == "hazard_report" else 0.05
        yield name  # type: ignore[misc]
        app.go_home()
        yield on(app, "home")


def visible_texts() -> list[str]:
    out = []
    for w in walk():
        text = getattr(w, "text", None)
        if isinstance(text, str) and text.strip() and visible(w):
            out.append(text)
    return out


def speaks(lang: str) -> Any:
    def switched() -> bool:
        return bool(tr.lang == lang)

    switched.__doc__ = f"the app switched to {lang}"
    return switched


def switch_language_by_touch(app: Any, lang: str) -> Scenario:
    """Open settings and tap the language's button; wait until the app speaks it and the
    button's release is over (it comes 0.2 s after the touch, see `released`)."""
    app.open_screen("settings")
    yield on(app, "settings")
    button = next(b for b in app.current.ids.langs.children if b.value == lang)
    yield settled(button)
    tap(button)
    yield released(button)
    yield speaks(lang)


@scenario
def languages_and_a11y(app: Any) -> Scenario:
    """Every screen in both languages; touch targets and contrast in both themes (in Chinese:
    colours do not depend on the language, and Chinese labels make the narrowest buttons),
    and the English layout's in the light theme."""
    r = app.scenario_results
    yield from signed_in(app)
    r["a11y"] = {}
    r["texts"] = {}
    # English first: the app starts in Chinese, so the tap must really switch it
    for lang, themes in (("en", ("light",)), ("zh_CN", ("light", "dark"))):
        yield from switch_language_by_touch(app, lang)
        app.go_home()
        yield on(app, "home")
        for step in open_every_screen(app):
            if isinstance(step, str):
                r["texts"][f"{step}-{lang}"] = visible_texts()
                for theme_name in themes:
                    if theme_name != "light":
                        app.set_theme(theme_name)
                        yield 0.05
                    r["a11y"][f"{step}-{lang}-{theme_name}"] = audit()
                if themes != ("light",):
                    app.set_theme("light")
                continue
            yield step


@scenario
def empty_messages(app: Any) -> Scenario:
    """The room an empty message takes on every screen this phone opens (`message_room`;
    the sign-in screen's is measured at the sign-in)."""
    yield from signed_in(app)
    for step in open_every_screen(app):
        if isinstance(step, str):
            yield from message_room(app)
            continue
        yield step


# -- one phone's day: several scenarios in one app process ------------------------------
def parts(app: Any, names: tuple[str, ...]) -> Scenario:
    """Run scenarios one after another in this app (one start-up instead of one each); each
    records into its own dict under its name, marked `ok` once it ran to its end."""
    from tests.app.scenarios import SCENARIOS

    combined = app.scenario_results
    for i, name in enumerate(names):
        if i:
            app.go_home()
            yield on(app, "home")
        part: dict[str, Any] = {}
        combined[name] = part
        app.scenario_results = part
        try:
            yield from SCENARIOS[name](app)
        finally:
            app.scenario_results = combined
        part["ok"] = True


RESPONDER_DAY = (
    "signin_responder",
    "held_sync",
    "languages_and_a11y",
    "empty_messages",
    "forms_per_record",
    "responder_flow",
)


@scenario
def responder_day(app: Any) -> Scenario:
    """Firefighter 1 on a fresh phone: sign in by touch, a held sync, every screen in both
    languages, the room of an empty message on each, forms kept per task, then a task to its
    end offline and back (last: it changes the task list)."""
    yield from parts(app, RESPONDER_DAY)


# -- screenshots -------------------------------------------------------------------------
@scenario
def screenshots(app: Any) -> Scenario:
    r = app.scenario_results
    yield from signed_in(app)
    prefix = os.environ.get("LIANDONG_APP_SHOT_PREFIX", "")
    r["shots"] = []
    for lang, suffix in (("zh_CN", "zh"), ("en", "en")):
        app.set_language(lang)
        yield 0.1
        for step in open_every_screen(app):
            if isinstance(step, str):
                if step == "hazard_report":
                    yield lambda: app.current.fix is not None or app.current.best is not None
                    yield 0.2
                name = f"{prefix}{step}-{suffix}"
                screenshot(app, name)
                r["shots"].append(name)
                continue
            yield step
        app.go_home()
        yield on(app, "home")
        screenshot(app, f"{prefix}home-{suffix}")
        r["shots"].append(f"{prefix}home-{suffix}")
    app.set_language("zh_CN")


__all__ = ["HAN", "by_text"]


# -- benchmark scenarios (tests/bench/bench_app.py) ---------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _frame_clock() -> list[float]:
    flips: list[float] = []
    Window.bind(on_flip=lambda *_a: flips.append(time.perf_counter()))
    return flips


def _max_gap_ms(flips: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(flips)), default=0.0) * 1000


@scenario
def bench_cold(app: Any) -> Scenario:
    """Signed in already: the start list loaded and the core idle = interactive."""
    yield on(app, "home")
    yield lambda: bool(app.current.ids.rv.data)
    start = float(os.environ.get("LIANDONG_APP_T0", "0") or 0)
    app.scenario_results["cold_start_s"] = time.time() - start
    app.scenario_results["rows"] = len(app.current.ids.rv.data)


@scenario
def bench_idle(app: Any) -> Scenario:
    """The start list shown, no sync: the frame gaps of an idle, animating app."""
    yield on(app, "home")
    yield lambda: "sync-ok" in app.events  # the first round is over; the next is 60 s away
    flips = _frame_clock()
    app.syncing = True  # the indicator animates; nothing is sent
    yield 3.0
    app.syncing = False
    app.scenario_results["max_frame_gap_ms"] = _max_gap_ms(flips[1:])


@scenario
def bench_pull(app: Any) -> Scenario:
    """Sign in (--user/--password) on a fresh phone: the first sync pulls every record while
    the start list is shown."""
    flips = _frame_clock()
    yield on(app, "home")
    t0 = time.perf_counter()
    mark = len(flips)
    yield lambda: "sync-ok" in app.events or "sync-failed" in app.events
    sync_s = time.perf_counter() - t0
    during = flips[mark:]
    yield idle(app)
    rv = app.current.ids.rv
    rows = len(rv.data)
    rss = _rss_mb()
    rv.scroll_y = 0  # the end of the first page: the next one loads
    t1 = time.perf_counter()
    yield lambda: len(rv.data) > rows
    app.scenario_results.update(
        max_frame_gap_ms=_max_gap_ms(during),
        frames=len(during),
        sync_s=round(sync_s, 2),
        pulled=sum(app.last_report.sync.pulled.values()) if app.last_report.sync else 0,
        rows=rows,
        rows_after_scroll=len(rv.data),
        next_page_s=round(time.perf_counter() - t1, 3),
        rss_mb=rss,
        ok="sync-ok" in app.events,
    )
