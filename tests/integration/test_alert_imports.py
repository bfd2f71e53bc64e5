"""Warnings from other authorities (issue 11): upload or a polled feed; checked (size, no DTD
or entities, the OASIS schema), sender kept, shown like our own. Also: signing with a
configured key, and the public routes' per-address rate limit."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from signxml.verifier import XMLVerifier

from push import cap
from server.app import create_app
from server.config import Settings
from server.domain.alerts.public import RateLimiter
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.test_alerts import PUBLIC, draft, public_ids, publish, valid_cap

CAP_XML = {"Content-Type": "application/cap+xml"}
SENDER = "pudong.weather@example.org"


def foreign(
    identifier: str,
    msg_type: str = "Alert",
    refs: tuple[cap.Reference, ...] = (),
    at: tuple[float, float] = f.IN_GRID_A,
    sent: datetime | None = None,
) -> bytes:
    """Another authority's CAP document: an orange heat warning around `at`, sent `sent` (now)."""
    lon, lat = at
    d = 0.003
    ring = ((lat - d, lon - d), (lat - d, lon + d), (lat + d, lon + d), (lat - d, lon - d))
    sent = sent or datetime.now(UTC).replace(microsecond=0)
    severity, params = cap.warning_parameters("orange")
    info = cap.Info(
        category=("Met",),
        event="高温",
        urgency="Expected",
        severity=severity,
        certainty="Likely",
        language="zh-CN",
        expires=sent + timedelta(hours=12),
        sender_name="浦东新区气象局",
        headline="高温橙色预警",
        description="最高气温将达37℃以上。",
        parameters=params,
        areas=(cap.Area(area_desc="浦东与黄浦交界", polygons=(ring,)),),
    )
    return cap.to_xml(
        cap.Alert(
            identifier=identifier,
            sender=SENDER,
            sent=sent,
            status="Actual",
            msg_type=msg_type,  # type: ignore[arg-type]
            scope="Public",
            references=refs,
            infos=(info,),
        )
    )


def upload(client: TestClient[Any], auth: Sessions, body: bytes) -> Any:
    return client.post("/api/v1/alerts/import", headers={**auth("admin"), **CAP_XML}, content=body)


