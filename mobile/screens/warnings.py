"""Warnings: alerts in force for where I am, with the colour level (蓝/黄/橙/红), headline,
instruction, area and expiry; an updated warning says so (a cancelled one leaves the phone:
the server deletes its record), an exercise is marked."""

from __future__ import annotations

from typing import Any

from kivy.core.text import Label as CoreLabel
from kivy.core.window import Window
from kivy.metrics import dp, sp
from kivy.properties import ColorProperty, NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label

from i18n import N_
from mobile.screens.common import FieldScreen, local_time
from mobile.ui import LEVELS, Painted, rgba, tr

COLOUR = {"blue": N_("Blue"), "yellow": N_("Yellow"), "orange": N_("Orange"), "red": N_("Red")}
KIND = {"alert": N_("New"), "update": N_("Updated")}


class LevelBadge(Label, Painted):  # type: ignore[misc]
    """The colour level: 蓝/黄/橙/红 on its colour, text at 7:1 on it."""

    bg_color = ColorProperty([0, 0, 0, 1])


class AlertRow(BoxLayout, Painted):  # type: ignore[misc]
    """One warning: a level badge in its colour, then the texts."""

    level = StringProperty("")
    level_bg = ColorProperty([0, 0, 0, 1])
    level_fg = ColorProperty([1, 1, 1, 1])
    headline = StringProperty("")
    line2 = StringProperty("")
    line3 = StringProperty("")
    line4 = StringProperty("")
    line3_height = NumericProperty(0)
    bg_color = ColorProperty([0, 0, 0, 0])


#: the row without its instruction: padding, headline, status and area lines
ROW_BASE_DP = 16 + 3 * 30
#: the badge and the gaps beside the texts
TEXT_INSET_DP = 10 + 64 + 10 + 10


def text_height(text: str, width: float, font_size: float) -> float:
    """The height `text` takes wrapped to `width` (Kivy's own text layout, as drawn)."""
    if not text:
        return 0.0
    label = CoreLabel(text=text, font_size=font_size, text_size=(width, None))
    label.refresh()
    return float(label.texture.height)


class WarningsScreen(FieldScreen):
    """Public warnings for my area."""

    def fetch(self, core: Any) -> dict[str, Any]:
        fix = core.geolocator.last_fix() if core.geolocator is not None else None
        at = (fix.lon, fix.lat) if fix is not None else None
        alerts = core.views.alerts(lang=tr.lang, at=at, include_elsewhere=True)
        rows = []
        for a in alerts:
            rec = a.record
            texts = a.texts
            bg, fg = LEVELS.get(str(a.color), ("#444444", "#FFFFFF"))
            kind = "update" if rec.get("msg_type") == "Update" else "alert"
            status = [tr._(KIND[kind])]
            if a.drill:
                status.append(tr._("exercise, not a real warning"))
            if a.here is False:
                status.append(tr._("not where you are"))
            expires = local_time(rec.get("expires"))
            headline = a.headline
            rows.append(
                {
                    "viewclass": "AlertRow",
                    "level": tr._(COLOUR.get(str(a.color), "")) or "",
                    "level_bg": rgba(bg),
                    "level_fg": rgba(fg),
                    "headline": headline,
                    "line2": " · ".join(status),
                    "line3": texts.get("instruction") or texts.get("description") or "",
                    "line4": " · ".join(
                        x
                        for x in (
                            texts.get("area_desc") or "",
                            tr._("until {at}", at=expires) if expires else "",
                        )
                        if x
                    ),
                }
            )
        return {"rows": rows}

    def show(self, data: Any) -> None:
        if data is None:
            return
        width = max(dp(120), (self.width or Window.width) - dp(TEXT_INSET_DP))
        for row in data["rows"]:
            tall = text_height(row["line3"], width, sp(16)) + dp(4)
            row["line3_height"] = tall
            row["size"] = (None, max(dp(150), dp(ROW_BASE_DP) + tall))
        self.ids.rv.data = data["rows"]
        self.ids.empty.text = "" if data["rows"] else tr._("No warnings for your area.")


SCREEN = WarningsScreen
