"""CAP 1.2 public warnings: model, XML, Atom feed, Chinese colour levels, area matching.

The model follows OASIS CAP 1.2 (urn:oasis:names:tc:emergency:cap:1.2) field for field for what
we publish; `to_xml` writes elements in the schema's sequence order, `from_xml` reads them back
and validates with the same types, and `to_xml(from_xml(to_xml(a))) == to_xml(a)`.

Chinese warning colours (预警 蓝 IV / 黄 III / 橙 II / 红 I) are not a CAP field. We carry them as
`<parameter>`s named `warningColor` (blue|yellow|orange|red) and `warningLevel` (IV..I) and
derive the CAP severity from the colour: blue→Minor, yellow→Moderate, orange→Severe,
red→Extreme, so a consumer that knows only CAP still ranks them right.

Coordinates are WGS-84. A CAP polygon is "lat,lon lat,lon ..." with the first point repeated
last; we store it as a tuple of (lat, lon) pairs in that order.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, Literal, TypeVar
from xml.parsers import expat

import msgspec

__all__ = [
    "CAP_NS",
    "Alert",
    "Area",
    "CapError",
    "Circle",
    "Geocode",
    "Info",
    "Parameter",
    "Reference",
    "alert_covers",
    "atom_feed",
    "current_alerts",
    "format_cap_datetime",
    "from_xml",
    "parse_cap_datetime",
    "point_in_area",
    "point_in_polygon",
    "select_recipients",
    "to_xml",
    "warning_colour",
    "warning_parameters",
]

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS: Final = "http://www.w3.org/2005/Atom"
_C = "{" + CAP_NS + "}"

Status = Literal["Actual", "Exercise", "System", "Test", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]
Scope = Literal["Public", "Restricted", "Private"]
Category = Literal[
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
]
ResponseType = Literal[
    "Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear", "None"
]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
WarningColour = Literal["blue", "yellow", "orange", "red"]

COLOUR_SEVERITY: Final[dict[str, Severity]] = {
    "blue": "Minor",
    "yellow": "Moderate",
    "orange": "Severe",
    "red": "Extreme",
}
COLOUR_LEVEL: Final[dict[str, str]] = {"blue": "IV", "yellow": "III", "orange": "II", "red": "I"}
COLOUR_PARAMETER: Final = "warningColor"
LEVEL_PARAMETER: Final = "warningLevel"

# CAP 1.2 identifier/sender: no spaces, commas or restricted XML characters (& <).
_CAP_TOKEN: Final = re.compile(r"^[^\s,<&]+$")
_CAP_DATETIME: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})([+-])(\d{2}):(\d{2})$"
)

LatLon = tuple[float, float]


class CapError(ValueError):
    """A CAP document or value that we refuse (malformed, invalid, or unsafe XML)."""


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _check_lat_lon(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or math.isnan(lat + lon):
        raise ValueError(f"not a WGS-84 point: {lat},{lon}")


class Circle(msgspec.Struct, frozen=True):
    lat: float
    lon: float
    radius_km: float

    def __post_init__(self) -> None:
        _check_lat_lon(self.lat, self.lon)
        if not (self.radius_km >= 0 and math.isfinite(self.radius_km)):
            raise ValueError("circle radius must be >= 0 km")


class Geocode(msgspec.Struct, frozen=True):
    value_name: str
    value: str


class Parameter(msgspec.Struct, frozen=True):
    value_name: str
    value: str


class Area(msgspec.Struct, frozen=True):
    """`polygons`: closed rings of (lat, lon), at least 4 points, first == last."""

    area_desc: str
    polygons: tuple[tuple[LatLon, ...], ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[Geocode, ...] = ()

    def __post_init__(self) -> None:
        for ring in self.polygons:
            if len(ring) < 4 or ring[0] != ring[-1]:
                raise ValueError("a CAP polygon needs >= 4 points with the first repeated last")
            for lat, lon in ring:
                _check_lat_lon(lat, lon)


class Info(msgspec.Struct, frozen=True):
    category: tuple[Category, ...]
    event: str
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    language: str = "zh-CN"
    response_type: tuple[ResponseType, ...] = ()
    audience: str | None = None
    event_codes: tuple[Geocode, ...] = ()
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: tuple[Parameter, ...] = ()
    areas: tuple[Area, ...] = ()

    def __post_init__(self) -> None:
        if not self.category:
            raise ValueError("info needs at least one category")
        for stamp in (self.effective, self.onset, self.expires):
            if stamp is not None and stamp.tzinfo is None:
                raise ValueError("CAP times must be timezone-aware")


class Reference(msgspec.Struct, frozen=True):
    """An earlier message: CAP writes it as "sender,identifier,sent"."""

    sender: str
    identifier: str
    sent: datetime


class Alert(msgspec.Struct, frozen=True):
    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    scope: Scope
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: tuple[str, ...] = ()
    note: str | None = None
    references: tuple[Reference, ...] = ()
    incidents: str | None = None
    infos: tuple[Info, ...] = ()

    def __post_init__(self) -> None:
        for name in ("identifier", "sender"):
            if not _CAP_TOKEN.match(getattr(self, name)):
                raise ValueError(f"CAP {name} must not contain spaces, commas, '<' or '&'")
        if self.sent.tzinfo is None:
            raise ValueError("CAP sent must be timezone-aware")
        if self.scope == "Restricted" and not self.restriction:
            raise ValueError("scope Restricted needs a restriction")
        if self.scope == "Private" and not self.addresses:
            raise ValueError("scope Private needs addresses")
        if self.msg_type in ("Update", "Cancel") and not self.references:
            raise ValueError(f"a {self.msg_type} must reference the message it changes")

    def key(self) -> tuple[str, str]:
        return (self.sender, self.identifier)


# --------------------------------------------------------------------------------------------
# Chinese warning colours
# --------------------------------------------------------------------------------------------


def warning_parameters(colour: WarningColour) -> tuple[Severity, tuple[Parameter, ...]]:
    """CAP severity and the two parameters for a Chinese warning colour (蓝/黄/橙/红)."""
    if colour not in COLOUR_SEVERITY:
        raise ValueError(f"unknown warning colour {colour!r}")
    return COLOUR_SEVERITY[colour], (
        Parameter(COLOUR_PARAMETER, colour),
        Parameter(LEVEL_PARAMETER, COLOUR_LEVEL[colour]),
    )


def warning_colour(info: Info) -> WarningColour | None:
    """The colour carried by `info`'s parameters, or None if it has none (or an unknown one)."""
    for parameter in info.parameters:
        if parameter.value_name == COLOUR_PARAMETER and parameter.value in COLOUR_SEVERITY:
            colour: WarningColour = parameter.value  # type: ignore[assignment]
            return colour
    return None


