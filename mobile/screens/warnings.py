"""Warnings: alerts in force for where I am, with the colour level (蓝/黄/橙/红), headline,
instruction, area and expiry; an updated warning says so (a cancelled one leaves the phone:
the server deletes its record), an exercise is marked."""

from __future__ import annotations

from typing import Any

from kivy.metrics import dp
from kivy.properties import ColorProperty, StringProperty
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
    bg_color = ColorProperty([0, 0, 0, 0])


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
                    "size": (None, dp(150)),
                }
            )
        return {"rows": rows}

    def show(self, data: Any) -> None:
        if data is None:
            return
        self.ids.rv.data = data["rows"]
        self.ids.empty.text = "" if data["rows"] else tr._("No warnings for your area.")


SCREEN = WarningsScreen
