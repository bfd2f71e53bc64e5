"""The public warning routes under `/api/v1/public/` (no sign-in; the residents' routes beside them
are server/domain/residents/controllers.py).

| route | answers |
|---|---|
| `GET /api/v1/public/alerts[?point=lon,lat]` | current Actual warnings (JSON), covering the point |
| `GET /api/v1/public/alerts.geojson[?point=lon,lat]` | the same as a GeoJSON FeatureCollection |
| `GET /api/v1/public/alerts.atom` | Atom feed, one entry per warning linking its CAP document |
| `GET /api/v1/public/cap/{id}` | one published Actual message as CAP 1.2 XML, forever |

Polling costs almost nothing: each answer carries a strong `ETag` computed from one aggregate
query (how many public messages there are, the latest change, how many have expired or left
the feed's retention), so a poller's `If-None-Match` is answered 304 before anything is built;
built answers are kept per process by that tag. A CAP document never changes, so its tag is its
hash and it may be cached for a year. Every route counts against a per-address token bucket
(`public_rate_per_min`, per process; 429 with Retry-After), the address decided by the same
rule as login throttling (`server.auth.address`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from push import cap
from schemas import alerts as s
from schemas.common import Feature, FeatureCollection, Output, Problem
from server import geo
from server.auth.address import client_address
from server.config import Settings
from server.domain.alerts import services as svc
from server.errors import TooManyRequests
from server.models import Alert, utcnow

CAP_XML = "application/cap+xml"
ATOM = "application/atom+xml"
GEOJSON = "application/geo+json"
PROBLEM = "application/problem+json"


class PublicAlerts(Output):
    """Current public warnings."""

    items: list[s.PublicAlert]


class RateLimiter:
    """A token bucket per client address: `per_minute` requests, refilled evenly (per
    process). Addresses whose bucket is full again are forgotten, so the table stays small."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, address: str) -> float:
        """Spend a token; 0 when allowed, else the seconds until one is there."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(address, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[address] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[address] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > 10_000:
                self._forget_full(now)
        return wait

    def _forget_full(self, now: float) -> None:
        full = [
            a for a, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.capacity
        ]
        for a in full:
            del self._buckets[a]


def limiter_of(request: Request[Any, Any, Any]) -> RateLimiter:
    """This app's limiter (made on first use from its settings)."""
    state = request.app.state
    limiter: RateLimiter | None = state.get("public_limiter")
    if limiter is None:
        limiter = RateLimiter(state.settings.public_rate_per_min)
        state.public_limiter = limiter
    return limiter


def throttle(request: Request[Any, Any, Any]) -> None:
    wait = limiter_of(request).take(client_address(request))
    if wait > 0:
        raise TooManyRequests(
            N_("too many requests from this address; poll less often"),
            retry_after=max(1, math.ceil(wait)),
        )


