"""Read models the screens need, each a query over the phone's store.

The store shows `coalesce(local, data)`: the server's record with this phone's own queued
writes on top. Steps (`task_step`, `hazard_step`) are records the phone created and the server
never sends back: while they wait (or until the next complete pull after their ack), they are
the "pending" entries of a timeline, and the newest one is the status the phone shows.

Queries run on the core's own read connection with SQLite's JSON functions; `uuid_text` turns
the store's 16-byte ids into the wire's text form.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from mobile.core import localdb
from mobile.core.clock import Now, instant, utcnow
from mobile.core.geo import haversine_m
from mobile.core.photos import PhotoState
from schemas.states import hazard_step_rank, task_step_rank

_dec = msgspec.json.Decoder()
REC = "CAST(coalesce({a}.local, {a}.data) AS TEXT)"
_HREC = "CAST(coalesce(local, data) AS TEXT)"
# The hazard list's order (overdue first, newest report first) as an index on the store's
# records: the first page of 10,000 hazards reads 50 index entries instead of sorting them all
# (one JSON parse per hazard when it is written, instead of one per hazard per screen opening).
HAZARD_ORDER = (
    f"coalesce(json_extract({_HREC}, '$.overdue'), 0) DESC,"
    f" coalesce(json_extract({_HREC}, '$.reported_at'), json_extract({_HREC}, '$.created_at'))"
    " DESC"
)
# The status a hazard's record says, as a second index: the start screen's count and list of
# hazards waiting for re-inspection read the few that are instead of parsing all 10,000.
HAZARD_STATUS = f"coalesce(json_extract({_HREC}, '$.status'), 'reported')"
LOCAL_ZONE = ZoneInfo("Asia/Shanghai")


def _uuid_text(b: bytes | None) -> str | None:
    return str(uuid.UUID(bytes=b)) if b is not None else None


def _uuid_blob(text: str | None) -> bytes | None:
    """The store's 16-byte id of a wire id (a join on it uses the records' primary key)."""
    if not text:
        return None
    try:
        return uuid.UUID(str(text)).bytes
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Me:
    """Who the views are for."""

    user_id: str
    org_id: str | None = None
    role: str = ""


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task in "my tasks": its record, the status the phone shows, its incident."""

    id: uuid.UUID
    record: dict[str, Any]
    status: str
    pending: bool  # the status comes from a step not yet confirmed by the server
    incident: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a task's or hazard's timeline; `pending` until the server confirmed it."""

    id: str
    to_status: str | None
    at: str | None
    note: str | None
    pending: bool
    photo_ids: list[str] = field(default_factory=list)
    photos_done: int = 0
    item: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """A task with its incident and its timeline (confirmed, then pending)."""

    task: TaskView
    timeline: list[TimelineEntry]


@dataclass(frozen=True, slots=True)
class PhotoView:
    """A photo of a record: sent (stored on the server) or not yet."""

    media_id: str
    sent: bool
    state: str


@dataclass(frozen=True, slots=True)
class HazardView:
    """A hazard as the list shows it."""

    id: uuid.UUID
    record: dict[str, Any]
    status: str
    overdue: bool
    mine: bool
    pending: bool  # this phone has writes of it not yet confirmed
    photos: list[PhotoView]

    @property
    def photos_sent(self) -> tuple[int, int]:
        """(sent, total)."""
        return sum(p.sent for p in self.photos), len(self.photos)

    @property
    def timeline(self) -> list[dict[str, Any]]:
        """The server's timeline entries in its order: by time, and entries of one instant in
        the order of the hazard loop (`schemas.states.hazard_step_rank`, as
        `HAZARD_TIMELINE_ORDER` on the server). A record holds them as they arrived: a step
        sent late from offline with an earlier time comes after newer ones."""
        return in_timeline_order(self.record.get("timeline"), hazard_step_rank)


@dataclass(frozen=True, slots=True)
class Nearby:
    """A reference record and its distance from the point asked about (None: no location)."""

    entity: str
    id: uuid.UUID
    record: dict[str, Any]
    distance_m: float | None


@dataclass(frozen=True, slots=True)
class ChecksWeek:
    """This week's self-checks of my enterprises: due (template per enterprise) and done."""

    week: str
    due: list[tuple[str, dict[str, Any]]]  # (enterprise id, template) still to fill in
    done: list[dict[str, Any]]  # this week's submissions (queued ones too)
    missed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # week ended unsent
    records: list[dict[str, Any]] = field(default_factory=list)  # the server's check_due rows


