"""Times the app shows are on the phone's own wall clock, the same way everywhere: the
screens' times and the draft's "saved at" through `mobile.core.clock.display_time`, in the zone
the device is set to (a phone in Kathmandu shows +05:45, not China's or UTC's hour)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mobile.core.clock import device_zone, display_time
from mobile.core.drafts import Draft

ROOT = Path(__file__).resolve().parents[3]
AT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def kathmandu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The device set to Asia/Kathmandu (UTC+05:45: no hour-aligned zone gives its times)."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_on_the_device_wall_clock(kathmandu: None) -> None:
    assert device_zone().utcoffset(AT).total_seconds() == 5 * 3600 + 45 * 60  # type: ignore[union-attr]
    assert display_time(AT) == "11-20 13:45"
    assert display_time("2026-11-20T08:00:00.000Z") == "11-20 13:45"
    assert display_time("2026-11-20T08:00:00Z", with_date=False) == "13:45"
    assert display_time(AT, zone=ZoneInfo("Asia/Shanghai")) == "11-20 16:00"
    assert display_time(None) == "" and display_time("") == ""
    assert display_time("not a time") == "not a time"
    # the draft's question names the same wall-clock time as the screens
    offer = Draft("task", "t-1", {"note": "x"}, saved_at=AT).offer_text("en")
    assert "11-20 13:45" in offer, offer


def test_no_time_is_formatted_outside_display_time() -> None:
    """One formatter: a screen or core module formatting a time itself (its own zone, or
    none) shows a different hour from the rest of the app."""
    found = []
    for path in sorted((ROOT / "mobile").rglob("*.py")):
        if path.name == "clock.py":
            continue
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if re.search(r"\bstrftime\(|\.astimezone\((LOCAL_ZONE)?\)", line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []
