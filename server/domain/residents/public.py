"""What the residents' page reads beside the public warning routes (server/domain/alerts/public.py),
without an account: the district's area boundaries, the nearest shelters, the page's texts, and
a live stream of the current warnings at a point.

The stream (`WarningFeed`) is one poller per process (a cheap
`count, max(updated_at)` over the alerts every `poll_s`, and at once when this process
publishes) that wakes every open stream when the warnings changed; each stream then sends the
current warnings for its point. Open streams cost no query while nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import i18n
from i18n import N_
from schemas import residents as s
from server import geo
from server.db import dialect_of
from server.domain.alerts import services as alert_svc
from server.domain.alerts.public import PublicAlerts
from server.errors import InvalidInput
from server.models import AdminArea, Alert, Resource, utcnow

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
    "colour_blue": i18n.N_("Blue warning"),
    "colour_yellow": i18n.N_("Yellow warning"),
    "colour_orange": i18n.N_("Orange warning"),
    "colour_red": i18n.N_("Red warning"),
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


class WarningFeed:
    """Wakes open warning streams when the current warnings may have changed (module doc)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], poll_s: float = 2.0) -> None:
        self._sessions = sessions
        self._poll_s = poll_s
        self._changed = anyio.Event()
        self._version: tuple[Any, ...] | None = None
        self._poller_running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.listeners = 0

    async def aclose(self) -> None:
        """Stop the poller (on shutdown: a query cut off by a stopped loop would keep its
        connection, and on SQLite its lock)."""
        self.listeners = 0
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poke(self) -> None:
        """Something was published in this process: wake every stream now."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _version_now(self) -> tuple[Any, ...]:
        async with self._sessions() as session:
            row = (
                await session.execute(select(func.count(Alert.id), func.max(Alert.updated_at)))
            ).one()
        # The minute too: a warning that expires changes what is current without a write.
        return (row[0], row[1], utcnow().replace(second=0, microsecond=0))

    async def _poll(self) -> None:
        try:
            while self.listeners > 0:
                version = await self._version_now()
                if self._version is not None and version != self._version:
                    self.poke()
                self._version = version
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
                    task = asyncio.get_running_loop().create_task(self._poll())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                changed = self._changed
                fired = False
                with anyio.move_on_after(keepalive_s):
                    await changed.wait()
                    fired = True
                yield fired
        finally:
            self.listeners -= 1


def parse_point(point: str | None) -> tuple[float, float] | None:
    """`LON,LAT` (WGS-84 degrees) as a tuple, None when absent; InvalidInput when malformed."""
    if point is None:
        return None
    try:
        lon_s, lat_s = point.split(",")
        lon, lat = float(lon_s), float(lat_s)
    except ValueError:
        raise InvalidInput(N_("point is LON,LAT in WGS-84 degrees"), field="point") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput(N_("point is outside WGS-84 bounds"), field="point")
    return lon, lat
