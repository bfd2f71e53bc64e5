"""Report a hazard: category, severity, description, camera photos, and the GPS fix with its
accuracy while it improves (used when good enough; a worse fix only when the user accepts it).
"""

from __future__ import annotations

from typing import Any

from kivy.clock import Clock

from mobile.core.geo import Fix, FixWait, wait_for_fix
from mobile.screens.common import FieldScreen
from mobile.ui import tr

#: a fix at or under this many metres is used without asking
GOOD_FIX_M = 20.0


class HazardReportScreen(FieldScreen):
    """The hazard report form."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.category = ""
        self.severity = ""
        self.photos: list[Any] = []
        self.fix: Fix | None = None
        self.best: Fix | None = None
        self.locating = False

    def needs_data(self) -> bool:
        return False

    def on_pre_enter(self, *_args: Any) -> None:
        self.start_locating()

    def on_leave(self, *_args: Any) -> None:
        """A fix is where the user stood while the form was open: the next visit locates
        again (the core also refuses a fix older than its `fix_max_age_s`)."""
        self.fix = self.best = None

    def show(self, data: Any) -> None:
        self._show_fix()
        self._show_choices()

    # -- position ---------------------------------------------------------------------------
    def start_locating(self) -> None:
        """GPS warm-up when the form opens; the accuracy shows as it improves."""
        core = self.app.core
        if core is None or core.geolocator is None or self.locating or self.fix is not None:
            return
        self.locating = True

        def progress(best: Fix | None) -> None:  # the core's thread
            Clock.schedule_once(lambda _dt: self._progress(best), 0)

        async def wait() -> FixWait:
            return await wait_for_fix(
                core.geolocator,
                threshold_m=GOOD_FIX_M,
                timeout_s=self.app.options.fix_timeout_s,
                poll_s=0.5,
                on_progress=progress,
            )

        self.app.run_core(wait, then=self._located, fail=self._failed, long=True)

    def _progress(self, best: Fix | None) -> None:
        if self.fix is None:
            self.best = best
            self._show_fix()

    def _located(self, result: FixWait) -> None:
        self.locating = False
        if self.fix is None:
            self.fix = result.fix
            self.best = result.best
        self._show_fix()

    def accept_worse(self) -> None:
        """The user accepts the best fix so far, knowing its accuracy."""
        if self.best is not None:
            self.fix = FixWait(None, self.best, timed_out=False).accept_worse()
            self._show_fix()

    def _show_fix(self) -> None:
        ids = self.ids
        best = self.fix or self.best
        if self.fix is not None:
            ids.fix.text = tr._("Position fixed: ±{m} m", m=round(self.fix.accuracy_m))
            ids.fix.color = self._theme.fg
        elif best is not None:
            ids.fix.text = tr._("Locating… now ±{m} m", m=round(best.accuracy_m))
        else:
            ids.fix.text = tr._("Locating…")
        coarse = self.fix is None and self.best is not None
        ids.accept.opacity = 1 if coarse else 0
        ids.accept.disabled = not coarse
        if coarse and self.best is not None:
            ids.accept.text = tr._(
                "Use this position anyway (±{m} m)", m=round(self.best.accuracy_m)
            )

    @property
    def _theme(self) -> Any:
        from mobile.ui import theme

        return theme

    # -- choices ----------------------------------------------------------------------------
    def choose(self, kind: str, value: str) -> None:
        setattr(self, kind, value)
        self._show_choices()

    def _show_choices(self) -> None:
        for box, chosen in (
            (self.ids.categories, self.category),
            (self.ids.severities, self.severity),
        ):
            for b in box.children:
                b.kind = "primary" if b.value == chosen else "plain"

    def take_photo(self) -> None:
        def got(ref: Any) -> None:
            if ref is not None:
                self.photos.append(ref)
            self.ids.photos.text = tr.n_("{n} photo", "{n} photos", len(self.photos))

        self.app.run_core(self.app.core.take_photo, then=got, fail=self._failed)

    def submit(self) -> None:
        if not self.category or not self.severity:
            self.say(tr._("Choose a category and a severity."), alarm=True)
            return
        if self.fix is None:
            self.say(tr._("Wait for a position, or accept the less accurate one."), alarm=True)
            return
        actions = self.app.core.actions
        self.act(
            actions.report_hazard,
            category=self.category,
            severity=self.severity,
            description=self.ids.description.text,
            fix=self.fix,
            photos=list(self.photos),
            done=tr._("Hazard saved. It is sent when the network allows."),
            then=lambda _id: self._reset(),
        )

    def _reset(self) -> None:
        self.category = self.severity = ""
        self.photos = []
        self.fix = self.best = None
        self.ids.description.text = ""
        self.ids.photos.text = tr.n_("{n} photo", "{n} photos", 0)
        self._show_choices()
        self.start_locating()


SCREEN = HazardReportScreen
