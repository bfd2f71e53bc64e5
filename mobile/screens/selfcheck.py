"""The week's self-check: each item pass / fail / n.a., a note and a photo; a failed item says
that it will open a hazard (the server opens it when the submission arrives)."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.metrics import dp

from i18n import N_
from mobile.core.actions import CheckResult
from mobile.screens.common import FieldScreen, while_they_have_text
from mobile.ui import Btn, Field, Surface, Text, theme, tr

RESULTS = (("pass", N_("Pass")), ("fail", N_("Fail")), ("na", N_("N/A")))


class CheckItem(Surface):
    """One item of the form."""

    def __init__(self, screen: Any, item: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(orientation="vertical", size_hint_y=None, padding=dp(10), spacing=dp(8))
        self.screen = screen
        self.item = item
        self.result = ""
        self.photos: list[Any] = []
        self.bg_color = theme.surface
        theme.bind(surface=self.setter("bg_color"))
        self.bind(minimum_height=self.setter("height"))
        self.label = Text(text=str(item.get("text") or ""))
        self.add_widget(self.label)
        row = Factory.BoxLayout(size_hint_y=None, height=dp(56), spacing=dp(8))
        self.buttons: dict[str, Any] = {}
        for value, words in RESULTS:
            b = Btn(text=tr._(words), kind="plain")
            b.bind(on_release=lambda _b, v=value: self.choose(v))
            self.buttons[value] = b
            row.add_widget(b)
        self.add_widget(row)
        self.warning = Text(text="", role="body")
        self.note = Field(hint_text=tr._("Note"), multiline=False)
        self.add_widget(self.note)
        # In the form only while it has something to say: an empty label still took its
        # minimum height and two spacings, a blank band above the note on every item.
        while_they_have_text(self.warning, above=self.note)
        prow = Factory.BoxLayout(size_hint_y=None, height=dp(56), spacing=dp(8))
        self.photo_btn = Btn(text=tr._("Take photo"), kind="plain")
        self.photo_btn.bind(on_release=lambda _b: screen.take_photo(self))
        self.photo_count = Text(text="", size_hint_y=1)
        prow.add_widget(self.photo_btn)
        prow.add_widget(self.photo_count)
        self.add_widget(prow)
        self.retranslate()

    def choose(self, value: str) -> None:
        self.result = value
        self.retranslate()

    def retranslate(self) -> None:
        for value, words in RESULTS:
            b = self.buttons[value]
            b.text = tr._(words)
            b.kind = ("danger" if value == "fail" else "ok") if value == self.result else "plain"
        self.warning.text = (
            tr._("A failed item opens a hazard for rectification when the self-check is sent.")
            if self.result == "fail"
            else ""
        )
        self.warning.color = theme.danger
        self.note.hint_text = tr._("Note")
        self.photo_btn.text = tr._("Take photo")
        n = len(self.photos)
        self.photo_count.text = tr.n_("{n} photo", "{n} photos", n) if n else ""


class SelfCheckScreen(FieldScreen):
    """The form for one template and enterprise, this week."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.items: list[CheckItem] = []
        self.week = ""
        self.loaded_for: tuple[Any, Any] | None = None

    def fetch(self, core: Any) -> dict[str, Any] | None:
        week = core.views.checks_this_week()
        for enterprise_id, tpl in week.due:
            if tpl["id"] == str(self.params.get("key")) and enterprise_id == self.params.get(
                "extra"
            ):
                return {"week": week.week, "template": tpl, "enterprise_id": enterprise_id}
        return {"week": week.week, "template": None, "enterprise_id": None}

    def show(self, data: Any) -> None:
        if data is None:
            return
        tpl = data["template"]
        ids = self.ids
        key = (self.params.get("key"), self.params.get("extra"))
        if tpl is None:
            ids.name.text = tr._("This week's self-check is done.")
            ids.item_box.clear_widgets()
            self.items = []
            self.loaded_for = None
            return
        self.week = data["week"]
        self.enterprise_id = data["enterprise_id"]
        self.template_id = tpl["id"]
        ids.name.text = tpl.get("name") or ""
        ids.week.text = tr._("Week {week}", week=self.week)
        if self.loaded_for == key:  # keep what the user has filled in
            for item in self.items:
                item.retranslate()
            return
        self.loaded_for = key
        ids.item_box.clear_widgets()
        items = sorted(tpl.get("items") or [], key=lambda i: i.get("position") or 0)
        self.items = [CheckItem(self, i) for i in items]
        for w in self.items:
            ids.item_box.add_widget(w)

    def take_photo(self, item: CheckItem) -> None:
        def got(ref: Any) -> None:
            if ref is not None:
                item.photos.append(ref)
            item.retranslate()

        self.app.run_core(self.app.core.take_photo, then=got, fail=self._failed)

    def submit(self) -> None:
        missing = [i for i in self.items if not i.result]
        if missing:
            self.say(tr._("Answer every item ({n} left).", n=len(missing)), alarm=True)
            return
        results = [
            CheckResult(str(i.item["id"]), i.result, i.note.text.strip() or None, list(i.photos))
            for i in self.items
        ]
        failed = sum(1 for i in self.items if i.result == "fail")
        self.act(
            self.app.core.actions.submit_check,
            enterprise_id=self.enterprise_id,
            template_id=self.template_id,
            week=self.week,
            results=results,
            done=tr.n_(
                "Self-check saved; {n} failed item will open a hazard.",
                "Self-check saved; {n} failed items will open hazards.",
                failed,
            ),
            then=lambda _id: self._submitted(),
        )

    def _submitted(self) -> None:
        self.loaded_for = None


SCREEN = SelfCheckScreen
