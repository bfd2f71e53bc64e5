"""What every screen shares: the font, the translator, the themes, the core's worker thread
and the small widgets the kv files use.

Importing this module registers the shipped Chinese font as Kivy's default font, so it must be
imported before any widget is built (`mobile.gui` does it first). Nothing here knows field
rules: screens show the core's read models and call its actions through `Worker`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from kivy.core.text import DEFAULT_FONT, LabelBase
from kivy.event import EventDispatcher
from kivy.lang import Builder, Observable
from kivy.metrics import dp
from kivy.properties import (
    ColorProperty,
    NumericProperty,
    StringProperty,
)
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label
from kivy.uix.textinput import TextInput

import i18n

log = logging.getLogger("liandong.app")
T = TypeVar("T")
HERE = Path(__file__).parent
FONT = HERE / "assets" / "fonts" / "NotoSansSC-Liandong.otf"
#: the smallest touch target (Android's and WCAG's 48 dp)
TOUCH = 48
#: how much nicer than the UI thread the core's thread runs (Android's
#: THREAD_PRIORITY_BACKGROUND is 10)
BACKGROUND_NICE = 10

# Kivy's Roboto has no Chinese glyphs: the subset Noto Sans SC is every label's default font.
LabelBase.register(DEFAULT_FONT, str(FONT))


#: the translator's methods a kv rule binds to (re-evaluated when the language changes)
BOUND = frozenset({"_", "n_"})


class Translator(Observable):  # type: ignore[misc]
    """`tr._("English source")` in kv: the text in the current language, re-evaluated for
    every bound widget when `switch` changes the language (no restart). A text with a count
    in it is `tr.n_("{n} photo", "{n} photos", n)` (gettext's plural forms)."""

    def __init__(self, lang: str = i18n.DEFAULT_LANG) -> None:
        super().__init__()
        self.lang = i18n.normalize(lang)
        self.observers: dict[int, tuple[Callable[..., Any], Any]] = {}
        self._uid = 0
        self.listeners: list[Callable[[str], None]] = []

    def _(self, text: str, **values: Any) -> str:
        words = i18n.gettext(self.lang, text)
        return words.format(**values) if values else words

    def n_(self, singular: str, plural: str, n: int, **values: Any) -> str:
        """The form of a count-bearing text for `n` in the current language, `{n}` and the
        other `{placeholders}` filled."""
        return i18n.ngettext(self.lang, singular, plural, n).format(n=n, **values)

    def fbind(self, name: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
        if name in BOUND:
            self._uid += 1
            self.observers[self._uid] = (func, args[0] if args else ())
            return self._uid
        return int(super().fbind(name, func, *args, **kwargs))

    def unbind_uid(self, name: str, uid: int) -> None:
        if name in BOUND:
            self.observers.pop(uid, None)
        else:
            super().unbind_uid(name, uid)

    def funbind(self, name: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if name in BOUND:
            for uid, (f, a) in list(self.observers.items()):
                if f == func and (not args or a == args[0]):
                    del self.observers[uid]
        else:
            super().funbind(name, func, *args, **kwargs)

    def switch(self, lang: str) -> None:
        """Change the language and update every bound text and listener."""
        self.lang = i18n.normalize(lang)
        for uid, (func, args) in list(self.observers.items()):
            try:
                func(args, None, None)
            except ReferenceError:  # the widget is gone
                self.observers.pop(uid, None)
        for listener in self.listeners:
            listener(self.lang)


tr = Translator()
_ = tr._

# Colours: every text pair reaches 7:1 (WCAG AAA); tests/app checks the live widget tree.
PALETTES: dict[str, dict[str, str]] = {
    "light": {
        "bg": "#FFFFFF",
        "surface": "#F1F3F5",
        "fg": "#111111",
        "muted": "#3D3D3D",
        "primary": "#0B3D91",
        "primary_text": "#FFFFFF",
        "danger": "#8E0000",
        "danger_text": "#FFFFFF",
        "ok": "#0A4D1C",
        "ok_text": "#FFFFFF",
        "line": "#8A8A8A",
        "field": "#FFFFFF",
    },
    "dark": {
        "bg": "#000000",
        "surface": "#1A1C1E",
        "fg": "#F2F2F2",
        "muted": "#C8C8C8",
        "primary": "#9CC3FF",
        "primary_text": "#000000",
        "danger": "#FFB3AD",
        "danger_text": "#000000",
        "ok": "#9FE3A8",
        "ok_text": "#000000",
        "line": "#6E6E6E",
        "field": "#0E0F10",
    },
}
#: warning levels: the colour people know (蓝/黄/橙/红) and a text colour at 7:1 on it
LEVELS: dict[str, tuple[str, str]] = {
    "blue": ("#0D3C8C", "#FFFFFF"),
    "yellow": ("#FFD600", "#000000"),
    "orange": ("#FF8F00", "#000000"),
    "red": ("#8E0000", "#FFFFFF"),
}


class Theme(EventDispatcher):  # type: ignore[misc]
    """The colours kv rules bind to (`theme.fg`); `apply("dark")` recolours every widget."""

    name = StringProperty("light")
    bg = ColorProperty()
    surface = ColorProperty()
    fg = ColorProperty()
    muted = ColorProperty()
    primary = ColorProperty()
    primary_text = ColorProperty()
    danger = ColorProperty()
    danger_text = ColorProperty()
    ok = ColorProperty()
    ok_text = ColorProperty()
    line = ColorProperty()
    field = ColorProperty()

    def __init__(self) -> None:
        super().__init__()
        self.apply("light")

    def apply(self, name: str) -> None:
        """Switch to the `light` or `dark` palette."""
        for key, value in PALETTES[name].items():
            setattr(self, key, rgba(value))
        self.name = name


def rgba(hex_colour: str) -> list[float]:
    """`#RRGGBB` as Kivy's [r, g, b, 1]."""
    h = hex_colour.lstrip("#")
    return [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0]


theme = Theme()


def _log_error(exc: BaseException) -> None:
    log.error("core call failed", exc_info=exc)


class Worker:
    """One thread with an asyncio loop that owns the core: every core call (network, disk,
    queries) runs there; results come back on Kivy's thread through the Clock."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="core", daemon=True)
        self.thread.start()
        self.busy = 0  # jobs submitted and not yet answered (read on the UI thread)
        #: told (on Kivy's thread) of an exception from a call submitted without `fail`;
        #: by default it is logged: re-raising it there would end the app
        self.on_error: Callable[[BaseException], None] = _log_error

    def _run(self) -> None:
        background_priority()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        then: Callable[[Any], None] | None = None,
        fail: Callable[[BaseException], None] | None = None,
        long: bool = False,
    ) -> None:
        """Run `fn(*args)` (a function or a coroutine function) on the core's thread; `then`
        gets the result, `fail` the exception, both on Kivy's thread. `busy` counts pending
        calls except `long` ones (waiting for a GPS fix)."""
        from kivy.clock import Clock

        counted = 0 if long else 1
        self.busy += counted

        def deliver(cb: Callable[[Any], None] | None, value: Any) -> None:
            def run(_dt: float) -> None:
                self.busy -= counted
                if cb is not None:
                    cb(value)
                elif isinstance(value, BaseException):
                    self.on_error(value)

            Clock.schedule_once(run, 0)

        async def job() -> None:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # handed to the UI thread, which shows it
                deliver(fail, exc)
            else:
                deliver(then, result)

        asyncio.run_coroutine_threadsafe(job(), self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the core's loop and return its future (not counted in `busy`:
        for what runs as long as the user is signed in, like the send loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the core's thread, no answer wanted."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Stop the loop (the app is closing)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def background_priority() -> None:
    """Run the calling thread, and the threads it starts afterwards (the transport's), at
    background priority, as Android runs an app's workers: when the CPU is short (a sync
    applying thousands of records on a cheap phone), drawing the next frame comes first.
    Linux (Android too) sets the nice value per thread; elsewhere this does nothing."""
    if not sys.platform.startswith(("linux", "android")):  # per-thread nice is Linux's
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + BACKGROUND_NICE))


class Painted:
    """A widget that paints its own background (`bg_color`): what a text on it is measured
    against for contrast."""


class Surface(BoxLayout, Painted):  # type: ignore[misc]
    """A box with a background colour."""

    bg_color = ColorProperty([0, 0, 0, 0])
    radius = NumericProperty(0)


class Text(Label):  # type: ignore[misc]
    """A label that wraps to its width and grows to its text's height."""

    role = StringProperty("body")  # body, title, muted, big


class Btn(ButtonBehavior, Label, Painted):  # type: ignore[misc]
    """A button at least 48 dp each way, in one of the theme's pairs (`kind`)."""

    kind = StringProperty("primary")  # primary, plain, danger, ok
    bg_color = ColorProperty([0, 0, 0, 0])


class Field(TextInput):  # type: ignore[misc]
    """A text input at least 48 dp high in the theme's colours."""


def load_styles() -> None:
    """Load the widgets' kv rules (once, after this module is imported)."""
    path = str(HERE / "ui.kv")
    if path not in Builder.files:
        Builder.load_file(path)


__all__ = ["TOUCH", "Btn", "Field", "Surface", "Text", "Worker", "dp", "theme", "tr"]
