"""What the residents' page reads beside the public warning routes (server/domain/alerts/public.py),
without an account: the district's area boundaries, the nearest shelters, the page's texts, and
a live stream of the current warnings at a point.

The stream (`WarningFeed`) is one poller per process: every `poll_s` it reads the published
warnings' fingerprint (the one aggregate the public routes' ETags use, `alerts.public`; drafts
and edits of drafts do not change it), and at once when this process publishes, and wakes every
open stream when it changed. A woken stream asks the feed for the warnings at its point, rounded
to 0.001° (as subscriptions store places): the answer is built once per (fingerprint, point) and
shared, so a thousand streams in one village cost one spatial query per change, and open
streams cost no query while nothing changes.

`/areas` is built once per change of the areas (their count and latest update) and answered
with that as its ETag (304 on `If-None-Match`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import i18n
from push.notices import VALUE_TEXTS
from schemas import residents as s
from server import geo
from server.db import dialect_of
from server.domain.alerts import services as alert_svc
from server.domain.alerts.public import PublicAlerts, fingerprint
from server.domain.residents.services import round_place
from server.models import AdminArea, Resource, utcnow

_json = msgspec.json.Encoder()

# Texts of the residents' page (server/static/residents), served as JSON per language.
PAGE_TEXTS = {
    "title": i18n.N_("Warnings near me"),
    "locate": i18n.N_("Use my location"),
    "choose_area": i18n.N_("or choose a place"),
    "none": i18n.N_("No warnings for this place now."),
    "expires": i18n.N_("Until"),
    "instruction": i18n.N_("What to do"),
    "shelters": i18n.N_("Nearest shelters"),
    "subscribe": i18n.N_("Notify me of warnings here"),
    "subscribed": i18n.N_("You will be notified of warnings here."),
    "push_unavailable": i18n.N_(
        "Notifications are not available in this browser; this page updates itself while open."
    ),
    "live": i18n.N_("Live"),
    "offline": i18n.N_("Reconnecting…"),
    "language": i18n.N_("Switch language"),  # the button names the other language
    "metres": i18n.N_("{n} m"),
    # the warning levels, as the notices name them (push/notices.py)
    **{
        f"colour_{colour}": VALUE_TEXTS[f"colour:{colour}"]
        for colour in ("blue", "yellow", "orange", "red")
    },
}


def page_texts(lang: str) -> dict[str, str]:
    """The page's texts in `lang` (Chinese when unknown)."""
    lang = i18n.normalize(lang)
    return {key: i18n.gettext(lang, text) for key, text in PAGE_TEXTS.items()}


async def alerts_at(session: AsyncSession, point: tuple[float, float] | None) -> PublicAlerts:
    """The current Actual warnings covering the point (all current ones without a point): the
    same answer as `GET /api/v1/public/alerts?point=`."""
    rows = await alert_svc.public_current(session, utcnow(), point)
    return PublicAlerts(items=[alert_svc.public_out(r) for r in rows])


async def areas_version(session: AsyncSession) -> str:
    """A strong ETag for `/areas`: changes whenever an area is added, edited or removed."""
    count, latest = (
        await session.execute(select(func.count(AdminArea.id), func.max(AdminArea.updated_at)))
    ).one()
    return '"' + hashlib.sha256(f"{count}|{latest}".encode()).hexdigest()[:32] + '"'


async def areas_geojson(session: AsyncSession) -> dict[str, Any]:
    """The district's areas as a GeoJSON FeatureCollection (for the page's plain map)."""
    rows = (
        await session.execute(
            select(AdminArea).where(AdminArea.deleted_at.is_(None), AdminArea.boundary.is_not(None))
        )
    ).scalars()
    features = []
    for area in rows:
        geom = geo.area_required(area.boundary)
        features.append(
            {
                "type": "Feature",
                "id": str(area.id),
                "properties": {"name": area.name, "level": area.level, "code": area.code},
                "geometry": {"type": geom.__struct_config__.tag, "coordinates": geom.coordinates},
            }
        )
    return {"type": "FeatureCollection", "features": features}


class AreasCache:
    """`/areas` as built for the current areas version (one per process)."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.body = b""
        self.builds = 0  # tests prove the reuse
        self._lock = asyncio.Lock()

    async def get(self, session: AsyncSession) -> tuple[str, bytes]:
        """(ETag, GeoJSON) of the areas now; rebuilt only when they changed."""
        version = await areas_version(session)
        async with self._lock:
            if version != self.version:
                self.body = _json.encode(await areas_geojson(session))
                self.version = version
                self.builds += 1
            return version, self.body


async def nearest_shelters(
    session: AsyncSession, lon: float, lat: float, limit: int = 3
) -> list[s.Shelter]:
    """The nearest shelters to the point, with their distance in metres."""
    dialect = dialect_of(session)
    distance = geo.distance_m(dialect, Resource.location, lon, lat)
    rows = await session.execute(
        select(Resource, distance)
        .where(Resource.kind == "shelter", Resource.deleted_at.is_(None))
        .order_by(distance)
        .limit(limit)
    )
    out = []
    for resource, metres in rows.all():
        out.append(
            s.Shelter(
                id=resource.id,
                name=resource.name,
                address=resource.address,
                capacity=resource.capacity,
                phone=resource.phone,
                location=geo.point_required(resource.location),
                distance_m=round(float(metres)),
            )
        )
    return out


Point = tuple[float, float]


class WarningFeed:
    """Wakes open warning streams when the published warnings changed, and builds each point's
    answer once per change (module doc)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        poll_s: float = 2.0,
        *,
        retention: timedelta = timedelta(hours=48),
        cache_size: int = 4096,
    ) -> None:
        self._sessions = sessions
        self._poll_s = poll_s
        self._retention = retention
        self._cache_size = cache_size
        self._changed = anyio.Event()
        self._version: str | None = None
        self._version_lock = asyncio.Lock()
        self._answers: OrderedDict[tuple[str, Point | None], bytes] = OrderedDict()
        self._building: dict[tuple[str, Point | None], asyncio.Task[bytes]] = {}
        self._poller_running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.listeners = 0
        self.queries = 0  # warnings-at-a-point queries made (tests prove the sharing)

    async def aclose(self) -> None:
        """Stop the poller and any answer being built (on shutdown: a query cut off by a
        stopped loop would keep its connection, and on SQLite its lock)."""
        self.listeners = 0
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def poke(self) -> None:
        """Something was published in this process: read the fingerprint again and wake every
        stream now."""
        self._set_version(None)
        self._wake()

    def _set_version(self, version: str | None) -> None:
        if version != self._version:
            self._answers.clear()
        self._version = version

    async def _version_now(self) -> str:
        async with self._sessions() as session:
            return await fingerprint(session, utcnow(), self._retention)

    async def version(self) -> str:
        """The published warnings' fingerprint as last read (read now if unknown)."""
        async with self._version_lock:
            version = self._version
            if version is None:
                version = await self._version_now()
                self._set_version(version)
            return version

    async def answer(self, point: Point | None) -> bytes:
        """The current warnings at `point` (rounded to 0.001°; all current ones without a
        point) as JSON: what `GET /api/v1/public/alerts?point=` answers, built once per
        (fingerprint, point) however many streams ask."""
        where = None if point is None else round_place(*point)
        key = (await self.version(), where)
        body = self._answers.get(key)
        if body is not None:
            self._answers.move_to_end(key)
            return body
        task = self._building.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._build(where))
            self._building[key] = task
            self._keep(task)
            task.add_done_callback(functools.partial(self._built, key))
        # One caller leaving (its stream closed) does not cancel the others' answer.
        return await asyncio.shield(task)

    async def _build(self, where: Point | None) -> bytes:
        self.queries += 1
        async with self._sessions() as session:
            return _json.encode(await alerts_at(session, where))

    def _built(self, key: tuple[str, Point | None], task: asyncio.Task[bytes]) -> None:
        self._building.pop(key, None)
        if task.cancelled() or task.exception() is not None or key[0] != self._version:
            return
        self._answers[key] = task.result()
        while len(self._answers) > self._cache_size:
            self._answers.popitem(last=False)

    async def _poll(self) -> None:
        try:
            while self.listeners > 0:
                version = await self._version_now()
                moved = self._version is not None and version != self._version
                self._set_version(version)
                if moved:
                    self._wake()
                await anyio.sleep(self._poll_s)
        finally:
            self._poller_running = False

    async def changes(self, *, keepalive_s: float = 15.0) -> AsyncIterator[bool]:
        """Yields True when the warnings may have changed, False as a keep-alive; the first
        value (True) comes at once. Runs the shared poller while anyone listens."""
        self.listeners += 1
        try:
            yield True
            while True:
                if not self._poller_running:
                    self._poller_running = True
                    self._keep(asyncio.get_running_loop().create_task(self._poll()))
                changed = self._changed
                fired = False
                with anyio.move_on_after(keepalive_s):
                    await changed.wait()
                    fired = True
                yield fired
        finally:
            self.listeners -= 1
