"""What the screens share: the screen base class, list rows, and words for the core's codes.

A screen's `fetch(core)` runs on the core's worker thread and returns plain data (rows for a
RecycleView, texts); `show(data)` puts it on the widgets on Kivy's thread. Field rules stay in
the core: a refused action comes back as `ActionRefusedError` and is shown in the user's words.
"""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.properties import BooleanProperty, ColorProperty, ObjectProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.recycleview.views import RecycleDataViewBehavior
from kivy.uix.screenmanager import Screen

from i18n import N_
from mobile.core import i18n as core_i18n
from mobile.core.actions import ActionRefusedError
from mobile.core.clock import display_time
from mobile.core.geo import haversine_m
from mobile.ui import Painted, Text, theme, tr

# Words for machine-readable values the screens show (the values themselves never change).
STATUS = {
    "assigned": N_("Assigned"),
    "accepted": N_("Accepted"),
    "declined": N_("Declined"),
    "en_route": N_("En route"),
    "on_scene": N_("On scene"),
    "completed": N_("Completed"),
    "cancelled": N_("Cancelled"),
    "reported": N_("Reported"),
    "verified": N_("Verified"),
    "rejected": N_("Rejected"),
    "rectification_assigned": N_("To rectify"),
    "rectified": N_("Rectified"),
    "reinspected": N_("Re-inspected"),
    "closed": N_("Closed"),
    "reopened": N_("Reopened"),
}
CATEGORY = {
    "fire": N_("Fire"),
    "electrical": N_("Electrical"),
    "gas": N_("Gas"),
    "hazardous_chemicals": N_("Hazardous chemicals"),
    "structural": N_("Structural"),
    "flood": N_("Flood"),
    "landslide": N_("Landslide"),
    "road": N_("Road"),
    "other": N_("Other"),
}
SEVERITY = {
    "low": N_("Low"),
    "medium": N_("Medium"),
    "high": N_("High"),
    "critical": N_("Critical"),
}
ROLE = {
    "responder": N_("Responder"),
    "inspector": N_("Grid inspector"),
    "enterprise_staff": N_("Enterprise safety officer"),
    "dispatcher": N_("Dispatcher"),
    "admin": N_("Administrator"),
}


def word(table: dict[str, str], value: Any) -> str:
    """The translated word for a code (the code itself when unknown)."""
    key = str(value or "")
    return tr._(table[key]) if key in table else key


def local_time(iso: str | None, with_date: bool = True) -> str:
    """An RFC 3339 time as `MM-DD HH:MM` on the phone's wall clock (the zone the device is
    set to: `mobile.core.clock.display_time`, as every time the app shows)."""
    return display_time(iso, with_date=with_date)


def photos_text(done: int, total: int) -> str:
    """`2/3 photos` (sent of taken), `1/1 photo`."""
    return tr.n_("{done}/{total} photo", "{done}/{total} photos", total, done=done, total=total)


def distance_text(metres: float | None) -> str:
    """`850 m` / `2.4 km` (empty without a position)."""
    if metres is None:
        return ""
    return f"{metres:.0f} m" if metres < 1000 else f"{metres / 1000:.1f} km"


def distance_to(core: Any, record: dict[str, Any]) -> float | None:
    """Metres from the phone's last fix to a record's point (None when either is unknown)."""
    fix = core.geolocator.last_fix() if core.geolocator is not None else None
    coords = (record.get("location") or {}).get("coordinates")
    if fix is None or not coords:
        return None
    return haversine_m(fix.lon, fix.lat, float(coords[0]), float(coords[1]))


class Message(Text):
    """The screen's message (`FieldScreen.say`: a refusal or a note), in the danger colour
    when it is an alarm; in its layout only while there is one (`FieldScreen.on_kv_post`)."""

    screen = ObjectProperty(None, allownone=True)
    alarm = BooleanProperty(False)

    def __init__(self, **kwargs: Any) -> None:
        self._watched: Any = None
        super().__init__(**kwargs)

    def on_screen(self, _me: Any, screen: Any) -> None:
        # Bound here, not in kv: a rule `text: self.screen.message` bound the chain while
        # `screen` was still None and never followed `message` once the screen's rule set it,
        # so no screen showed its message.
        if self._watched is not None:
            self._watched.unbind(message=self._show, message_alarm=self._show)
        self._watched = screen
        if screen is not None:
            screen.bind(message=self._show, message_alarm=self._show)
        self._show()

    def _show(self, *_args: Any) -> None:
        screen = self.screen
        self.text = screen.message if screen is not None else ""
        self.alarm = bool(screen is not None and screen.message_alarm)


