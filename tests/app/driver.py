"""Drive the running app from inside its process (between frames, on Kivy's thread).

A scenario is a generator: it yields a condition (a callable, polled every frame until true,
20 s at most) or a number of seconds to wait, and taps widgets in between. Taps are Kivy
motion events dispatched through the real window's input path (`UnitTestTouch`: the window's
post-processing, `on_touch_down/up`, the widget tree), or real X pointer events through
`xdotool` (`xtap`). The outcome, with anything the scenario measured, is written as JSON to
`LIANDONG_APP_RESULT`, then the app stops.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterable
from typing import Any

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.uix.widget import Widget

Step = Callable[[], bool] | float | None
Scenario = Generator[Step, None, None]
WAIT_S = 20.0


class ScenarioError(AssertionError):
    """A check inside the app failed."""


def walk(root: Widget | None = None) -> Iterable[Widget]:
    """Every widget under `root` (the window when None), depth first."""
    stack = [root or Window]
    while stack:
        w = stack.pop()
        yield w
        stack.extend(reversed(list(w.children)))


def visible(w: Widget) -> bool:
    """On screen: attached to the window, not transparent, not collapsed, inside the window."""
    if w is Window:
        return False
    node: Any = w
    while node is not None and node is not Window:
        if getattr(node, "opacity", 1) == 0:
            return False
        if node.parent is None:
            return False
        node = node.parent
    if w.width <= 1 or w.height <= 1:
        return False
    x, y = w.to_window(*w.pos)
    return bool(x < Window.width and y < Window.height and x + w.width > 0 and y + w.height > 0)


def find(pred: Callable[[Widget], bool], root: Widget | None = None) -> Widget | None:
    """The first visible widget matching `pred`."""
    for w in walk(root):
        if visible(w) and pred(w):
            return w
    return None


def by_text(text: str, root: Widget | None = None) -> Widget | None:
    """The first visible widget whose text contains `text`."""
    return find(lambda w: text in str(getattr(w, "text", "") or ""), root)


def tap(w: Widget) -> None:
    """A touch down and up at the widget's centre (Kivy motion events on the real window)."""
    from kivy.tests.common import UnitTestTouch

    x, y = w.to_window(*w.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    touch.touch_up()


def settled(w: Widget) -> Callable[[], bool]:
    """A condition: `w` is on screen and has not moved for two frames (its layout is done;
    a tap computed from a position still settling lands beside it)."""
    seen: dict[str, Any] = {"rect": None, "same": 0}

    def still() -> bool:
        if not visible(w):
            seen["rect"] = None
            return False
        rect = (*w.to_window(*w.pos), w.width, w.height)
        seen["same"] = seen["same"] + 1 if rect == seen["rect"] else 0
        seen["rect"] = rect
        return bool(seen["same"] >= 2)

    still.__doc__ = f"{type(w).__name__} {getattr(w, 'text', '')!r} laid out"
    return still


def released(w: Widget) -> Callable[[], bool]:
    """A condition: the button is up again. A tap inside a ScrollView reaches the button's
    release 0.2 s after the touch ends (Kivy waits to tell a tap from a scroll); leaving the
    screen before that detaches the button mid-tap."""

    def up() -> bool:
        return getattr(w, "state", "normal") == "normal"

    up.__doc__ = f"{type(w).__name__} {getattr(w, 'text', '')!r} released"
    return up


def xtap(w: Widget) -> threading.Thread:
    """A real X pointer click at the widget's centre (xdotool, on a helper thread so the
    UI keeps drawing); returns the thread."""
    x, y = w.to_window(*w.center)
    sx = int(Window.left + x / Window.width * Window.system_size[0])
    sy = int(Window.top + (Window.height - y) / Window.height * Window.system_size[1])
    cmd = ["xdotool", "mousemove", "--sync", str(sx), str(sy), "click", "1"]
    t = threading.Thread(target=subprocess.run, args=(cmd,), kwargs={"check": False})
    t.start()
    return t


def type_into(w: Any, text: str) -> None:
    """Set a text input's text (what typing ends with)."""
    w.text = text


def check(cond: bool, what: str) -> None:
    """Fail the scenario with `what` unless `cond`."""
    if not cond:
        raise ScenarioError(what)


class Runner:
    """Advances a scenario between frames and reports its outcome."""

    def __init__(self, app: Any, scenario: Scenario, result_path: str | None) -> None:
        self.app = app
        self.gen = scenario
        self.result_path = result_path
        self.waiting: Step = None
        self.deadline = 0.0
        self.results: dict[str, Any] = {}
        self.started = time.monotonic()
        app.scenario_results = self.results
        app.scenario_runner = self  # the Clock holds callbacks weakly
        self.ev = Clock.schedule_interval(self.step, 0)

    def step(self, _dt: float) -> None:
        try:
            while True:
                w = self.waiting
                if callable(w):
                    if not w():
                        if time.monotonic() > self.deadline:
                            name = getattr(w, "__doc__", None) or getattr(w, "__name__", "?")
                            raise ScenarioError(f"timed out waiting for: {name}")
                        return
                elif isinstance(w, (int, float)) and time.monotonic() < self.deadline:
                    return
                nxt = next(self.gen)
                if os.environ.get("LIANDONG_APP_TRACE"):
                    print("scenario:", getattr(nxt, "__doc__", None) or nxt, flush=True)
                self.waiting = nxt
                self.deadline = time.monotonic() + (
                    float(nxt) if isinstance(nxt, (int, float)) else WAIT_S
                )
        except StopIteration:
            self.finish(True, "")
        except Exception as exc:
            self.finish(False, "".join(traceback.format_exception(exc)))

    def finish(self, ok: bool, error: str) -> None:
        self.ev.cancel()
        self.results.update(
            ok=ok,
            error=error,
            seconds=round(time.monotonic() - self.started, 2),
            events=self.app.events[-200:],
        )
        if self.result_path:
            with open(self.result_path, "w", encoding="utf-8") as fh:
                json.dump(self.results, fh, ensure_ascii=False, default=str)
        if os.environ.get("LIANDONG_APP_KEEP") != "1":
            Clock.schedule_once(lambda _dt: self.app.stop(), 0)
