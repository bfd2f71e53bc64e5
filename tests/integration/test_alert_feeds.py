"""Polling other authorities' CAP feeds safely: every fetch and every redirect hop passes
push/endpoints.py's SSRF rules (only the operator's test hosts exempt), a link too long to keep
or a document the database refuses spoils nothing else, no transaction stays open while the
network is read, and of several pollers racing, one polls each feed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.domain.alerts import feeds
from server.models import utcnow
from tests.conftest import Sessions
from tests.integration.test_alert_imports import foreign, other_authority

__all__ = ["other_authority"]  # the fixture, used by name

Authority = tuple[str, dict[str, bytes]]


def atom(*hrefs: str) -> bytes:
    """An Atom feed whose entries link these CAP documents."""
    entries = "".join(
        f"<entry><id>{n}</id><title>t</title><updated>2026-01-01T00:00:00Z</updated>"
        f'<link rel="alternate" type="application/cap+xml" href="{h}"/></entry>'
        for n, h in enumerate(hrefs)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>x</id><title>t</title><updated>2026-01-01T00:00:00Z</updated>"
        f"{entries}</feed>"
    ).encode()


def one_document_feed(
    client: TestClient[Any], auth: Sessions, authority: Authority, identifier: str
) -> uuid.UUID:
    """A feed of the other authority linking one CAP document, polled from now on."""
    base, files = authority
    files["/cap/1.xml"] = foreign(identifier)
    files["/feed.atom"] = atom("/cap/1.xml")
    url = f"{base}/feed.atom"
    r = client.post("/api/v1/alerts/feeds", headers=auth("admin"), json={"url": url})
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["id"])


def _refusal(fetch: feeds.Fetch, url: str) -> str:
    with pytest.raises(feeds.FetchError) as caught:
        asyncio.run(fetch(url, 1024))
    return str(caught.value)


def test_every_fetch_and_every_redirect_hop_is_checked(other_authority: Authority) -> None:
    base, files = other_authority
    files["/ok"] = b"fine"
    files["/hop"] = b"REDIRECT /ok"
    files["/private"] = b"REDIRECT https://127.0.0.2/x"  # not a listed host: not public
    files["/metadata"] = b"REDIRECT http://169.254.169.254/latest/meta-data"
    files["/loop"] = b"REDIRECT /loop"
    listed = feeds.guarded_fetch(("127.0.0.1",))
    assert asyncio.run(listed(f"{base}/ok", 1024)) == b"fine"
    assert asyncio.run(listed(f"{base}/hop", 1024)) == b"fine"  # followed by hand
    assert "private_address" in _refusal(listed, f"{base}/private")
    assert "not_https" in _refusal(listed, f"{base}/metadata")
    assert "redirects" in _refusal(listed, f"{base}/loop")
    files["/big"] = b"x" * 2048
    assert "larger than" in _refusal(listed, f"{base}/big")
    assert "HTTP 404" in _refusal(listed, f"{base}/nothing")
    unlisted = feeds.guarded_fetch()
    assert "not_https" in _refusal(unlisted, f"{base}/ok")
    assert "private_address" in _refusal(unlisted, "https://localhost:9/x")
    assert "private_address" in _refusal(unlisted, "https://[::ffff:10.0.0.1]/x")


def test_a_feed_url_must_be_https(client: TestClient[Any], auth: Sessions) -> None:
    r = client.post(
        "/api/v1/alerts/feeds", headers=auth("admin"), json={"url": "http://feeds.example/a"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "not_https"


def test_long_private_or_broken_links_spoil_nothing_else(
    client: TestClient[Any], auth: Sessions, other_authority: Authority
) -> None:
    base, files = other_authority
    long_path = "/cap/" + "x" * 520
    files["/cap/good.xml"] = foreign("PD-FEEDS-1")
    files[long_path] = foreign("PD-FEEDS-2")  # a valid document behind a link too long to keep
    files["/feed.atom"] = atom(
        "/cap/good.xml", long_path, "https://10.0.0.1/cap.xml", "/cap/missing.xml"
    )
    admin = auth("admin")
    feed = client.post("/api/v1/alerts/feeds", headers=admin, json={"url": f"{base}/feed.atom"})
    assert feed.status_code == 201, feed.text
    r = client.post(f"/api/v1/alerts/feeds/{feed.json()['id']}/poll", headers=admin)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["imported"] == 1, got
    reasons = " | ".join(got["refused"])
    assert len(got["refused"]) == 3, reasons
    assert "longer than 500" in reasons and "private_address" in reasons and "404" in reasons
    (listed,) = client.get("/api/v1/alerts/feeds", headers=admin).json()
    assert listed["imported"] == 1 and "private_address" in listed["last_error"]


def test_no_transaction_is_open_while_the_network_is_read(
    client: TestClient[Any],
    auth: Sessions,
    settings: Settings,
    database_url: str,
    backend: str,
    other_authority: Authority,
) -> None:
    fid = one_document_feed(client, auth, other_authority, "PD-IDLE-1")
    open_while_fetching: list[int] = []

    async def run() -> None:
        probe = make_engine(database_url)
        engine = make_engine(database_url)
        real = feeds.guarded_fetch(settings.alert_feed_test_hosts)

        async def fetch(url: str, max_bytes: int) -> bytes:
            if backend == "postgis":  # any connection idle inside a transaction?
                async with probe.connect() as conn:
                    n = await conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND state LIKE 'idle in transaction%'"
                        )
                    )
                open_while_fetching.append(int(n or 0))
            else:  # SQLite: this writer (BEGIN IMMEDIATE) would wait for a poll holding one
                async with probe.begin() as conn:
                    await conn.execute(text("SELECT 1"))
                open_while_fetching.append(0)
            return await real(url, max_bytes)

        try:
            maker = make_sessionmaker(engine)
            result = await feeds.poll_feed(maker, None, settings, fid, fetch)
            assert result is not None and result.imported == 1
        finally:
            await probe.dispose()
            await engine.dispose()

    asyncio.run(run())
    assert open_while_fetching == [0, 0]  # the feed, then its document


def test_racing_pollers_poll_each_feed_once(
    client: TestClient[Any],
    auth: Sessions,
    settings: Settings,
    database_url: str,
    backend: str,
    other_authority: Authority,
) -> None:
    """Two pollers find the feed due at the same moment; a third transaction holds the feed's
    row meanwhile, so both read it before either claims. Once it lets go, one claims it and
    the other finds it claimed (PostgreSQL: the conditional UPDATE; SQLite serialises)."""
    fid = one_document_feed(client, auth, other_authority, "PD-RACE-1")
    base = other_authority[0]

    async def race() -> list[str | None]:
        engines = [make_engine(database_url) for _ in range(3)]
        due_before = utcnow() - timedelta(seconds=settings.alert_feed_poll_s / 2)
        try:
            async with engines[0].begin() as holder:
                if backend == "postgis":
                    await holder.execute(
                        text("SELECT id FROM alert_feeds WHERE id = :id FOR UPDATE"), {"id": fid}
                    )
                claims = [
                    asyncio.create_task(feeds.claim(make_sessionmaker(e), None, fid, due_before))
                    for e in engines[1:]
                ]
                await asyncio.sleep(0.5)  # both read the feed, then wait on the row
            return list(await asyncio.gather(*claims))
        finally:
            for engine in engines:
                await engine.dispose()

    claimed = asyncio.run(race())
    assert sorted(claimed, key=bool) == [None, f"{base}/feed.atom"]
    # Claimed just now: not due for the background poller.
    assert asyncio.run(_poll_all_once(database_url, settings)) == []


async def _poll_all_once(database_url: str, settings: Settings) -> list[Any]:
    engine = make_engine(database_url)
    try:
        return await feeds.poll_all(make_sessionmaker(engine), settings)
    finally:
        await engine.dispose()