def while_they_have_text(*labels: Any, above: Any) -> tuple[Any, ...]:
    """Keep `labels` (in this order, just above the widget `above` in its layout) in the layout
    only while each has text, as their texts change. Returns the labels themselves, for the
    caller to hold: a screen's `ids` are weak references, and a label out of the layout has
    no other owner.

    An empty label in a BoxLayout still takes its minimum height and the layout's spacing
    (even at height 0 the spacing stays): a blank band in the screen."""
    held = tuple(getattr(label, "__self__", label) for label in labels)  # not the weak proxy
    column = above.parent

    def place(*_args: Any) -> None:
        for label in held:
            if label.parent is not None:
                label.parent.remove_widget(label)
        for label in held:
            if label.text:
                column.add_widget(label, index=column.children.index(above) + 1)

    for label in held:
        label.bind(text=place)
    place()
    return held


def refusal(exc: BaseException) -> str:
    """Words for a refused action or a failed call, in the current language."""
    if isinstance(exc, ActionRefusedError):
        return core_i18n.reason(exc.rule, None, "", tr.lang)
    return tr._("Something went wrong: {error}", error=type(exc).__name__)


class RecordPhotos:
    """Photos taken on a record's screen for its next step, kept per record: the screen is
    reused for every record, and a photo taken on hazard A must never go with B's step."""

    def __init__(self) -> None:
        self._by_record: dict[str, list[Any]] = {}

    def of(self, key: Any) -> list[Any]:
        """The photos waiting on record `key` (the list itself)."""
        return self._by_record.setdefault(str(key), [])

    def take(self, key: Any) -> list[Any]:
        """The photos of record `key`, handed to its step (none wait afterwards)."""
        return self._by_record.pop(str(key), [])