@dataclass(frozen=True, slots=True)
class PlanView:
    """An active emergency plan my unit takes part in, with the task templates that dispatch
    to my unit's kind (`mine`; every template for dispatch, who reads all plans)."""

    id: uuid.UUID
    record: dict[str, Any]
    mine: list[dict[str, Any]]

    @property
    def name(self) -> str:
        """The plan's name."""
        return str(self.record.get("name") or "")


COLOR_RANK = {"red": 0, "orange": 1, "yellow": 2, "blue": 3}
TEXT_LANGS = {"zh_CN": ("zh-CN",), "en": ("en-US", "en", "zh-CN")}


@dataclass(frozen=True, slots=True)
class AlertView:
    """An active public warning for where I am. `drill` marks a warning that is not `Actual`
    (an exercise or a test: staff see them, marked)."""

    id: uuid.UUID
    record: dict[str, Any]
    texts: dict[str, str]  # event, headline, description, instruction, ... in my language
    color: str | None
    drill: bool
    here: bool | None  # inside its area at the current fix (None: no fix to tell)

    @property
    def headline(self) -> str:
        """The headline in my language (else the event)."""
        return self.texts.get("headline") or self.texts.get("event") or ""


def alert_texts(record: dict[str, Any], lang: str) -> dict[str, str]:
    """The alert's texts in `lang` (`zh_CN`, `en`), else Chinese, else any it carries."""
    texts = record.get("texts") or {}
    if not isinstance(texts, dict) or not texts:
        return {}
    for key in (*TEXT_LANGS.get(lang, ()), "zh-CN"):
        if isinstance(texts.get(key), dict):
            return {str(k): str(v) for k, v in texts[key].items()}
    first = next(iter(texts.values()))
    return {str(k): str(v) for k, v in first.items()} if isinstance(first, dict) else {}


def in_area(area: Any, lon: float, lat: float) -> bool:
    """Is (lon, lat) inside a GeoJSON Polygon or MultiPolygon (holes excluded)?"""
    if not isinstance(area, dict):
        return False
    kind, coords = area.get("type"), area.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    return any(
        rings and _in_ring(rings[0], lon, lat) and not any(_in_ring(h, lon, lat) for h in rings[1:])
        for rings in polygons
    )


def _in_ring(ring: list[list[float]], x: float, y: float) -> bool:
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def iso_week(at: datetime, zone: ZoneInfo = LOCAL_ZONE) -> str:
    """The ISO week (`2026-W47`) of `at` in the local zone (weeks turn at local midnight)."""
    year, week, _ = at.astimezone(zone).isocalendar()
    return f"{year}-W{week:02d}"


def in_timeline_order(
    entries: list[dict[str, Any]] | None, rank: Callable[[str | None, str | None], int]
) -> list[dict[str, Any]]:
    """A timeline's entries by time, and those of the same instant (two taps within a
    millisecond, or the server's clock at one transaction) in the order of the record's
    lifecycle, as the server orders them: `rank` is `schemas.states.task_step_rank` or
    `hazard_step_rank`. Times are compared as instants, not as text: the wire leaves out the
    fraction of a whole second (`...:18Z`), which as text sorts after `...:18.001000Z`."""
    return sorted(
        entries or [], key=lambda e: (instant(e.get("at")), rank(e.get("to"), e.get("from")))
    )


