"""Polling other authorities' CAP feeds: Atom or RSS whose entries link CAP documents (as ours
does), or a URL that answers one CAP document.

Each poll reads the feed (at most `FEED_MAX_BYTES`, defusedxml: no DTD, entities or external
references), takes at most `MAX_ENTRIES` links, skips those it imported before (by URL), fetches
the rest and imports each through `services.import_document` (size, schema, sender kept). A
document refused is named in the result and does not stop the others. With background jobs on,
every enabled feed is polled every `alert_feed_poll_s` seconds (`alert_feeds_lifespan`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urljoin

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from push.cap import CAP_NS
from schemas import alerts as s
from server import audit
from server.auth.principal import Principal
from server.config import Settings
from server.domain.alerts import services as svc
from server.errors import DomainError
from server.models import Alert, AlertFeed, utcnow

log = logging.getLogger("liandong.alerts")
FEED_MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 100
TIMEOUT_S = 20.0
ATOM = "{http://www.w3.org/2005/Atom}"

Fetch = Callable[[str, int], Awaitable[bytes]]


class FetchError(Exception):
    """A URL that did not answer a usable document."""


async def http_fetch(url: str, max_bytes: int) -> bytes:
    """GET `url` (http/https, a few redirects), at most `max_bytes` of body; FetchError when
    that fails."""
    import httpx  # only when a feed is polled: importing it costs the server's start-up ~0.3 s

    if not url.startswith(("http://", "https://")):
        raise FetchError(f"not an http(s) URL: {url}")
    accept = {"Accept": "application/atom+xml, application/cap+xml, application/xml"}
    try:
        async with (
            httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=True, max_redirects=3) as c,
            c.stream("GET", url, headers=accept) as r,
        ):
            if r.status_code != 200:
                raise FetchError(f"{url}: HTTP {r.status_code}")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{url}: larger than {max_bytes} bytes")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {exc}") from exc


def cap_links(data: bytes, base: str) -> list[str] | None:
    """The CAP document links of an Atom or RSS feed (absolute), or None when `data` is itself
    a CAP alert. Raises FetchError for anything else."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, SafeET.ParseError) as exc:
        raise FetchError(f"not a feed: {exc}") from exc
    if root.tag == "{" + CAP_NS + "}alert":
        return None
    links: list[str] = []
    if root.tag == ATOM + "feed":
        for entry in root.findall(ATOM + "entry"):
            chosen = None
            for link in entry.findall(ATOM + "link"):
                href = link.get("href")
                kind = (link.get("type") or "").lower()
                if href and ("cap" in kind or kind.endswith("xml")):
                    chosen = href
                    break
                if href and chosen is None and link.get("rel", "alternate") == "alternate":
                    chosen = href
            if chosen:
                links.append(urljoin(base, chosen))
    elif root.tag == "rss":
        for item in root.iter("item"):
            link_el = item.find("link")
            if link_el is not None and link_el.text:
                links.append(urljoin(base, link_el.text.strip()))
    else:
        raise FetchError(f"not an Atom or RSS feed, nor a CAP alert: {root.tag}")
    return list(dict.fromkeys(links))[:MAX_ENTRIES]


async def poll_feed(
    session: AsyncSession,
    p: Principal | None,
    settings: Settings,
    feed: AlertFeed,
    fetch: Fetch = http_fetch,
) -> s.PollResult:
    """Poll one feed now; import what is new. The feed's last result is stored on it."""
    result = s.PollResult(feed_id=feed.id, imported=0, known=0, refused=[])
    feed.last_polled_at = utcnow()
    try:
        data = await fetch(feed.url, FEED_MAX_BYTES)
        links = cap_links(data, feed.url)
    except FetchError as exc:
        feed.last_error = str(exc)[:2000]
        await session.flush()
        return result
    documents: list[tuple[str, bytes | None]]
    if links is None:
        documents = [(feed.url, data)]
    else:
        seen = set(
            (
                await session.execute(select(Alert.source_url).where(Alert.source_url.in_(links)))
            ).scalars()
        )
        result.known = len(seen)
        documents = [(link, None) for link in links if link not in seen]
    for url, body in documents:
        try:
            doc = body if body is not None else await fetch(url, settings.cap_import_max_bytes)
            async with session.begin_nested():
                _row, fresh = await svc.import_document(session, p, settings, doc, url)
        except (FetchError, DomainError) as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            result.refused.append(f"{url}: {detail}"[:500])
            continue
        if fresh:
            result.imported += 1
        else:
            result.known += 1
    feed.imported += result.imported
    feed.last_error = "; ".join(result.refused)[:2000] or None
    await session.flush()
    audit.record(
        session,
        p,
        "poll_feed",
        "alert_feed",
        feed.id,
        imported=result.imported,
        known=result.known,
        refused=len(result.refused),
    )
    return result


async def poll_all(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, fetch: Fetch = http_fetch
) -> list[s.PollResult]:
    """Poll every enabled feed, each in its own transaction."""
    async with sessionmaker() as session:
        ids = list(
            (
                await session.execute(
                    select(AlertFeed.id).where(
                        AlertFeed.enabled.is_(True), AlertFeed.deleted_at.is_(None)
                    )
                )
            ).scalars()
        )
    out = []
    for ident in ids:
        async with sessionmaker() as session, session.begin():
            feed = await session.get(AlertFeed, ident)
            if feed is not None:
                out.append(await poll_feed(session, None, settings, feed, fetch))
    return out


@asynccontextmanager
async def alert_feeds_lifespan(app: Litestar) -> AsyncIterator[None]:
    """With background jobs on, poll the configured feeds every `alert_feed_poll_s`."""
    settings: Settings = app.state.settings
    if not settings.background_jobs:
        yield
        return

    async def loop() -> None:
        while True:
            try:
                await poll_all(app.state.sessionmaker, settings)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("polling CAP feeds failed: %s", exc)
            await asyncio.sleep(settings.alert_feed_poll_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