# --------------------------------------------------------------------------------------------
# Dates and numbers as CAP writes them
# --------------------------------------------------------------------------------------------


def format_cap_datetime(value: datetime) -> str:
    """CAP dateTime: seconds precision, explicit offset, UTC written "-00:00" as CAP 1.2 says."""
    if value.tzinfo is None:
        raise CapError("CAP times must be timezone-aware")
    value = value.replace(microsecond=0)
    offset = value.utcoffset() or timedelta(0)
    base = value.strftime("%Y-%m-%dT%H:%M:%S")
    if offset == timedelta(0):
        return base + "-00:00"
    total = int(offset.total_seconds()) // 60
    sign = "+" if total > 0 else "-"
    hours, minutes = divmod(abs(total), 60)
    return f"{base}{sign}{hours:02d}:{minutes:02d}"


def parse_cap_datetime(text: str) -> datetime:
    """Parse a CAP dateTime (offset required, no 'Z', no fractions)."""
    match = _CAP_DATETIME.match(text.strip())
    if match is None:
        raise CapError(f"not a CAP dateTime: {text!r}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    offset = timedelta(hours=int(match[8]), minutes=int(match[9]))
    if match[7] == "-":
        offset = -offset
    tz = UTC if offset == timedelta(0) else timezone(offset)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as exc:
        raise CapError(f"not a CAP dateTime: {text!r}") from exc


def _num(value: float) -> str:
    # Fixed-point (CAP readers expect decimal degrees, never "1e-05"), 7 places ≈ 1 cm.
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------------------------
# XML out
# --------------------------------------------------------------------------------------------


def _sub(parent: ET.Element, name: str, text: str | None) -> None:
    if text is not None:
        ET.SubElement(parent, _C + name).text = text


def _value_pairs(parent: ET.Element, name: str, pairs: Iterable[Geocode | Parameter]) -> None:
    for pair in pairs:
        element = ET.SubElement(parent, _C + name)
        _sub(element, "valueName", pair.value_name)
        _sub(element, "value", pair.value)


def _area_element(parent: ET.Element, area: Area) -> None:
    element = ET.SubElement(parent, _C + "area")
    _sub(element, "areaDesc", area.area_desc)
    for ring in area.polygons:
        _sub(element, "polygon", " ".join(f"{_num(lat)},{_num(lon)}" for lat, lon in ring))
    for circle in area.circles:
        _sub(element, "circle", f"{_num(circle.lat)},{_num(circle.lon)} {_num(circle.radius_km)}")
    _value_pairs(element, "geocode", area.geocodes)


def _info_element(parent: ET.Element, info: Info) -> None:
    element = ET.SubElement(parent, _C + "info")
    # Sequence order of the CAP 1.2 schema's <info>.
    _sub(element, "language", info.language)
    for category in info.category:
        _sub(element, "category", category)
    _sub(element, "event", info.event)
    for response in info.response_type:
        _sub(element, "responseType", response)
    _sub(element, "urgency", info.urgency)
    _sub(element, "severity", info.severity)
    _sub(element, "certainty", info.certainty)
    _sub(element, "audience", info.audience)
    _value_pairs(element, "eventCode", info.event_codes)
    for name in ("effective", "onset", "expires"):
        stamp: datetime | None = getattr(info, name)
        _sub(element, name, None if stamp is None else format_cap_datetime(stamp))
    _sub(element, "senderName", info.sender_name)
    _sub(element, "headline", info.headline)
    _sub(element, "description", info.description)
    _sub(element, "instruction", info.instruction)
    _sub(element, "web", info.web)
    _sub(element, "contact", info.contact)
    _value_pairs(element, "parameter", info.parameters)
    for area in info.areas:
        _area_element(element, area)


def _alert_element(alert: Alert) -> ET.Element:
    root = ET.Element(_C + "alert")
    # Sequence order of the CAP 1.2 schema's <alert>.
    _sub(root, "identifier", alert.identifier)
    _sub(root, "sender", alert.sender)
    _sub(root, "sent", format_cap_datetime(alert.sent))
    _sub(root, "status", alert.status)
    _sub(root, "msgType", alert.msg_type)
    _sub(root, "source", alert.source)
    _sub(root, "scope", alert.scope)
    _sub(root, "restriction", alert.restriction)
    _sub(root, "addresses", alert.addresses)
    for code in alert.codes:
        _sub(root, "code", code)
    _sub(root, "note", alert.note)
    if alert.references:
        _sub(
            root,
            "references",
            " ".join(
                f"{ref.sender},{ref.identifier},{format_cap_datetime(ref.sent)}"
                for ref in alert.references
            ),
        )
    _sub(root, "incidents", alert.incidents)
    for info in alert.infos:
        _info_element(root, info)
    return root


# What XML 1.0 cannot carry at all (its Char production): C0 controls but tab, newline and
# carriage return, surrogates, and U+FFFE/U+FFFF. ElementTree writes them anyway, and every
# reader of the feed would then refuse the whole document.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _check_chars(root: ET.Element) -> None:
    for element in root.iter():
        for value in (element.text, *element.attrib.values()):
            if value and (bad := _NOT_XML.search(value)):
                raise CapError(
                    f"{element.tag.rsplit('}', 1)[-1]}: character U+{ord(bad.group()):04X} "
                    "cannot be written in XML"
                )


def to_xml(alert: Alert) -> bytes:
    """The alert as a CAP 1.2 XML document (UTF-8, with declaration, default namespace).
    Raises `CapError` for text XML cannot carry, instead of writing a document no reader
    accepts."""
    root = _alert_element(alert)
    _check_chars(root)
    document: bytes = ET.tostring(
        root, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NS
    )
    return document


# --------------------------------------------------------------------------------------------
# XML in (refusing DTDs and entities, as defusedxml does)
# --------------------------------------------------------------------------------------------


def _refuse(*_args: object) -> None:
    raise CapError("DTDs and entity declarations are not accepted in CAP input")


def _safe_parse(data: bytes | str) -> ET.Element:
    raw = data.encode() if isinstance(data, str) else data
    # First pass with bare expat: any DOCTYPE (and so any entity, internal or external, and the
    # "billion laughs") is refused before ElementTree ever expands anything.
    checker = expat.ParserCreate()
    checker.StartDoctypeDeclHandler = _refuse
    checker.EntityDeclHandler = _refuse
    checker.UnparsedEntityDeclHandler = _refuse
    checker.ExternalEntityRefHandler = _refuse  # type: ignore[assignment]
    try:
        checker.Parse(raw, True)
        return ET.fromstring(raw)  # noqa: S314 - the expat pass above refused DTDs/entities
    except (expat.ExpatError, ET.ParseError) as exc:
        raise CapError(f"malformed XML: {exc}") from exc


def _text(element: ET.Element, name: str) -> str | None:
    child = element.find(_C + name)
    if child is None:
        return None
    return (child.text or "").strip()


def _texts(element: ET.Element, name: str) -> list[str]:
    return [(child.text or "").strip() for child in element.findall(_C + name)]


def _pairs(element: ET.Element, name: str) -> list[dict[str, str]]:
    return [
        {"value_name": _text(child, "valueName") or "", "value": _text(child, "value") or ""}
        for child in element.findall(_C + name)
    ]


def _point(text: str) -> LatLon:
    lat, _, lon = text.partition(",")
    try:
        return (float(lat), float(lon))
    except ValueError as exc:
        raise CapError(f"not a CAP point: {text!r}") from exc


def _area_dict(element: ET.Element) -> dict[str, Any]:
    circles = []
    for text in _texts(element, "circle"):
        centre, _, radius = text.partition(" ")
        lat, lon = _point(centre)
        try:
            circles.append({"lat": lat, "lon": lon, "radius_km": float(radius)})
        except ValueError as exc:
            raise CapError(f"not a CAP circle: {text!r}") from exc
    return {
        "area_desc": _text(element, "areaDesc"),
        "polygons": [[_point(p) for p in text.split()] for text in _texts(element, "polygon")],
        "circles": circles,
        "geocodes": _pairs(element, "geocode"),
    }


def _optional_time(element: ET.Element, name: str) -> datetime | None:
    text = _text(element, name)
    return None if text is None else parse_cap_datetime(text)


def _info_dict(element: ET.Element) -> dict[str, Any]:
    return {
        "language": _text(element, "language") or "en-US",  # the CAP default when absent
        "category": _texts(element, "category"),
        "event": _text(element, "event"),
        "response_type": _texts(element, "responseType"),
        "urgency": _text(element, "urgency"),
        "severity": _text(element, "severity"),
        "certainty": _text(element, "certainty"),
        "audience": _text(element, "audience"),
        "event_codes": _pairs(element, "eventCode"),
        "effective": _optional_time(element, "effective"),
        "onset": _optional_time(element, "onset"),
        "expires": _optional_time(element, "expires"),
        "sender_name": _text(element, "senderName"),
        "headline": _text(element, "headline"),
        "description": _text(element, "description"),
        "instruction": _text(element, "instruction"),
        "web": _text(element, "web"),
        "contact": _text(element, "contact"),
        "parameters": _pairs(element, "parameter"),
        "areas": [_area_dict(area) for area in element.findall(_C + "area")],
    }


def _references(text: str | None) -> list[dict[str, Any]]:
    refs = []
    for item in (text or "").split():
        parts = item.split(",")
        if len(parts) != 3:
            raise CapError(f"not a CAP reference (sender,identifier,sent): {item!r}")
        refs.append(
            {"sender": parts[0], "identifier": parts[1], "sent": parse_cap_datetime(parts[2])}
        )
    return refs


def from_xml(data: bytes | str) -> Alert:
    """Parse and validate a CAP 1.2 alert; raises `CapError` for anything we would not publish.

    DTDs and entities are refused outright (XXE, entity expansion). Unknown elements are
    ignored, as CAP consumers should.
    """
    root = _safe_parse(data)
    if root.tag != _C + "alert":
        raise CapError(f"not a CAP 1.2 alert: root element {root.tag!r}")
    sent = _text(root, "sent")
    raw = {
        "identifier": _text(root, "identifier"),
        "sender": _text(root, "sender"),
        "sent": None if sent is None else parse_cap_datetime(sent),
        "status": _text(root, "status"),
        "msg_type": _text(root, "msgType"),
        "source": _text(root, "source"),
        "scope": _text(root, "scope"),
        "restriction": _text(root, "restriction"),
        "addresses": _text(root, "addresses"),
        "codes": _texts(root, "code"),
        "note": _text(root, "note"),
        "references": _references(_text(root, "references")),
        "incidents": _text(root, "incidents"),
        "infos": [_info_dict(info) for info in root.findall(_C + "info")],
    }
    try:
        return msgspec.convert(raw, Alert)
    except (msgspec.ValidationError, ValueError) as exc:
        raise CapError(f"invalid CAP alert: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Feed of current alerts
# --------------------------------------------------------------------------------------------


def _expired(alert: Alert, now: datetime) -> bool:
    stamps = [info.expires for info in alert.infos]
    if not stamps or any(stamp is None for stamp in stamps):
        return False
    return all(stamp is not None and stamp <= now for stamp in stamps)


def current_alerts(alerts: Iterable[Alert], now: datetime) -> list[Alert]:
    """Actual alerts still in force at `now`, newest first.

    Drops: non-Actual messages (exercises, tests, drafts), Cancels, anything an Update or Cancel
    references (it was superseded), and alerts whose every info has expired.
    """
    alerts = list(alerts)
    superseded = {
        (ref.sender, ref.identifier)
        for alert in alerts
        if alert.msg_type in ("Update", "Cancel")
        for ref in alert.references
    }
    live = [
        alert
        for alert in alerts
        if alert.status == "Actual"
        and alert.msg_type in ("Alert", "Update")
        and alert.key() not in superseded
        and not _expired(alert, now)
    ]
    return sorted(live, key=lambda alert: alert.sent, reverse=True)


def _atom_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def atom_feed(
    alerts: Sequence[Alert],
    *,
    feed_id: str,
    title: str,
    self_url: str,
    alert_url: Callable[[Alert], str],
    now: datetime,
) -> bytes:
    """An Atom 1.0 feed of `alerts` (pass `current_alerts(...)`), one entry per alert.

    Each entry links to the full CAP document (`rel="alternate"`, `application/cap+xml`), which
    is how CAP aggregators ingest feeds.
    """
    # Unqualified names under an explicit xmlns: ElementTree's default_namespace option cannot
    # serialise the unqualified attributes Atom uses (rel, href).
    feed = ET.Element("feed", xmlns=ATOM_NS)
    ET.SubElement(feed, "id").text = feed_id
    ET.SubElement(feed, "title").text = title
    updated = max((alert.sent for alert in alerts), default=now)
    ET.SubElement(feed, "updated").text = _atom_time(updated)
    ET.SubElement(feed, "link", rel="self", href=self_url)
    for alert in alerts:
        entry = ET.SubElement(feed, "entry")
        url = alert_url(alert)
        ET.SubElement(entry, "id").text = url
        info = alert.infos[0] if alert.infos else None
        heading = (info.headline or info.event) if info else alert.identifier
        ET.SubElement(entry, "title").text = heading
        ET.SubElement(entry, "updated").text = _atom_time(alert.sent)
        author = ET.SubElement(entry, "author")
        ET.SubElement(author, "name").text = (
            info.sender_name if info and info.sender_name else alert.sender
        )
        if info is not None and info.description:
            ET.SubElement(entry, "summary").text = info.description
        if info is not None:
            colour = warning_colour(info)
            ET.SubElement(entry, "category", term=colour or info.severity)
        ET.SubElement(entry, "link", rel="alternate", type="application/cap+xml", href=url)
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


# --------------------------------------------------------------------------------------------
# Who is inside the area
# --------------------------------------------------------------------------------------------

_EARTH_RADIUS_KM: Final = 6371.0088


def point_in_polygon(lat: float, lon: float, ring: Sequence[LatLon]) -> bool:
    """Ray casting on a closed (lat, lon) ring; points on an edge count as inside.

    Planar in degrees, which is what CAP consumers do; fine for city-sized warning areas that do
    not cross the antimeridian (China never does).
    """
    inside = False
    n = len(ring)
    for i in range(n - 1):
        (y1, x1), (y2, x2) = ring[i], ring[i + 1]
        # On the segment? (cross product ~ 0 and within the bounding box)
        cross = (x2 - x1) * (lat - y1) - (y2 - y1) * (lon - x1)
        if (
            abs(cross) <= 1e-12
            and min(x1, x2) <= lon <= max(x1, x2)
            and min(y1, y2) <= lat <= max(y1, y2)
        ):
            return True
        if (y1 > lat) != (y2 > lat):
            x_at = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_at:
                inside = not inside
    return inside


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def point_in_area(lat: float, lon: float, area: Area) -> bool:
    """Inside any polygon or circle of the area (geocode-only areas match nothing here)."""
    if any(point_in_polygon(lat, lon, ring) for ring in area.polygons):
        return True
    return any(
        _haversine_km(lat, lon, circle.lat, circle.lon) <= circle.radius_km
        for circle in area.circles
    )


def alert_covers(alert: Alert, lat: float, lon: float) -> bool:
    """True if any area of any info of the alert contains the point."""
    return any(point_in_area(lat, lon, area) for info in alert.infos for area in info.areas)


K = TypeVar("K")


def select_recipients(alert: Alert, positions: Iterable[tuple[K, float, float]]) -> list[K]:
    """The keys of `(key, lat, lon)` positions inside the alert's areas, in input order.

    A bounding-box test skips most points before the exact test. For a whole city's devices the
    server should ask the spatial database instead (ST_Contains on the stored positions); this is
    for small candidate sets and for checking the database's answer in tests.
    """
    boxes: list[tuple[float, float, float, float]] = []
    for info in alert.infos:
        for area in info.areas:
            for ring in area.polygons:
                lats = [p[0] for p in ring]
                lons = [p[1] for p in ring]
                boxes.append((min(lats), max(lats), min(lons), max(lons)))
            for circle in area.circles:
                dlat = math.degrees(circle.radius_km / _EARTH_RADIUS_KM)
                coslat = max(math.cos(math.radians(circle.lat)), 1e-6)
                dlon = min(180.0, dlat / coslat)
                boxes.append(
                    (circle.lat - dlat, circle.lat + dlat, circle.lon - dlon, circle.lon + dlon)
                )
    chosen: list[K] = []
    for key, lat, lon in positions:
        if not any(a <= lat <= b and c <= lon <= d for a, b, c, d in boxes):
            continue
        if alert_covers(alert, lat, lon):
            chosen.append(key)
    return chosen
