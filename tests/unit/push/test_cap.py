"""CAP 1.2: XML round trip, schema order, colour levels, safe parsing, feed, area matching."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from push.cap import (
    CAP_NS,
    Alert,
    Area,
    CapError,
    Circle,
    Info,
    Parameter,
    Reference,
    atom_feed,
    current_alerts,
    format_cap_datetime,
    from_xml,
    parse_cap_datetime,
    point_in_polygon,
    select_recipients,
    to_xml,
    warning_colour,
    warning_parameters,
)

C = "{" + CAP_NS + "}"
SQUARE = ((31.20, 121.40), (31.20, 121.55), (31.30, 121.55), (31.30, 121.40), (31.20, 121.40))
SENT = datetime(2026, 7, 1, 8, 30, tzinfo=timezone(timedelta(hours=8)))


def make_alert(**over: object) -> Alert:
    severity, params = warning_parameters("orange")
    info = Info(
        category=("Met",),
        event="暴雨",
        urgency="Immediate",
        severity=severity,
        certainty="Likely",
        headline="暴雨橙色预警",
        expires=SENT + timedelta(hours=6),
        parameters=params,
        areas=(Area("浦东新区", polygons=(SQUARE,)),),
    )
    fields: dict[str, object] = {
        "identifier": "LD-1",
        "sender": "ema@liandong.example",
        "sent": SENT,
        "status": "Actual",
        "msg_type": "Alert",
        "scope": "Public",
        "infos": (info,),
    }
    fields.update(over)
    return Alert(**fields)  # type: ignore[arg-type]


# -- hypothesis strategies -------------------------------------------------------------------

tokens = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
        exclude_characters=",<&\ufffe\uffff",  # U+FFFE/U+FFFF: not XML characters
    ),
    min_size=1,
    max_size=20,
)
# XML 1.0 cannot carry most control characters, and CAP text is trimmed on the way in.
texts = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff"
    ),
    max_size=40,
).map(str.strip)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))])
times = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)),  # noqa: DTZ001
    offsets,
)
lat = st.floats(-89.0, 89.0, allow_nan=False)
lon = st.floats(-179.0, 179.0, allow_nan=False)


@st.composite
def rings(draw: st.DrawFn) -> tuple[tuple[float, float], ...]:
    points = draw(st.lists(st.tuples(lat, lon), min_size=3, max_size=8))
    return (*points, points[0])


areas = st.builds(
    Area,
    area_desc=texts.filter(bool),
    polygons=st.lists(rings(), max_size=2).map(tuple),
    circles=st.lists(
        st.builds(Circle, lat=lat, lon=lon, radius_km=st.floats(0, 500)), max_size=2
    ).map(tuple),
)
colours = st.sampled_from(["blue", "yellow", "orange", "red"])


@st.composite
def infos(draw: st.DrawFn) -> Info:
    severity, params = warning_parameters(draw(colours))
    return Info(
        category=tuple(
            draw(st.lists(st.sampled_from(["Met", "Geo", "Fire", "CBRNE"]), min_size=1))
        ),
        event=draw(texts.filter(bool)),
        urgency=draw(st.sampled_from(["Immediate", "Expected", "Future", "Past", "Unknown"])),
        severity=severity,
        certainty=draw(st.sampled_from(["Observed", "Likely", "Possible", "Unknown"])),
        language=draw(st.sampled_from(["zh-CN", "en-US"])),
        response_type=tuple(draw(st.lists(st.sampled_from(["Shelter", "Evacuate"]), max_size=2))),
        effective=draw(st.none() | times),
        expires=draw(st.none() | times),
        headline=draw(st.none() | texts),
        description=draw(st.none() | texts),
        instruction=draw(st.none() | texts),
        parameters=params + tuple(draw(st.lists(st.builds(Parameter, tokens, texts), max_size=2))),
        areas=tuple(draw(st.lists(areas, max_size=2))),
    )


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    msg_type = draw(st.sampled_from(["Alert", "Update", "Cancel"]))
    refs = ()
    if msg_type != "Alert":
        refs = tuple(draw(st.lists(st.builds(Reference, tokens, tokens, times), min_size=1)))
    return Alert(
        identifier=draw(tokens),
        sender=draw(tokens),
        sent=draw(times),
        status=draw(st.sampled_from(["Actual", "Exercise", "Test"])),
        msg_type=msg_type,
        scope="Public",
        note=draw(st.none() | texts),
        references=refs,
        infos=tuple(draw(st.lists(infos(), max_size=2))),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(alerts())
def test_xml_round_trip_is_a_fixed_point(alert: Alert) -> None:
    once = to_xml(alert)
    assert to_xml(from_xml(once)) == once


def test_round_trip_keeps_values() -> None:
    alert = make_alert()
    back = from_xml(to_xml(alert))
    assert back == alert
    assert back.infos[0].areas[0].polygons[0] == SQUARE


def test_elements_follow_the_cap_schema_order() -> None:
    alert = make_alert(
        msg_type="Update",
        references=(Reference("ema@liandong.example", "LD-0", SENT),),
        note="n",
        source="s",
    )
    root = ET.fromstring(to_xml(alert))  # noqa: S314 - our own output
    assert root.tag == C + "alert"
    assert [child.tag.removeprefix(C) for child in root] == [
        "identifier", "sender", "sent", "status", "msgType", "source", "scope", "note",
        "references", "info",
    ]  # fmt: skip
    info = root.find(C + "info")
    assert info is not None
    assert [child.tag.removeprefix(C) for child in info] == [
        "language", "category", "event", "urgency", "severity", "certainty", "expires",
        "headline", "parameter", "parameter", "area",
    ]  # fmt: skip
    assert root.findtext(C + "references") == "ema@liandong.example,LD-0,2026-07-01T08:30:00+08:00"


@pytest.mark.parametrize(
    ("colour", "severity", "level"),
    [("blue", "Minor", "IV"), ("yellow", "Moderate", "III"), ("orange", "Severe", "II"),
     ("red", "Extreme", "I")],
)  # fmt: skip
def test_colour_levels_map_to_cap_severity(colour: str, severity: str, level: str) -> None:
    got_severity, params = warning_parameters(colour)  # type: ignore[arg-type]
    assert got_severity == severity
    assert {(p.value_name, p.value) for p in params} == {
        ("warningColor", colour),
        ("warningLevel", level),
    }
    info = Info(
        category=("Met",), event="x", urgency="Expected", severity=got_severity,
        certainty="Likely", parameters=params,
    )  # fmt: skip
    assert warning_colour(from_xml(to_xml(make_alert(infos=(info,)))).infos[0]) == colour
    with pytest.raises(ValueError):
        warning_parameters("purple")  # type: ignore[arg-type]


def test_cap_datetimes() -> None:
    assert format_cap_datetime(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == (
        "2026-01-02T03:04:05-00:00"
    )
    assert parse_cap_datetime("2026-01-02T11:04:05+08:00") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    for bad in ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05", "2026-13-02T03:04:05+00:00"):
        with pytest.raises(CapError):
            parse_cap_datetime(bad)
    with pytest.raises(CapError):
        format_cap_datetime(datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&b;</identifier></alert>',
        b'<?xml version="1.0"?><!DOCTYPE alert SYSTEM "file:///etc/passwd">'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>',
        b"<alert><identifier>x</identifier></alert>",
        b"<not xml",
    ],
)
def test_unsafe_or_foreign_documents_are_refused(document: bytes) -> None:
    with pytest.raises(CapError):
        from_xml(document)


def test_invalid_values_are_refused_on_parse() -> None:
    good = to_xml(make_alert()).decode()
    for before, after in [
        ("<severity>Severe</severity>", "<severity>Terrible</severity>"),
        ("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>"),  # Cancel without references
        ("31.2,121.4</polygon>", "31.25,121.4</polygon>"),  # ring not closed
    ]:
        with pytest.raises(CapError):
            from_xml(good.replace(before, after))
    with pytest.raises(ValueError):
        make_alert(identifier="has space")


def test_current_alerts_drop_superseded_cancelled_expired_and_exercises() -> None:
    first = make_alert(identifier="A1")
    update = make_alert(
        identifier="A2",
        msg_type="Update",
        references=(Reference(first.sender, "A1", first.sent),),
        sent=SENT + timedelta(hours=1),
    )
    other = make_alert(identifier="B1")
    cancel = make_alert(
        identifier="B2", msg_type="Cancel", references=(Reference(other.sender, "B1", other.sent),)
    )
    drill = make_alert(identifier="C1", status="Exercise")
    stale = make_alert(identifier="D1", sent=SENT - timedelta(days=2))
    stale = make_alert(
        identifier="D1",
        infos=(
            Info(
                category=("Met",), event="old", urgency="Past", severity="Minor",
                certainty="Observed", expires=SENT - timedelta(days=1),
            ),
        ),
    )  # fmt: skip
    now = SENT + timedelta(hours=2)
    live = current_alerts([first, update, other, cancel, drill, stale], now)
    assert [a.identifier for a in live] == ["A2"]


def test_atom_feed_links_each_cap_document() -> None:
    alert = make_alert()
    feed = atom_feed(
        [alert],
        feed_id="urn:liandong:feed",
        title="预警",
        self_url="https://x.example/cap/feed.atom",
        alert_url=lambda a: f"https://x.example/cap/{a.identifier}.xml",
        now=SENT,
    )
    root = ET.fromstring(feed)  # noqa: S314 - our own output
    atom = "{http://www.w3.org/2005/Atom}"
    entry = root.find(atom + "entry")
    assert entry is not None
    link = entry.find(atom + "link")
    assert link is not None and link.get("type") == "application/cap+xml"
    assert link.get("href") == "https://x.example/cap/LD-1.xml"
    assert entry.findtext(atom + "title") == "暴雨橙色预警"
    assert entry.findtext(atom + "updated") == "2026-07-01T00:30:00Z"


def test_point_in_polygon_basics() -> None:
    assert point_in_polygon(31.25, 121.45, SQUARE)
    assert not point_in_polygon(31.35, 121.45, SQUARE)
    assert point_in_polygon(31.20, 121.45, SQUARE)  # on an edge counts as inside
    assert point_in_polygon(31.20, 121.40, SQUARE)  # a vertex too


@settings(max_examples=300)
@given(rings(), lat, lon)
def test_point_in_polygon_agrees_with_shapely(
    ring: tuple[tuple[float, float], ...], y: float, x: float
) -> None:
    polygon = shapely.Polygon([(p[1], p[0]) for p in ring])
    point = shapely.Point(x, y)
    if not polygon.is_valid or polygon.area < 1e-6 or polygon.boundary.distance(point) < 1e-6:
        return  # self-intersecting rings and near-boundary points are conventions, not facts
    assert point_in_polygon(y, x, ring) == polygon.contains(point)


def test_select_recipients_by_polygon_and_circle() -> None:
    area = Area("two", polygons=(SQUARE,), circles=(Circle(30.0, 120.0, 5.0),))
    alert = make_alert(
        infos=(
            Info(
                category=("Met",), event="e", urgency="Immediate", severity="Severe",
                certainty="Observed", areas=(area,),
            ),
        )
    )  # fmt: skip
    positions = [
        ("inside-square", 31.25, 121.45),
        ("outside", 31.5, 121.45),
        ("in-circle", 30.03, 120.0),  # ~3.3 km north of the centre
        ("beyond-circle", 30.06, 120.0),  # ~6.7 km
    ]
    assert select_recipients(alert, positions) == ["inside-square", "in-circle"]


def test_text_xml_cannot_carry_is_refused_not_written() -> None:
    """U+FFFF (or a C0 control) in a headline would make the whole feed unreadable."""
    alert = make_alert()
    bad = make_alert(infos=(msgspec.structs.replace(alert.infos[0], headline="暴雨\uffff预警"),))
    with pytest.raises(CapError, match=r"U\+FFFF"):
        to_xml(bad)
    to_xml(alert)  # the same alert without it is written