class Views:
    """Read models over the store file at `path` for user `me`."""

    def __init__(self, path: Path, me: Me, *, now: Now = utcnow) -> None:
        self.db: sqlite3.Connection = localdb.connect(path)
        self.db.create_function("uuid_text", 1, _uuid_text, deterministic=True)
        self.db.create_function("uuid_blob", 1, _uuid_blob, deterministic=True)
        self._hazard_index = bool(
            self.db.execute("SELECT 1 FROM sqlite_master WHERE name='records'").fetchone()
        )
        if self._hazard_index:
            self.db.execute(
                "CREATE INDEX IF NOT EXISTS mobile_hazards_order"
                f" ON records({HAZARD_ORDER}) WHERE entity='hazard'"
            )
            self.db.execute(
                "CREATE INDEX IF NOT EXISTS mobile_hazards_status"
                f" ON records({HAZARD_STATUS}) WHERE entity='hazard'"
            )
        self.me = me
        self._now = now

    def close(self) -> None:
        """Close the read connection."""
        self.db.close()

    # -- records ----------------------------------------------------------------------------
    def _records(
        self, entity: str, where: str = "", params: Iterable[Any] = ()
    ) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        """The held records of `entity` (this phone's version where it has one) as (id,
        fields); `where` narrows with SQL over `{x}`, the record's JSON (`AND ...`)."""
        x = REC.format(a="x")
        rows = self.db.execute(
            f"SELECT x.id, {x} FROM records x WHERE x.entity = ?"  # noqa: S608
            f" AND coalesce(x.local, x.data) IS NOT NULL{where.format(x=x)}",
            (entity, *params),
        )
        return [(uuid.UUID(bytes=rid), _dec.decode(blob)) for rid, blob in rows]

    # -- steps ------------------------------------------------------------------------------
    def _steps(
        self, entity: str, key: str, ids: Iterable[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Steps this phone made that the server has not confirmed in a pull, by target id,
        in the order they were made (outbox order: two steps in one millisecond have uuid7
        ids in random order)."""
        rows = self.db.execute(
            f"SELECT uuid_text(s.id), {REC.format(a='s')} FROM records s"  # noqa: S608
            " WHERE s.entity=? ORDER BY (SELECT min(o.seq) FROM outbox o"
            " WHERE o.entity=s.entity AND o.id=s.id), s.id",
            (entity,),
        )
        wanted = set(ids) if ids is not None else None
        out: dict[str, list[dict[str, Any]]] = {}
        for sid, blob in rows:
            if blob is None:
                continue
            step = {**_dec.decode(blob), "id": sid}
            target = str(step.get(key))
            if wanted is None or target in wanted:
                out.setdefault(target, []).append(step)
        return out

    # -- tasks ------------------------------------------------------------------------------
    def my_tasks(self, status: str | Iterable[str] | None = None) -> list[TaskView]:
        """Tasks assigned to me or my unit, newest dispatch first, each with its incident and
        the status the phone shows (a queued step counts). `status` filters on that status."""
        t, i = REC.format(a="t"), REC.format(a="i")
        rows = self.db.execute(
            f"SELECT t.id, {t}, {i} FROM records t LEFT JOIN records i"  # noqa: S608
            " ON i.entity='incident'"
            f" AND i.id = uuid_blob(json_extract({t}, '$.incident_id'))"
            f" WHERE t.entity='task' AND coalesce(t.local, t.data) IS NOT NULL"
            f" AND (json_extract({t}, '$.assignee_user_id') = ?1"
            f"  OR (?2 IS NOT NULL AND json_extract({t}, '$.assignee_unit_id') = ?2))"
            f" ORDER BY json_extract({t}, '$.dispatched_at') DESC",
            (self.me.user_id, self.me.org_id),
        ).fetchall()
        steps = self._steps("task_step", "task_id")
        wanted = {status} if isinstance(status, str) else set(status) if status else None
        out = []
        for rid, blob, inc in rows:
            view = self._task_view(uuid.UUID(bytes=rid), _dec.decode(blob), inc, steps)
            if wanted is None or view.status in wanted:
                out.append(view)
        return out

    @staticmethod
    def _task_view(
        rid: uuid.UUID,
        record: dict[str, Any],
        incident: str | None,
        steps: dict[str, list[dict[str, Any]]],
    ) -> TaskView:
        moves = [s for s in steps.get(str(rid), []) if s.get("to_status")]
        confirmed = {str(e.get("id")) for e in record.get("timeline") or []}
        moves = [s for s in moves if s["id"] not in confirmed]
        status = moves[-1]["to_status"] if moves else str(record.get("status"))
        inc = _dec.decode(incident) if incident else None
        return TaskView(rid, record, status, bool(moves), inc)

    def task(self, task_id: uuid.UUID) -> TaskDetail | None:
        """A task with its incident and timeline: the server's entries, then this phone's
        steps it has not confirmed yet (pending), each with its photos sent so far."""
        t, i = REC.format(a="t"), REC.format(a="i")
        row = self.db.execute(
            f"SELECT {t}, {i} FROM records t LEFT JOIN records i"  # noqa: S608
            f" ON i.entity='incident' AND i.id = uuid_blob(json_extract({t}, '$.incident_id'))"
            " WHERE t.entity='task' AND t.id=?",
            (task_id.bytes,),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        steps = self._steps("task_step", "task_id", [str(task_id)])
        view = self._task_view(task_id, _dec.decode(row[0]), row[1], steps)
        stored = self._stored_media()
        entries = [
            _entry(e, pending=False, stored=stored)
            for e in in_timeline_order(view.record.get("timeline"), task_step_rank)
        ]
        seen = {e.id for e in entries}
        for s in steps.get(str(task_id), []):
            if s["id"] not in seen:
                entries.append(_entry({**s, "to": s.get("to_status")}, pending=True, stored=stored))
        return TaskDetail(view, entries)

    def _stored_media(self) -> set[str]:
        """Ids of photos the server has: stored per the phone's uploads or the media records."""
        ids = {
            str(m)
            for (m,) in self.db.execute(
                "SELECT media_id FROM mobile_photos WHERE state=?", (str(PhotoState.STORED),)
            )
        }
        m = REC.format(a="m")
        ids |= {
            str(x)
            for (x,) in self.db.execute(
                f"SELECT uuid_text(m.id) FROM records m WHERE m.entity='media'"  # noqa: S608
                f" AND json_extract({m}, '$.status')='stored'"
            )
        }
        return ids

    # -- hazards ----------------------------------------------------------------------------
    def hazards(
        self,
        *,
        status: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        overdue: bool | None = None,
        mine: bool | None = None,
        ids: Iterable[uuid.UUID] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[HazardView]:
        """Hazards the phone holds (the server sends an inspector the hazards of their grids,
        an enterprise its own), overdue first, then newest reports; with their photos.

        `status` / `exclude`: the status shown is (not) one of these. `mine`: reported by me
        (or queued here and not yet confirmed). `ids`: only these. A queued step's status is
        shown (pending). `offset` skips that many matching hazards (a list's next page)."""
        steps = self._steps("hazard_step", "hazard_id")
        where, params = self._hazard_where(steps, status, exclude, overdue, mine, ids)
        narrow = status is not None or ids is not None
        h = REC.format(a="h")
        sql = (
            f"SELECT h.id, {h}, h.data IS NULL OR h.local IS NOT NULL FROM records h"  # noqa: S608
            # a list by status or ids reads those few (by their index) and sorts them
            + (" INDEXED BY mobile_hazards_order" if self._hazard_index and not narrow else "")
            + where
            + f" ORDER BY {HAZARD_ORDER}"
        )
        wanted, unwanted = _codes(status), _codes(exclude) or set()
        page: list[tuple[uuid.UUID, dict[str, Any], str, bool, bool]] = []
        skipped = 0
        for rid, blob, local in self.db.execute(sql, params):  # decoded one by one, lazily
            uid = uuid.UUID(bytes=rid)
            own = steps.get(str(uid))
            if own is None and skipped < offset:  # the SQL filter is exact for it: no decode
                skipped += 1
                continue
            record = _dec.decode(blob)
            shown, moved = _shown_status(record, own)
            if (wanted is not None and shown not in wanted) or shown in unwanted:
                continue
            if skipped < offset:
                skipped += 1
                continue
            page.append((uid, record, shown, bool(local), moved))
            if len(page) >= limit:
                break
        photos = self._photo_states(
            {str(p) for _, rec, *_ in page for p in rec.get("photo_ids") or []}
        )
        return [
            HazardView(
                uid,
                record,
                shown,
                bool(record.get("overdue")),
                record.get("reporter_id") in (self.me.user_id, None),
                local or moved_,
                [
                    PhotoView(str(p), *photos.get(str(p), (False, "unknown")))
                    for p in record.get("photo_ids") or []
                ],
            )
            for uid, record, shown, local, moved_ in page
        ]

    def hazard_count(
        self,
        *,
        status: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
    ) -> int:
        """How many hazards `hazards(status=..., exclude=...)` would list without a limit:
        counted in SQL, decoding only the few hazards a queued step of this phone may move."""
        steps = self._steps("hazard_step", "hazard_id")
        where, params = self._hazard_where(steps, status, exclude, None, None, None)
        moved = [uuid.UUID(k).bytes for k in steps]
        h = REC.format(a="h")
        (n,) = self.db.execute(
            f"SELECT count(*) FROM records h{where}"  # noqa: S608
            f" AND h.id NOT IN ({','.join('?' * len(moved))})",
            [*params, *moved],
        ).fetchone()
        if moved:
            wanted, unwanted = _codes(status), _codes(exclude) or set()
            for rid, blob in self.db.execute(
                f"SELECT h.id, {h} FROM records h{where}"  # noqa: S608
                f" AND h.id IN ({','.join('?' * len(moved))})",
                [*params, *moved],
            ):
                own = steps.get(str(uuid.UUID(bytes=rid)))
                shown, _moved = _shown_status(_dec.decode(blob), own)
                n += (wanted is None or shown in wanted) and shown not in unwanted
        return int(n)

    def _hazard_where(
        self,
        steps: dict[str, list[dict[str, Any]]],
        status: str | Iterable[str] | None,
        exclude: str | Iterable[str] | None,
        overdue: bool | None,
        mine: bool | None,
        ids: Iterable[uuid.UUID] | None,
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of the hazard queries: exact for a hazard without a queued step
        of this phone; one with a step is a candidate whatever its record's status (the
        caller checks the status it shows)."""
        h = REC.format(a="h")
        shown = HAZARD_STATUS
        sql = " WHERE h.entity='hazard' AND coalesce(h.local, h.data) IS NOT NULL"
        params: list[Any] = []
        moved = [uuid.UUID(k).bytes for k in steps]
        or_moved = f" OR h.id IN ({','.join('?' * len(moved))}))"
        wanted, unwanted = _codes(status), _codes(exclude) or set()
        if wanted is not None:
            # by the status index (a subquery: an OR would keep SQLite from it)
            marks = ",".join("?" * len(wanted))
            also = " UNION ALL VALUES (?)" * len(moved)
            sql += " AND h.id IN (SELECT s.id FROM records s WHERE s.entity='hazard'"
            sql += f" AND {shown} IN ({marks}){also})"  # placeholders only
            params += sorted(wanted) + moved
        if unwanted:
            sql += f" AND ({shown} NOT IN ({','.join('?' * len(unwanted))})" + or_moved
            params += sorted(unwanted) + moved
        if ids is not None:
            blobs = [i.bytes for i in ids]
            sql += f" AND h.id IN ({','.join('?' * len(blobs))})"
            params += blobs
        if overdue is not None:
            sql += f" AND coalesce(json_extract({h}, '$.overdue'), 0) = ?"
            params.append(1 if overdue else 0)
        if mine is not None:
            sql += (
                f" AND (json_extract({h}, '$.reporter_id') = ? OR h.data IS NULL)"
                if mine
                else f" AND coalesce(json_extract({h}, '$.reporter_id'), '') != ?"
                " AND h.data IS NOT NULL"
            )
            params.append(self.me.user_id)
        return sql, params

    def _photo_states(self, ids: set[str]) -> dict[str, tuple[bool, str]]:
        """media id -> (sent, state) for `ids`: the phone's upload state, else the server's
        media record."""
        blobs = [b for b in (_uuid_blob(i) for i in ids) if b is not None]
        if not blobs:
            return {}
        m = REC.format(a="m")
        marks = ",".join("?" * len(blobs))
        out = {
            str(mid): (status == "stored", str(status))
            for mid, status in self.db.execute(
                f"SELECT uuid_text(m.id), json_extract({m}, '$.status') FROM records m"  # noqa: S608
                f" WHERE m.entity='media' AND m.id IN ({marks})",
                blobs,
            )
        }
        texts = sorted(ids)
        for mid, state in self.db.execute(
            "SELECT media_id, state FROM mobile_photos"  # noqa: S608 - placeholders only
            f" WHERE media_id IN ({','.join('?' * len(texts))})",
            texts,
        ):
            out[str(mid)] = (state == PhotoState.STORED.value, str(state))
        return out

    # -- reference data ---------------------------------------------------------------------
    def nearby(
        self,
        lon: float,
        lat: float,
        *,
        kinds: Iterable[str] = ("shelter", "depot", "team"),
        limit: int = 20,
    ) -> list[Nearby]:
        """Shelters, depots and teams (resources of the given kinds), nearest first."""
        wanted = list(kinds)
        marks = ",".join("?" * len(wanted))
        rows = self._records("resource", f" AND json_extract({{x}}, '$.kind') IN ({marks})", wanted)
        out = [Nearby("resource", rid, rec, _distance(rec, lon, lat)) for rid, rec in rows]
        out.sort(key=lambda n: (n.distance_m is None, n.distance_m or 0.0))
        return out[:limit]

    def contacts(self, *, duty_first: bool = True) -> list[Nearby]:
        """Contacts (no location of their own): duty lines first, then by name."""
        out = [Nearby("contact", i, rec, None) for i, rec in self._records("contact")]
        out.sort(key=lambda n: (duty_first and not n.record.get("duty"), str(n.record.get("name"))))
        return out

    # -- plans ------------------------------------------------------------------------------
    def unit_kinds(self) -> set[str]:
        """The unit kinds whose plans this phone holds (`plankind:K` scopes: a responder's own
        unit's kind); empty for dispatch, which holds every plan (`plans`)."""
        rows = self.db.execute("SELECT scope FROM scopes WHERE scope LIKE 'plankind:%'")
        return {s.removeprefix("plankind:") for (s,) in rows}

    def plans(self, incident_type: str | None = None) -> list[PlanView]:
        """Active plans my unit takes part in (the newest version of each code), by incident
        type, lowest level first; `incident_type` narrows to one type."""
        kinds = self.unit_kinds()
        plans: list[PlanView] = []
        for pid, rec in self._records("plan", " AND json_extract({x}, '$.active')"):
            if incident_type is not None and rec.get("incident_type") != incident_type:
                continue
            templates = [t for t in rec.get("templates") or [] if isinstance(t, dict)]
            mine = [t for t in templates if not kinds or t.get("unit_kind") in kinds]
            if mine:
                plans.append(PlanView(pid, rec, mine))
        newest = _newest_by_code(
            plans, lambda p: str(p.record.get("code") or p.id.hex), lambda p: p.record
        )
        return sorted(
            newest.values(),
            key=lambda p: (
                str(p.record.get("incident_type") or ""),
                int(p.record.get("min_level") or 0),
                p.name,
            ),
        )

    # -- public warnings --------------------------------------------------------------------
    def alerts(
        self,
        *,
        lang: str = "zh_CN",
        at: tuple[float, float] | None = None,
        include_elsewhere: bool = False,
    ) -> list[AlertView]:
        """Active warnings for where I am: the phone holds the warnings of my areas (the
        server's scopes); an Update has replaced its record's values and a Cancel deleted it,
        so what is held is current. Expired ones (`expires` passed) are dropped here. With a
        fix `at` (lon, lat), only warnings whose area contains it, unless `include_elsewhere`.
        Red first, then orange, yellow, blue; newest first within a colour."""
        now = self._now()
        out: list[AlertView] = []
        for aid, rec in self._records("alert"):
            expires = _time(rec.get("expires"))
            if expires is not None and expires <= now:
                continue
            if rec.get("msg_type") == "Cancel":  # a server that kept the record: gone all the same
                continue
            here = in_area(rec.get("area"), *at) if at is not None else None
            if here is False and not include_elsewhere:
                continue
            color = rec.get("color")
            out.append(
                AlertView(
                    aid,
                    rec,
                    alert_texts(rec, lang),
                    str(color) if color else None,
                    str(rec.get("status") or "Actual") != "Actual",
                    here,
                )
            )
        out.sort(key=lambda a: str(a.record.get("sent") or ""), reverse=True)
        out.sort(key=lambda a: COLOR_RANK.get(a.color or "", 9))
        return out

    # -- self-checks ------------------------------------------------------------------------
    def checks_this_week(self) -> ChecksWeek:
        """This week's self-checks for my enterprises. From the server's `check_due` records
        when the phone holds them (due, done, missed: docs/sync-protocol.md); a queued
        submission of this phone counts as done at once. Without them (an older server) each
        active template not yet submitted for an enterprise is due.

        The server's rule: one check per enterprise, template *code* and week (a version
        published mid-week is the same checklist), so a submission of any version of a code
        covers the code, and a due check is filled in on the code's active version."""
        week = iso_week(self._now())

        def held(entity: str, of_week: bool = False) -> list[dict[str, Any]]:
            """The records of `entity` (of this week), each with its id as text."""
            rows = self._records(entity, WEEK, (week,)) if of_week else self._records(entity)
            return [{**rec, "id": str(rid)} for rid, rec in rows]

        every = {t["id"]: t for t in held("check_template")}

        def code_of(template_id: Any) -> str:
            """A template id's code (an unknown template stands for itself)."""
            return str(every.get(str(template_id), {}).get("code") or template_id)

        active = _newest_by_code(  # code -> its active version
            [t for t in every.values() if t.get("active")], lambda t: code_of(t["id"]), lambda t: t
        )
        done = held("check_submission", of_week=True)
        enterprises = [
            s.removeprefix("enterprise:")
            for (s,) in self.db.execute("SELECT scope FROM scopes WHERE scope LIKE 'enterprise:%'")
        ]
        taken = {(d.get("enterprise_id"), code_of(d.get("template_id"))) for d in done}
        # A queued submission may leave the enterprise to the server (None): it covers mine.
        taken |= {
            (e, code_of(d.get("template_id")))
            for d in done
            if not d.get("enterprise_id")
            for e in enterprises
        }
        dues = held("check_due", of_week=True)
        if dues:
            due: list[tuple[str, dict[str, Any]]] = []
            missed: list[tuple[str, dict[str, Any]]] = []
            for d in dues:
                key = (
                    d.get("enterprise_id"),
                    d.get("template_code") or code_of(d.get("template_id")),
                )
                tpl = active.get(key[1])
                if tpl is None or d.get("status") == "done" or key in taken:
                    continue
                (missed if d.get("status") == "missed" else due).append((str(key[0]), tpl))
            return ChecksWeek(week, due, done, missed, dues)
        due = [
            (e, tpl) for e in enterprises for code, tpl in active.items() if (e, code) not in taken
        ]
        return ChecksWeek(week, due, done)


T = TypeVar("T")
WEEK = " AND json_extract({x}, '$.week') = ?"  # a record of the week given


def _newest_by_code(
    items: Iterable[T], code: Callable[[T], str], record: Callable[[T], dict[str, Any]]
) -> dict[str, T]:
    """Of versioned records (plans, check templates: a new version keeps its code), the highest
    `version` of each code."""
    newest: dict[str, T] = {}
    for item in items:
        held = newest.get(key := code(item))
        if held is None or int(record(item).get("version") or 0) > int(
            record(held).get("version") or 0
        ):
            newest[key] = item
    return newest


def _shown_status(record: dict[str, Any], steps: list[dict[str, Any]] | None) -> tuple[str, bool]:
    """The status a hazard shows: its newest step this phone made that the server has not
    confirmed (True: moved by it), else its record's."""
    confirmed = {str(e.get("id")) for e in record.get("timeline") or []}
    moves = [s for s in steps or () if s["id"] not in confirmed]
    if moves:
        return str(moves[-1]["to_status"]), True
    return str(record.get("status") or "reported"), False


def _codes(value: str | Iterable[str] | None) -> set[str] | None:
    """A status filter as a set (None: no filter)."""
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _distance(rec: dict[str, Any], lon: float, lat: float) -> float | None:
    loc = rec.get("location") or {}
    coords = loc.get("coordinates") if isinstance(loc, dict) else None
    if not coords:
        return None
    return haversine_m(lon, lat, float(coords[0]), float(coords[1]))


def _entry(e: dict[str, Any], *, pending: bool, stored: set[str]) -> TimelineEntry:
    photos = [str(p) for p in e.get("photo_ids") or []]
    return TimelineEntry(
        id=str(e.get("id")),
        to_status=e.get("to"),
        at=e.get("at"),
        note=e.get("note"),
        pending=pending,
        photo_ids=photos,
        photos_done=sum(p in stored for p in photos),
        item=e,
    )