class FieldScreen(Screen):  # type: ignore[misc]
    """A screen over the core: `refresh` fetches off the UI thread, then `show`s.

    A screen that edits a record (`form` names it, `form_fields` are the ids of its text
    fields) is reused for every record, so what is typed belongs to the record it was typed
    for: when the record changes the fields, the photos waiting and the message are cleared,
    and the record's own draft (the core's `Drafts`, saved on every change under the form's
    name and the record's id) comes back. A draft is discarded when its action is written
    (`form_sent`)."""

    message = StringProperty("")  # a refusal or a note shown to the user
    message_alarm = BooleanProperty(False)
    loading = BooleanProperty(False)
    params: dict[str, Any]
    #: the labels in the layout only while they have text (`while_they_have_text`), held here
    optional_lines: tuple[Any, ...] = ()
    #: the draft's form name (empty: the screen edits no record)
    form = ""
    #: the ids of the form's text fields, kept per record
    form_fields: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        self.params = {}
        self.pending = RecordPhotos()
        self.form_key: str | None = None  # the record the fields hold
        self.form_owner: str | None = None  # and whose it is
        self._quiet = False  # the fields are being set, not typed
        super().__init__(**kwargs)

    def on_kv_post(self, base_widget: Any) -> None:
        for name in self.form_fields:
            self.ids[name].bind(text=self._typed)
        lines = self.optional_lines_of()
        self.optional_lines = (*lines, *self._keep_messages(lines))

    def optional_lines_of(self) -> tuple[Any, ...]:
        """The screen's own optional lines (`while_they_have_text`), once its kv is built; its
        message may be one of them, to keep its place among them."""
        return ()

    def _keep_messages(self, lines: tuple[Any, ...]) -> tuple[Any, ...]:
        """Every message not among `lines` leaves its layout while empty, as those lines do: an
        empty one in a BoxLayout still took the layout's spacing (at height 0), a blank band
        on the sign-in, report, self-check and settings screens."""
        messages = [
            w
            for w in self.walk(restrict=True)
            if isinstance(w, Message) and not any(w is line for line in lines)
        ]
        kept: list[Any] = []
        for message in messages:
            siblings = message.parent.children  # bottom first
            below = siblings.index(message) - 1
            if below >= 0:  # every screen's message has a widget below it
                kept.extend(while_they_have_text(message, above=siblings[below]))
        return tuple(kept)

    @property
    def app(self) -> Any:
        return App.get_running_app()

    # -- the per-record form --------------------------------------------------------------
    def _open_record(self, key: Any) -> None:
        """The screen now shows record `key`: a different record (or another user's, after a
        sign-out) starts from its own draft."""
        key = str(key)
        account = getattr(self.app.core, "account", None)
        owner = account.user_id if account is not None else None
        if (owner, key) == (self.form_owner, self.form_key):
            return
        self.form_key, self.form_owner = key, owner
        self._fill({})
        self.say("")
        drafts = getattr(self.app.core, "drafts", None)
        if drafts is not None:
            self.app.run_core(drafts.get, self.form, key, then=lambda d: self._restore(key, d))

    def _restore(self, key: str, draft: Any) -> None:
        if draft is None or key != self.form_key:
            return
        if not any(self.ids[name].text for name in self.form_fields):  # typed meanwhile
            self._fill(draft.values)
        if draft.photos and not self.pending.of(key):
            self.pending.of(key).extend(draft.photos)
        self.form_restored()

    def form_restored(self) -> None:
        """The record's draft is back on the form (show its photo count)."""

    def _fill(self, values: dict[str, Any]) -> None:
        self._quiet = True
        try:
            for name in self.form_fields:
                self.ids[name].text = str(values.get(name) or "")
        finally:
            self._quiet = False

    def _typed(self, *_args: Any) -> None:
        if not self._quiet:
            self.save_draft()

    def save_draft(self) -> None:
        """Save what the form holds for its record (the core's draft; none when empty)."""
        drafts = getattr(self.app.core, "drafts", None)
        key = self.form_key
        if drafts is None or key is None:
            return
        values = {n: self.ids[n].text for n in self.form_fields if self.ids[n].text}
        photos = list(self.pending.of(key))
        if values or photos:
            self.app.run_core(lambda: drafts.save(self.form, values, key=key, photos=photos))
        else:
            self.app.run_core(drafts.discard, self.form, key)

    def form_sent(self, key: str) -> None:
        """The record's action was written with what the form held: start it empty."""
        self.pending.take(key)
        if key == self.form_key:
            self._fill({})
        drafts = getattr(self.app.core, "drafts", None)
        if drafts is not None:
            self.app.run_core(drafts.discard, self.form, key)

    def refresh(self) -> None:
        """Fetch this screen's data on the core's thread and show it."""
        if self.form:
            self._open_record(self.params.get("key"))
        core = self.app.core
        if core is None or core.account is None or not self.needs_data():
            self.show(None)
            return
        self.loading = True
        self.app.run_core(self.fetch, core, then=self._got, fail=self._failed)

    def needs_data(self) -> bool:
        return True

    def _got(self, data: Any) -> None:
        self.loading = False
        self.show(data)

    def _failed(self, exc: BaseException) -> None:
        self.loading = False
        self.say(refusal(exc), alarm=True)

    def fetch(self, core: Any) -> Any:
        """Read what the screen shows (worker thread)."""
        return None

    def show(self, data: Any) -> None:
        """Put fetched data on the widgets (UI thread)."""

    def say(self, text: str, alarm: bool = False) -> None:
        """Show a short message on the screen."""
        self.message = text
        self.message_alarm = alarm

    def act(self, fn: Any, *args: Any, done: str = "", then: Any = None, **kwargs: Any) -> None:
        """Run a core action off the UI thread; say `done` (or the refusal) afterwards."""

        def call() -> Any:
            return fn(*args, **kwargs)

        def ok(result: Any) -> None:
            if done:
                self.say(done)
            self.app.wrote()
            if then is not None:
                then(result)
            self.refresh()

        self.app.run_core(call, then=ok, fail=lambda e: self.say(refusal(e), alarm=True))


class RecordRow(RecycleDataViewBehavior, ButtonBehavior, BoxLayout, Painted):  # type: ignore[misc]
    """One list row: title, two lines, a status tag; tapping opens `target` with `key`."""

    title = StringProperty("")
    line2 = StringProperty("")
    line3 = StringProperty("")
    tag = StringProperty("")
    tag_alarm = BooleanProperty(False)
    target = StringProperty("")
    key = ObjectProperty(None, allownone=True)
    extra = ObjectProperty(None, allownone=True)
    bg_color = ColorProperty([0, 0, 0, 0])

    def on_release(self) -> None:
        if self.target:
            App.get_running_app().open_screen(self.target, key=self.key, extra=self.extra)


class SectionRow(BoxLayout, Painted):  # type: ignore[misc]
    """A heading inside a list."""

    title = StringProperty("")
    bg_color = ColorProperty([0, 0, 0, 0])


__all__ = ["FieldScreen", "RecordRow", "SectionRow", "theme"]