def test_an_uploaded_alert_keeps_its_sender_and_is_shown_like_our_own(
    client: TestClient[Any], auth: Sessions
) -> None:
    doc = foreign("PD-2026-0001")
    r = upload(client, auth, doc)
    assert r.status_code == 201, r.text
    a = r.json()["alert"]
    assert a["sender"] == SENDER and a["identifier"] == "PD-2026-0001" and a["imported"]
    assert a["color"] == "orange" and a["level"] == "II"
    lon, lat = f.IN_GRID_A
    assert a["id"] in public_ids(client, point=f"{lon},{lat}")
    served = client.get(f"{PUBLIC}/cap/{a['id']}")
    assert served.content == doc  # as its authority sent it
    valid_cap(served.content)
    again = upload(client, auth, doc)
    assert again.status_code == 200 and again.json()["alert"]["id"] == a["id"]
    # Its Update, by reference to its own identifier, joins the chain and supersedes it.
    ref = cap.Reference(SENDER, "PD-2026-0001", cap.from_xml(doc).sent)
    upd = upload(client, auth, foreign("PD-2026-0002", "Update", (ref,))).json()["alert"]
    assert upd["chain_id"] == a["id"] and upd["references"][0]["id"] == a["id"]
    ids = public_ids(client)
    assert upd["id"] in ids and a["id"] not in ids
    # We cannot update another authority's warning.
    ours = client.post(
        "/api/v1/alerts",
        headers=auth("dispatcher"),
        json={"msg_type": "Cancel", "references": [upd["id"]]},
    )
    assert ours.status_code == 422 and ours.json()["code"] == "foreign_sender"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
            b'"&lol;&lol;&lol;&lol;">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
            b"&lol2;</alert>",
            "invalid_cap",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>',
            "invalid_cap",
        ),
        (
            foreign("PD-big").replace(b"</alert>", b"<!--" + b"x" * 600_000 + b"--></alert>"),
            "invalid_cap",
        ),
        (
            foreign("PD-bad")
            .replace(b"<sender>", b"<senderX>")
            .replace(b"</sender>", b"</senderX>"),
            "invalid_cap",
        ),
        (foreign("PD-far", at=(116.4, 39.9)), "outside"),  # Beijing: none of our areas
        (foreign("PD-" + "9" * 300), "invalid_cap"),  # longer than its column (PostgreSQL: 500)
    ],
    ids=["entities", "external", "oversize", "schema", "outside", "long-identifier"],
)
def test_hostile_or_unusable_documents_are_refused(
    client: TestClient[Any], auth: Sessions, body: bytes, code: str
) -> None:
    r = upload(client, auth, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


def test_import_needs_cap_xml_and_an_administrator(client: TestClient[Any], auth: Sessions) -> None:
    """An import is public at once, without our two-person approval: administrators only (a
    dispatcher could otherwise publish a red warning under any sender alone)."""
    doc = foreign("PD-2026-0100")
    r = client.post("/api/v1/alerts/import", headers=auth("admin"), json={"x": 1})
    assert r.status_code == 415
    for who in ("dispatcher", "chief", "fire1"):
        r = client.post("/api/v1/alerts/import", headers={**auth(who), **CAP_XML}, content=doc)
        assert r.status_code == 403, (who, r.text)
    assert upload(client, auth, doc).status_code == 201
    assert client.post("/api/v1/alerts/import", headers=CAP_XML, content=doc).status_code == 401


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        if body.startswith(b"REDIRECT "):  # a redirect to the rest of the line
            self.send_response(302)
            self.send_header("Location", body.removeprefix(b"REDIRECT ").decode())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_authority() -> Iterator[tuple[str, dict[str, bytes]]]:
    """Another authority's web server on loopback, serving whatever the test puts in it."""
    files: dict[str, bytes] = {}
    handler = type("Files", (_Files,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def test_a_polled_feed_imports_what_is_new(
    client: TestClient[Any], auth: Sessions, other_authority: tuple[str, dict[str, bytes]]
) -> None:
    base, files = other_authority
    files["/cap/1.xml"] = foreign("PD-FEED-1")
    files["/cap/2.xml"] = b"<alert>not CAP</alert>"
    files["/feed.atom"] = (
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        b"<id>x</id><title>t</title><updated>2026-01-01T00:00:00Z</updated>"
        b"<entry><id>1</id><title>a</title><updated>2026-01-01T00:00:00Z</updated>"
        b'<link rel="alternate" type="application/cap+xml" href="/cap/1.xml"/></entry>'
        b"<entry><id>2</id><title>b</title><updated>2026-01-01T00:00:00Z</updated>"
        b'<link rel="alternate" type="application/cap+xml" href="/cap/2.xml"/></entry>'
        b"</feed>"
    )
    admin = auth("admin")
    feed = client.post("/api/v1/alerts/feeds", headers=admin, json={"url": f"{base}/feed.atom"})
    assert feed.status_code == 201, feed.text
    fid = feed.json()["id"]
    assert (
        client.post(f"/api/v1/alerts/feeds/{fid}/poll", headers=auth("dispatcher")).status_code
        == 403
    )
    first = client.post(f"/api/v1/alerts/feeds/{fid}/poll", headers=admin).json()
    assert first["imported"] == 1 and len(first["refused"]) == 1 and "2.xml" in first["refused"][0]
    second = client.post(f"/api/v1/alerts/feeds/{fid}/poll", headers=admin).json()
    assert second["imported"] == 0 and second["known"] >= 1
    listed = client.get("/api/v1/alerts", headers=admin, params={"limit": 500}).json()["items"]
    mine = [a for a in listed if a["source_url"] == f"{base}/cap/1.xml"]
    assert len(mine) == 1 and mine[0]["sender"] == SENDER


def test_public_routes_are_rate_limited_per_address(client: TestClient[Any]) -> None:
    state = client.app.state
    saved = state.get("public_limiter")
    state.public_limiter = RateLimiter(3)
    try:
        for _ in range(3):
            assert client.get(f"{PUBLIC}/alerts").status_code == 200
        # A forwarded address is believed only from a listed proxy: it does not dodge the limit.
        r = client.get(f"{PUBLIC}/alerts.atom", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 429
        assert r.headers["content-type"].startswith("application/problem+json")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        state.public_limiter = saved


def test_rate_limiter_refills_and_keeps_addresses_apart() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second
    assert all(limiter.take("a") == 0 for _ in range(60))
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0
    now[0] += 1.0
    assert limiter.take("a") == 0


def test_documents_are_signed_when_a_key_is_configured(
    settings: Settings, auth: Sessions, tmp_path: Path
) -> None:
    from tests.unit.alerts.test_capdoc import _key_and_cert

    key, cert = _key_and_cert()
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "cert.pem").write_bytes(cert)
    signing = dataclasses.replace(
        settings, cap_signing_key=tmp_path / "key.pem", cap_signing_cert=tmp_path / "cert.pem"
    )
    with TestClient(app=create_app(signing)) as other:
        d = auth("dispatcher")  # the same database: the shared app's sessions are valid here
        a = publish(other, d, draft(other, d)["id"])
        doc = other.get(f"{PUBLIC}/cap/{a['id']}").content
    valid_cap(doc)
    assert XMLVerifier().verify(doc, x509_cert=cert.decode()).signed_xml is not None