class Built:
    """Answers built per ETag, the most recent `size` of them (per app and process)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, tag: str, body: bytes) -> None:
        """Keep an answer."""
        with self._lock:
            self._items[tag] = body
            self._items.move_to_end(tag)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, tag: str) -> bytes | None:
        """An answer kept for this tag."""
        with self._lock:
            return self._items.get(tag)


def _built(request: Request[Any, Any, Any]) -> Built:
    state = request.app.state
    built: Built | None = state.get("public_built")
    if built is None:
        built = state.public_built = Built()
    return built


async def fingerprint(session: AsyncSession, now: datetime, retention: timedelta) -> str:
    """What the public answers depend on, in one aggregate over the public messages: their
    number and latest change (a new message, a supersession), and how many have expired or
    left the feed since (time passing changes the answers too)."""
    since = now - retention
    public = (
        Alert.state == s.AlertState.PUBLISHED.value,
        Alert.status == s.AlertStatus.ACTUAL.value,
        Alert.deleted_at.is_(None),
    )
    row = (
        await session.execute(
            select(
                func.count(),
                func.max(Alert.updated_at),
                func.sum(case((Alert.expires <= now, 1), else_=0)),
                func.sum(case((Alert.expires <= since, 1), else_=0)),
                func.sum(case((Alert.published_at <= since, 1), else_=0)),
            ).where(*public)
        )
    ).one()
    return "|".join(str(v) for v in row)


def matches(request: Request[Any, Any, Any], tag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = {t.strip().removeprefix("W/") for t in header.split(",")}
    return tag in wanted


def cached(
    request: Request[Any, Any, Any], tag: str, media_type: str, body: bytes | None, max_age: int
) -> Response[Any]:
    headers = {"ETag": tag, "Cache-Control": f"public, max-age={max_age}"}
    if body is None:
        return Response(content=b"", status_code=304, headers=headers, media_type=media_type)
    return Response(content=body, headers=headers, media_type=media_type)


async def _answer(
    request: Request[Any, Any, Any],
    session: AsyncSession,
    settings: Settings,
    media_type: str,
    build: Callable[[datetime], Awaitable[bytes]],
) -> Response[Any]:
    """304 when the client holds the current answer, else the answer (built once per tag)."""
    now = utcnow()
    retention = timedelta(hours=settings.cap_feed_retention_h)
    key = f"{request.url.path}?{request.url.query}|{await fingerprint(session, now, retention)}"
    if request.url.path.endswith(".atom"):
        key += f"|{_base_url(request, settings)}"
    tag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
    if matches(request, tag):
        return cached(request, tag, media_type, None, settings.public_max_age_s)
    body = _built(request).get(tag)
    if body is None:
        body = await build(now)
        _built(request).put(tag, body)
    return cached(request, tag, media_type, body, settings.public_max_age_s)


def _base_url(request: Request[Any, Any, Any], settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def _feature(row: Alert) -> Feature:
    out = svc.public_out(row)
    props = msgspec.to_builtins(out)
    props.pop("area")
    zh = next((t for t in out.infos if t.language.lower().startswith("zh")), out.infos[0])
    props["headline"] = zh.headline
    props["event"] = zh.event
    return Feature(id=str(row.id), geometry=out.area, properties=props)


POINT = Annotated[
    str | None,
    QueryParameter(description="LON,LAT (WGS-84): only warnings whose area covers this point"),
]
_LIST_RESPONSES = {
    304: ResponseSpec(
        None, description="Not modified: the client's copy (If-None-Match) is current"
    ),
    400: ResponseSpec(Problem, description="Bad point", media_type=PROBLEM),
    422: ResponseSpec(Problem, description="Bad point", media_type=PROBLEM),
    429: ResponseSpec(
        Problem, description="Too many requests (see Retry-After)", media_type=PROBLEM
    ),
}


class PublicAlertController(Controller):
    """Public warnings for residents and other systems: no sign-in (docs/alerts.md)."""

    path = "/api/v1/public"
    tags = ["public"]
    security = [{}]

    @get(
        "/alerts",
        operation_id="PublicAlerts",
        media_type="application/json",
        responses=_LIST_RESPONSES,
    )
    async def alerts(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        point: POINT = None,
    ) -> Response[PublicAlerts]:
        """Current Actual warnings (most severe first), those covering `point` if given."""
        throttle(request)
        where = geo.parse_point(point)

        async def build(now: datetime) -> bytes:
            rows = await svc.public_current(db, now, where)
            return msgspec.json.encode(PublicAlerts(items=[svc.public_out(r) for r in rows]))

        return await _answer(request, db, settings, "application/json", build)

    @get(
        "/alerts.geojson",
        operation_id="PublicAlertsGeoJson",
        media_type=GEOJSON,
        responses=_LIST_RESPONSES,
    )
    async def alerts_geojson(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        point: POINT = None,
    ) -> Response[FeatureCollection]:
        """Current Actual warnings as GeoJSON: each area with its colour level."""
        throttle(request)
        where = geo.parse_point(point)

        async def build(now: datetime) -> bytes:
            rows = await svc.public_current(db, now, where)
            return msgspec.json.encode(FeatureCollection(features=[_feature(r) for r in rows]))

        return await _answer(request, db, settings, GEOJSON, build)

    @get(
        "/alerts.atom",
        operation_id="PublicAlertsAtom",
        media_type=ATOM,
        responses={k: v for k, v in _LIST_RESPONSES.items() if k in (304, 429)},
    )
    async def alerts_atom(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[bytes]:
        """Atom feed: the latest message of each warning, linking its CAP document; cancelled
        and expired warnings leave after `cap_feed_retention_h`; superseded messages never
        appear (Google's public-alerts feed rules)."""
        throttle(request)
        base = _base_url(request, settings)

        async def build(now: datetime) -> bytes:
            rows = await svc.public_feed(db, now, timedelta(hours=settings.cap_feed_retention_h))
            docs = [(row, svc.cap_alert(row)) for row in rows]
            ids = {id(doc): row.id for row, doc in docs}
            return cap.atom_feed(
                [doc for _, doc in docs],
                feed_id=f"{base}/api/v1/public/alerts.atom",
                title="联动公共预警 Liandong public warnings",
                self_url=f"{base}/api/v1/public/alerts.atom",
                alert_url=lambda doc: f"{base}{svc.cap_path(ids[id(doc)])}",
                now=now,
            )

        return await _answer(request, db, settings, ATOM, build)

    @get(
        "/cap/{alert_id:uuid}",
        operation_id="PublicCapDocument",
        media_type=CAP_XML,
        responses={
            304: ResponseSpec(None, description="Not modified (If-None-Match)"),
            404: ResponseSpec(Problem, description="No public alert", media_type=PROBLEM),
            429: ResponseSpec(Problem, description="Too many requests", media_type=PROBLEM),
        },
    )
    async def cap_document(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
    ) -> Response[bytes]:
        """One published Actual message as CAP 1.2 XML (signed when the server signs), the
        same bytes forever; imported alerts as their authority sent them."""
        throttle(request)
        row = await svc.public_document(db, alert_id)
        body = row.cap_xml or b""
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if matches(request, tag):
            return cached(request, tag, CAP_XML, None, 31_536_000)
        response = cached(request, tag, CAP_XML, body, 31_536_000)
        response.headers["Cache-Control"] += ", immutable"
        return response
