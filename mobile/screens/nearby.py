"""Nearby: shelters, depots, teams and contacts, nearest first, each with a call button; the
emergency plans my unit takes part in."""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.metrics import dp
from kivy.properties import ColorProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from i18n import N_
from mobile.screens.common import FieldScreen, distance_text
from mobile.ui import Painted, tr

KIND = {
    "shelter": N_("Shelter"),
    "depot": N_("Supply depot"),
    "team": N_("Rescue team"),
    "contact": N_("Contact"),
    "duty": N_("Duty line"),
}


class PlaceRow(BoxLayout, Painted):  # type: ignore[misc]
    """A place or contact with a call button."""

    title = StringProperty("")
    line2 = StringProperty("")
    line3 = StringProperty("")
    phone = StringProperty("")
    bg_color = ColorProperty([0, 0, 0, 0])

    def call(self) -> None:
        if self.phone:
            App.get_running_app().open_uri(f"tel:{self.phone}")


def place_row(title: str, line2: str, line3: str, phone: str) -> dict[str, Any]:
    return {
        "viewclass": "PlaceRow",
        "title": title,
        "line2": line2,
        "line3": line3,
        "phone": phone or "",
        "size": (None, dp(96)),
    }


class NearbyScreen(FieldScreen):
    """What is near me, and who to call."""

    def fetch(self, core: Any) -> dict[str, Any]:
        fix = core.geolocator.last_fix() if core.geolocator is not None else None
        rows: list[dict[str, Any]] = []
        if fix is not None:
            places = core.views.nearby(fix.lon, fix.lat, limit=50)
            rows.append(section(tr._("Nearest first")))
        else:
            places = core.views.nearby(0.0, 0.0, limit=50)
            rows.append(section(tr._("No position: not sorted by distance")))
        for n in places:
            rec = n.record
            kind = tr._(KIND.get(str(rec.get("kind")), "")) or str(rec.get("kind") or "")
            far = distance_text(n.distance_m) if fix is not None else ""
            cap = tr.n_("{n} person", "{n} people", rec["capacity"]) if rec.get("capacity") else ""
            rows.append(
                place_row(
                    rec.get("name") or "",
                    " · ".join(x for x in (kind, far, cap) if x),
                    " · ".join(
                        x for x in (rec.get("address") or "", rec.get("contact") or "") if x
                    ),
                    rec.get("phone") or "",
                )
            )
        contacts = core.views.contacts()
        if contacts:
            rows.append(section(tr._("Contacts")))
        for c in contacts:
            rec = c.record
            name = rec.get("name") or ""
            if tr.lang == "en" and rec.get("name_en"):
                name = rec["name_en"]
            kind = tr._(KIND["duty"]) if rec.get("duty") else rec.get("role_title") or ""
            rows.append(place_row(name, kind, rec.get("notes") or "", rec.get("phone") or ""))
        plans = core.views.plans() if hasattr(core.views, "plans") else []
        if plans:
            rows.append(section(tr._("Plans my unit takes part in")))
        for p in plans:
            rec = p.record
            mine = "; ".join(str(t.get("title") or t.get("unit_kind") or "") for t in p.mine)
            rows.append(
                {
                    "viewclass": "RecordRow",
                    "title": p.name,
                    "line2": tr._("Level {n} and above", n=rec.get("min_level") or "")
                    + " · "
                    + str(rec.get("incident_type") or ""),
                    "line3": mine,
                    "tag": "",
                    "tag_alarm": False,
                    "target": "",
                    "key": None,
                    "extra": None,
                    "size": (None, dp(96)),
                }
            )
        return {"rows": rows}

    def show(self, data: Any) -> None:
        if data is not None:
            self.ids.rv.data = data["rows"]


def section(title: str) -> dict[str, Any]:
    return {"viewclass": "SectionRow", "title": title, "size": (None, dp(44))}


SCREEN = NearbyScreen
