"""Scenarios the app runs inside its own process (`--scenario NAME`): tests, screenshots and
the benchmark. Each yields conditions to wait for (see tests/app/driver.py) and records what
the pytest side asserts in `app.scenario_results`.

Context comes from the environment: `LIANDONG_APP_RESULT` (where the outcome goes),
`LIANDONG_APP_CONTROL` (the test proxy's control URL: offline, hold, release),
`LIANDONG_APP_SHOTS` (screenshot directory).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from kivy.core.window import Window

from tests.app.driver import Runner, Scenario, by_text, check, find, tap, walk, xtap

SCENARIOS: dict[str, Callable[[Any], Scenario]] = {}


def scenario(fn: Callable[[Any], Scenario]) -> Callable[[Any], Scenario]:
    SCENARIOS[fn.__name__] = fn
    return fn


def start(app: Any, name: str) -> None:
    """Run scenario `name` in the running app."""
    import tests.app.flows  # noqa: F401 - registers the flows

    Runner(app, SCENARIOS[name](app), os.environ.get("LIANDONG_APP_RESULT"))


# -- helpers -------------------------------------------------------------------------------
def idle(app: Any) -> Callable[[], bool]:
    def quiet() -> bool:
        """the app is idle (no core call pending, screen loaded)"""
        s = app.current
        return app.worker.busy == 0 and not getattr(s, "loading", False)

    return quiet


def on(app: Any, name: str) -> Callable[[], bool]:
    def there() -> bool:
        shown = app.sm.current == name and not app.sm.transition.is_active
        return bool(shown and idle(app)())

    there.__doc__ = f"screen {name} shown and loaded"
    return there


def shows(text: str) -> Callable[[], bool]:
    def seen() -> bool:
        return by_text(text) is not None

    seen.__doc__ = f"text {text!r} visible"
    return seen


def message_room(app: Any) -> Scenario:
    """The room the current screen's message takes while empty: the gap it leaves between
    the widgets above and below it in its layout, next to that layout's spacing (two
    neighbours' gap with nothing between them). Recorded in dp as `message_room[screen]`:
    [gap, spacing]; the message shows "提示" first, so that it is in the layout to be found."""
    from kivy.metrics import dp

    from mobile.screens.common import Message

    screen = app.current
    screen.say("提示")
    yield 0.1
    shown = [w for w in walk(screen) if isinstance(w, Message)]
    check(len(shown) == 1, f"{screen.name}: {len(shown)} messages shown, not one")
    column = shown[0].parent
    at = column.children.index(shown[0])  # bottom first
    check(0 < at < len(column.children) - 1, f"{screen.name}: the message is at an end")
    upper, lower = column.children[at + 1], column.children[at - 1]
    screen.say("")
    yield 0.2  # the layout redone
    check(screen.message == "", f"{screen.name} said {screen.message!r} meanwhile")
    gap = round((upper.y - lower.top) / dp(1), 1)
    spacing = round(column.spacing / dp(1), 1)
    app.scenario_results.setdefault("message_room", {})[screen.name] = [gap, spacing]


def press(text: str) -> None:
    """Tap the visible button showing exactly `text` (else the first widget containing it)."""
    from kivy.uix.behaviors import ButtonBehavior

    w = find(lambda x: isinstance(x, ButtonBehavior) and getattr(x, "text", None) == text)
    w = w or by_text(text)
    check(w is not None, f"no visible widget with text {text!r}")
    tap(w)


def control(action: str) -> None:
    """Tell the test proxy to go offline / online / hold or release sync pulls."""
    url = os.environ.get("LIANDONG_APP_CONTROL")
    if url:
        httpx.post(f"{url}/{action}", timeout=5)


def screenshot(app: Any, name: str) -> None:
    """Write the window to `<LIANDONG_APP_SHOTS>/<name>.png`."""
    folder = os.environ.get("LIANDONG_APP_SHOTS")
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    made = Window.screenshot(name=str(path / f"{name}-%(counter)04d.png"))
    if made:
        shutil.move(made, path / f"{name}.png")


# -- scenarios -----------------------------------------------------------------------------
@scenario
def signin_responder(app: Any) -> Scenario:
    """Sign in by touch, see my tasks."""
    yield on(app, "signin")
    s = app.current
    s.ids.server.text = app.options.extra.get("server", "") or s.ids.server.text
    s.ids.user.text = os.environ.get("LIANDONG_APP_TEST_USER", "fire1")
    s.ids.password.text = "wrong password"
    tap(s.ids.go)
    yield lambda: bool(s.message) and s.message_alarm and not s.loading
    app.scenario_results["refused_message"] = s.message
    yield from message_room(app)
    s.ids.password.text = "liandong-demo"
    tap(s.ids.go)
    yield on(app, "home")
    yield lambda: "sync-ok" in app.events
    yield idle(app)
    rows = app.current.ids.rv.data
    app.scenario_results["rows"] = [r.get("title") for r in rows]
    app.scenario_results["badge"] = app.badge_text
    screenshot(app, "home-dev")
    yield from _walk_a11y(app, "home")


@scenario
def signin_shots(app: Any) -> Scenario:
    """The sign-in screen of a fresh phone, in Chinese and English."""
    yield on(app, "signin")
    for lang, suffix in (("zh_CN", "zh"), ("en", "en")):
        app.set_language(lang)
        yield 0.2
        screenshot(app, f"signin-{suffix}")


def _walk_a11y(app: Any, label: str) -> Scenario:
    from tests.app.a11y import audit

    for name in ("light", "dark"):
        app.set_theme(name)
        yield 0.05
        app.scenario_results.setdefault("a11y", {})[f"{label}-{name}"] = audit()
    app.set_theme("light")
    yield 0.0


def _elapsed(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


__all__ = ["SCENARIOS", "find", "start", "walk", "xtap"]
