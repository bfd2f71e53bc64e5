"""Polling other authorities' CAP feeds: Atom or RSS whose entries link CAP documents (as ours
does), or a URL that answers one CAP document.

Each poll first **claims** the feed (a conditional UPDATE of its `last_polled_at`: of several
server processes polling at once, one polls it), then reads the feed (at most `FEED_MAX_BYTES`,
defusedxml: no DTD, entities or external references), takes at most `MAX_ENTRIES` links, skips
those it imported before (by URL) and fetches the rest, all **with no database transaction
open**; then it imports the documents in one short transaction through
`services.import_document` (size, schema, sender kept), each in a savepoint: a document refused,
or one the database refuses, is named in the result and does not stop the others.

**Every fetch is guarded against SSRF** (`guarded_fetch`), with push/endpoints.py's rules:
https only, every address the host resolves to public (checked before connecting and again by
the connector's `GuardedResolver`, so DNS rebinding is refused too), redirects followed by hand,
at most `MAX_REDIRECTS`, each hop checked the same way. Only the hosts an operator lists for
tests (`alert_feed_test_hosts`, `LIANDONG_ALERT_FEED_TEST_HOSTS`) are exempt. With background
jobs on, every enabled feed is polled every `alert_feed_poll_s` seconds (`alert_feeds_lifespan`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from urllib.parse import urljoin

import aiohttp
import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from litestar import Litestar
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from i18n import N_
from push.cap import CAP_NS
from push.endpoints import EndpointRefused, GuardedResolver, check_endpoint
from schemas import alerts as s
from server import audit, crud
from server.auth.principal import Principal
from server.config import Settings
from server.domain.alerts import services as svc
from server.errors import Conflict, DomainError, InvalidInput
from server.models import Alert, AlertFeed, utcnow
from server.tasks import running

log = logging.getLogger("liandong.alerts")
FEED_MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 100
MAX_REDIRECTS = 3
MAX_LINK_CHARS = 500  # Alert.source_url holds this many
TIMEOUT_S = 20.0
ATOM = "{http://www.w3.org/2005/Atom}"
ACCEPT = {"Accept": "application/atom+xml, application/cap+xml, application/xml"}
REDIRECTS = frozenset({301, 302, 303, 307, 308})

Fetch = Callable[[str, int], Awaitable[bytes]]


class FetchError(Exception):
    """A URL that did not answer a usable document."""


async def _check(url: str, allow: Collection[str]) -> None:
    """push/endpoints.py's SSRF rules for one URL (the name resolved off the event loop)."""
    try:
        await asyncio.to_thread(check_endpoint, url, allow_hosts=allow)
    except EndpointRefused as exc:
        raise FetchError(f"{url}: refused ({exc.reason}): {exc.detail}") from exc


def guarded_fetch(allow_hosts: Collection[str] = ()) -> Fetch:
    """A fetch that GETs a URL (https; only `allow_hosts` over http or on non-public
    addresses), follows at most `MAX_REDIRECTS` redirects by hand, checking each hop, and reads
    at most `max_bytes` of body; FetchError when any of that fails."""
    allow = frozenset(h.lower() for h in allow_hosts)

    async def fetch(url: str, max_bytes: int) -> bytes:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow), limit=4)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False
        ) as http:
            for _hop in range(MAX_REDIRECTS + 1):
                await _check(url, allow)
                try:
                    async with http.get(url, headers=ACCEPT, allow_redirects=False) as r:
                        if r.status in REDIRECTS:
                            location = r.headers.get("Location")
                            if not location:
                                raise FetchError(f"{url}: HTTP {r.status} without Location")
                            url = urljoin(url, location)
                            continue
                        if r.status != 200:
                            raise FetchError(f"{url}: HTTP {r.status}")
                        body = bytearray()
                        async for chunk in r.content.iter_chunked(64 * 1024):
                            body += chunk
                            if len(body) > max_bytes:
                                raise FetchError(f"{url}: larger than {max_bytes} bytes")
                        return bytes(body)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise FetchError(f"{url}: {exc}") from exc
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")

    return fetch


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


