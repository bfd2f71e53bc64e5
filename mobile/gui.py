"""The Kivy application: one `PhoneCore` on a worker thread, a screen manager, the send loop.

The UI thread never waits on the network or the disk: every core call goes through
`Worker.submit` and comes back through Kivy's Clock (tests/app proves it with a sync held at
the server). Screens (`mobile/screens/<name>.py` + `.kv`) are loaded when first opened, so the
first screen is up quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.lang import Builder
from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.screenmanager import NoTransition, Screen, ScreenManager
from kivy.utils import platform

from mobile import ui  # registers the Chinese font before any widget is built
from mobile.app import AppOptions
from mobile.core.background import Connectivity, LinkState, SyncStatus
from mobile.core.outbox import SendReport
from mobile.core.phone import PhoneCore
from mobile.core.secret_store import FileSecretStore, SecretStore
from mobile.devices import desktop_parts, open_uri
from mobile.ui import theme, tr

log = logging.getLogger("liandong.app")
SCREENS_DIR = Path(__file__).parent / "screens"
SYNC_EVERY_S = 60.0


class LiandongApp(App):  # type: ignore[misc]
    """Liandong 联动 field app."""

    title = "联动 Liandong"
    badge_text = StringProperty("")
    badge_alarm = BooleanProperty(False)
    online = BooleanProperty(True)
    syncing = BooleanProperty(False)
    last_sync = NumericProperty(0.0)  # epoch seconds of the last complete round
    data_used = NumericProperty(0)  # bytes sent and received by sync and uploads
    lang = StringProperty(tr.lang)
    busy_text = StringProperty("")
    pulse = NumericProperty(0.0)  # 0..1, animated while a send round runs (the top bar strip)

    def __init__(self, options: AppOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options = options
        self.worker = ui.Worker()
        self.core: PhoneCore | None = None
        self.stack: list[str] = []
        self.prefs: dict[str, Any] = {}
        self.opened_uris: list[str] = []
        self._sending: Any = None  # the send loop's (stop, tasks), a future on the worker
        self._news: deque[tuple[str, Any]] = deque()  # what the send loop told, for Kivy
        self._news_trigger = Clock.create_trigger(self._from_core)
        self.sync_status: SyncStatus | None = None
        self.platform_parts: Any = None
        self.events: list[str] = []  # what happened, for tests and the log
        self.last_report: Any = None
        self._pulse: Any = None

    # -- start ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """Where this installation keeps its files."""
        if self.options.data_dir is not None:
            return self.options.data_dir
        return Path(self.user_data_dir)

    def build(self) -> ScreenManager:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prefs = self._load_prefs()
        tr.switch(self.options.lang or self.prefs.get("lang") or tr.lang)
        self.lang = tr.lang
        theme.apply(self.options.theme or self.prefs.get("theme") or "light")
        Window.clearcolor = theme.bg
        theme.bind(bg=lambda _t, v: setattr(Window, "clearcolor", v))
        tr.listeners.append(self._language_changed)
        import mobile.screens.common  # noqa: F401 - the list rows the kv files name

        ui.load_styles()
        Builder.load_file(str(SCREENS_DIR / "common.kv"))
        self.sm = ScreenManager(transition=NoTransition())
        return self.sm

    def on_start(self) -> None:
        self.worker.on_error = self._core_error
        self.worker.submit(self._make_core, then=self._core_ready)

    def _core_error(self, exc: BaseException) -> None:
        """A core call nobody waited for failed: logged and said on the screen (the app
        goes on)."""
        from mobile.screens.common import refusal

        log.error("core call failed", exc_info=exc)
        screen = self.sm.current_screen
        if screen is not None and hasattr(screen, "say"):
            screen.say(refusal(exc), alarm=True)

    def _make_core(self) -> bool:
        geolocator, camera = desktop_parts(self.options)
        secrets: SecretStore = FileSecretStore(self.data_dir / "secrets.json")
        connectivity: Connectivity | None = None
        if platform == "android":  # the core's adapters (mobile/core/android)
            from mobile.core.android import android_parts

            parts = android_parts(self.data_dir)
            secrets, connectivity = parts.secrets, parts.connectivity
            geolocator = parts.geolocator or geolocator
            camera = parts.camera or camera
            self.platform_parts = parts
        self.core = PhoneCore(
            self.data_dir,
            secrets,
            geolocator=geolocator,
            camera=camera,
            photo_edge=int(self.prefs.get("photo_edge", 2048)),
            connectivity=connectivity,
            interval_s=SYNC_EVERY_S,
        )
        if self.core.session.account is not None:
            self.core.open()
            return True
        return False

    def _core_ready(self, signed_in: bool) -> None:
        self.events.append("core-ready")
        o = self.options
        if o.user and o.password and not signed_in:
            self.open_screen("signin")
            self.screen("signin").sign_in(o.server, o.user, o.password)
        elif signed_in:
            self.signed_in()
        else:
            self.open_screen("signin")
        if o.scenario:
            from tests.app import scenarios

            scenarios.start(self, o.scenario)

    # -- screens ----------------------------------------------------------------------------
    def screen(self, name: str) -> Any:
        """The screen called `name`, made (and its kv loaded) on first use."""
        if not self.sm.has_screen(name):
            module = importlib.import_module(f"mobile.screens.{name}")
            Builder.load_file(str(SCREENS_DIR / f"{name}.kv"))
            widget: Screen = module.SCREEN(name=name)
            self.sm.add_widget(widget)
        return self.sm.get_screen(name)

    def open_screen(self, name: str, **params: Any) -> None:
        """Show screen `name` (with `params`, e.g. a task id); back returns here."""
        target = self.screen(name)
        target.params = params
        if self.sm.current_screen is not None and self.sm.current != name:
            self.stack.append(self.sm.current)
        self.sm.current = name
        target.refresh()
        self.events.append(f"open:{name}")

    def go_back(self) -> None:
        """The previous screen (home when there is none)."""
        name = self.stack.pop() if self.stack else "home"
        self.sm.current = name
        self.sm.current_screen.refresh()

    def go_home(self) -> None:
        """The role's start screen."""
        self.stack.clear()
        self.open_screen("home")
        self.stack.clear()

    def signed_in(self) -> None:
        """The user's data is open: the start screen, then the send loop once that screen
        shows its list (its first round then; later ones after writes, pushes, the timer and
        "send now", not on every visit to the start screen). The round waits for the list
        so that the first screen does not share the core's thread and the GIL with it."""
        self.go_home()
        home = self.current

        def shown(*_args: Any) -> None:
            if not home.loading:
                home.unbind(loading=shown)
                # What the start made (Kivy, the widgets, the modules: ~70,000 objects) is
                # kept to the end: the collector's full passes, which stop every thread and
                # came during a sync's pages, no longer walk it.
                gc.freeze()
                Clock.schedule_once(lambda _dt: self.start_sending(), 0)

        home.bind(loading=shown)
        shown()

    @property
    def current(self) -> Any:
        """The screen shown now."""
        return self.sm.current_screen

    # -- language and theme -----------------------------------------------------------------
    def set_language(self, lang: str) -> None:
        """Switch every visible text to `lang` now (and at the next start)."""
        tr.switch(lang)
        self.save_pref("lang", tr.lang)

    def _language_changed(self, lang: str) -> None:
        self.lang = lang
        self._update_badge()
        for s in self.sm.screens:
            s.refresh()

    def set_theme(self, name: str) -> None:
        """Light or dark."""
        theme.apply(name)
        self.save_pref("theme", name)

    def _load_prefs(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / "prefs.json").read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_pref(self, key: str, value: Any) -> None:
        """Remember a preference (written on the worker thread)."""
        self.prefs[key] = value
        data, path = dict(self.prefs), self.data_dir / "prefs.json"
        self.worker.submit(path.write_text, json.dumps(data), "utf-8")

    # -- the core ---------------------------------------------------------------------------
    def run_core(
        self,
        fn: Callable[..., Any],
        *args: Any,
        then: Callable[[Any], None] | None = None,
        fail: Callable[[BaseException], None] | None = None,
        long: bool = False,
    ) -> None:
        """Call the core off the UI thread; `then`/`fail` run back on it."""
        self.worker.submit(fn, *args, then=then, fail=fail, long=long)

    def wrote(self) -> None:
        """An action queued something: show it in the badge (the core's write woke the send
        loop, which waits out a backoff first)."""
        self._update_badge()

    # -- sending: the core's BackgroundSync on the worker's loop ----------------------------
    def start_sending(self) -> None:
        """Run the core's send loop (`BackgroundSync.run`) and its "pull now" listener on the
        worker's loop for the signed-in user: a round at once, then after writes, pushes,
        "pull now", the network coming back, every `SYNC_EVERY_S`, with the core's backoff
        and the server's Retry-After. Its news comes to Kivy's thread through one trigger."""
        core = self.core
        if core is None or core.account is None or self._sending is not None:
            return
        bg = core.background
        news: deque[tuple[str, Any]] = self._news

        def told(kind: str, value: Any) -> None:  # the worker's thread
            news.append((kind, value))
            self._news_trigger()

        def reported(report: SendReport) -> None:
            told("report", (report, _counts(core), _bytes(core)))

        bg.on_round = lambda: told("round", None)
        bg.on_report = reported
        bg.on_status = lambda status: told("status", status)

        async def start() -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            return stop, [loop.create_task(bg.run(stop)), loop.create_task(bg.listen(stop))]

        self._sending = self.worker.run(start())

    async def stop_sending(self) -> None:
        """Stop the send loop and the listener (a round under way ends first, 30 s at most);
        on the worker's loop, before the core signs out or closes."""
        sending, self._sending = self._sending, None
        if sending is None:
            return
        stop, (runner, listener) = await asyncio.wrap_future(sending)
        stop.set()
        listener.cancel()  # it waits on the open stream; it holds nothing to finish
        _done, late = await asyncio.wait({runner, listener}, timeout=30)
        for t in late:
            t.cancel()

    def request_sync(self, *_args: Any) -> None:
        """ "Send now": a round at once (after the one under way; never before the server's
        Retry-After)."""
        core = self.core
        if core is None or core.account is None:
            return
        self.worker.call_soon(core.background.send_now)

    def _from_core(self, _dt: float) -> None:
        """What the send loop told, on Kivy's thread."""
        while self._news:
            kind, value = self._news.popleft()
            if kind == "round":
                self.syncing = True
                self.events.append("sync-start")
            elif kind == "report":
                self._synced(*value)
            elif kind == "status":
                self._status(value)

    def on_syncing(self, _app: Any, syncing: bool) -> None:
        """Animate the strip under the top bar while a round runs."""
        from kivy.animation import Animation

        if self._pulse is not None:
            self._pulse.cancel(self)
            self._pulse = None
        if syncing:
            self.pulse = 0.0
            self._pulse = Animation(pulse=1.0, d=0.8) + Animation(pulse=0.0, d=0.8)
            self._pulse.repeat = True
            self._pulse.start(self)

    def _synced(self, report: SendReport, counts: dict[str, int], used: int) -> None:
        self.last_report = report
        self.syncing = False
        self.data_used = used
        self.online = report.ok
        if report.ok:
            self.last_sync = time.time()
        else:
            log.warning("send round failed: %s", report.error)
        self.events.append("sync-ok" if report.ok else "sync-failed")
        self._show_counts(counts)
        self.current.refresh()

    def _status(self, status: SyncStatus) -> None:
        self.sync_status = status
        if status.state in (LinkState.ONLINE, LinkState.BACKING_OFF):
            return  # the report of the round says it
        self.syncing = False
        self.online = False
        self.events.append(f"status:{status.state}")
        if status.state is LinkState.SIGN_IN_AGAIN and self.sm.current != "signin":
            self.open_screen("signin")
            self.current.say(status.text(tr.lang), alarm=True)
        elif status.state is LinkState.UPGRADE_REQUIRED:
            self.current.say(status.text(tr.lang), alarm=True)

    def _update_badge(self) -> None:
        core = self.core
        if core is None or core.account is None:
            self.badge_text = ""
            return
        self.worker.submit(_counts, core, then=self._show_counts)

    def _show_counts(self, counts: dict[str, int]) -> None:
        waiting = counts.get("waiting", 0) + counts.get("sending", 0)
        refused = counts.get("refused", 0)
        parts = [f"↑{waiting}"] if waiting or not refused else []
        if refused:
            parts.append(f"!{refused}")
        self.badge_text = " ".join(parts)
        self.badge_alarm = bool(refused)
        self.badge_counts = counts

    # -- platform ---------------------------------------------------------------------------
    def open_uri(self, uri: str) -> None:
        """Hand a `geo:` or `tel:` URI to the phone's map or dialler."""
        self.opened_uris.append(uri)
        open_uri(uri)

    def on_stop(self) -> None:
        if not self.worker.thread.is_alive():
            return  # Kivy may call this twice; the loop is gone after the first
        core = self.core
        stopped = asyncio.run_coroutine_threadsafe(self.stop_sending(), self.worker.loop)
        with contextlib.suppress(Exception):
            stopped.result(timeout=35)
        if core is not None:
            self.worker.submit(core.close)
        self.worker.stop()


def _counts(core: PhoneCore) -> dict[str, int]:
    if core.account is None:
        return {}
    counts = {str(k): v for k, v in core.outbox.counts().items()}
    pending = [p for p in core.photos.all() if str(p.state) != "stored"]
    counts["photos_pending"] = len(pending)
    return counts


def _bytes(core: PhoneCore) -> int:
    t = core.transport
    return int(t.bytes_sent + t.bytes_received)