async def claim(
    maker: async_sessionmaker[AsyncSession],
    p: Principal | None,
    feed_id: uuid.UUID,
    due_before: datetime | None,
) -> str | None:
    """Claim the feed for this poll: its URL, or None when it is not due or another process
    claimed it first. With `p` (a poll asked for now): 404 unless `p` reads it, 422 when it is
    disabled, 409 when another poll claimed it at the same moment."""
    async with maker() as session, session.begin():
        if p is not None:
            feed = await crud.get_visible(session, p, AlertFeed, feed_id)
            if not feed.enabled:
                raise InvalidInput(N_("this feed is disabled"), code="disabled")
        else:
            found = await session.get(AlertFeed, feed_id)
            if found is None or found.deleted_at is not None or not found.enabled:
                return None
            feed = found
        seen = feed.last_polled_at
        if due_before is not None and seen is not None and seen > due_before:
            return None
        claimed = await session.execute(
            update(AlertFeed)
            .where(
                AlertFeed.id == feed_id,
                AlertFeed.last_polled_at.is_(None)
                if seen is None
                else AlertFeed.last_polled_at == seen,
            )
            .values(last_polled_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            if p is not None:
                raise Conflict(N_("this feed is being polled right now"), code="polling")
            return None
        return feed.url


async def _fetch_all(
    maker: async_sessionmaker[AsyncSession], url: str, fetch: Fetch, max_bytes: int
) -> tuple[list[tuple[str, bytes]], int, list[str]]:
    """The feed's new documents (url, body), how many it links that we hold, what was refused.
    No transaction stays open while the network is read."""
    try:
        data = await fetch(url, FEED_MAX_BYTES)
        links = cap_links(data, url)
    except FetchError as exc:
        return [], 0, [str(exc)]
    if links is None:
        return [(url, data)], 0, []
    refused = [
        f"{link[:100]}...: link longer than {MAX_LINK_CHARS} characters"
        for link in links
        if len(link) > MAX_LINK_CHARS
    ]
    links = [link for link in links if len(link) <= MAX_LINK_CHARS]
    async with maker() as session:
        seen = set(
            (
                await session.execute(select(Alert.source_url).where(Alert.source_url.in_(links)))
            ).scalars()
        )
    documents = []
    for link in links:
        if link in seen:
            continue
        try:
            documents.append((link, await fetch(link, max_bytes)))
        except FetchError as exc:
            refused.append(str(exc))
    return documents, len(seen), refused


async def poll_feed(
    maker: async_sessionmaker[AsyncSession],
    p: Principal | None,
    settings: Settings,
    feed_id: uuid.UUID,
    fetch: Fetch | None = None,
    due_before: datetime | None = None,
) -> s.PollResult | None:
    """Poll one feed now (`p`: an administrator asked; None: the background poller, which
    polls it only if it was last polled before `due_before`); import what is new. The feed's
    last result is stored on it. None when it was not claimed."""
    url = await claim(maker, p, feed_id, due_before)
    if url is None:
        return None
    fetch = fetch or guarded_fetch(settings.alert_feed_test_hosts)
    documents, known, refused = await _fetch_all(maker, url, fetch, settings.cap_import_max_bytes)
    result = s.PollResult(feed_id=feed_id, imported=0, known=known, refused=[])
    result.refused.extend(r[:500] for r in refused)
    async with maker() as session, session.begin():
        for link, doc in documents:
            try:
                async with session.begin_nested():
                    _row, fresh = await svc.import_document(session, p, settings, doc, link)
            except DomainError as exc:
                result.refused.append(f"{link}: {exc.detail or exc}"[:500])
                continue
            except SQLAlchemyError as exc:  # this document only: its savepoint rolled back
                log.warning("importing %s from feed %s failed: %s", link, feed_id, exc)
                result.refused.append(f"{link}: not stored ({type(exc).__name__})"[:500])
                continue
            if fresh:
                result.imported += 1
            else:
                result.known += 1
        feed = await session.get(AlertFeed, feed_id)
        if feed is not None:
            feed.imported += result.imported
            feed.last_error = "; ".join(result.refused)[:2000] or None
        audit.record(
            session,
            p,
            "poll_feed",
            "alert_feed",
            feed_id,
            imported=result.imported,
            known=result.known,
            refused=len(result.refused),
        )
    return result


async def poll_all(
    maker: async_sessionmaker[AsyncSession], settings: Settings, fetch: Fetch | None = None
) -> list[s.PollResult]:
    """Poll every enabled feed that is due (last polled `alert_feed_poll_s` / 2 ago or more),
    each claimed first: of the server processes polling, one polls each feed."""
    now = utcnow()
    due_before = now - timedelta(seconds=settings.alert_feed_poll_s / 2)
    async with maker() as session:
        ids = list(
            (
                await session.execute(
                    select(AlertFeed.id).where(
                        AlertFeed.enabled.is_(True),
                        AlertFeed.deleted_at.is_(None),
                        or_(
                            AlertFeed.last_polled_at.is_(None),
                            AlertFeed.last_polled_at <= due_before,
                        ),
                    )
                )
            ).scalars()
        )
    out = []
    for ident in ids:
        result = await poll_feed(maker, None, settings, ident, fetch, due_before)
        if result is not None:
            out.append(result)
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

    async with running(loop()):
        yield
