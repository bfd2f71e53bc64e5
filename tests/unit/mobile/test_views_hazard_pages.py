"""The hazard list a page at a time (the start screen of a phone holding thousands): pages
read with `offset` cover every hazard once, in the list's order; `hazard_count` agrees with
the list; a step queued on this phone moves its hazard between the filters at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mobile.core.views import Me, Views
from schemas.sync import Op, PullResponse, RecordChange, ScopePage
from sync.store import ClientStore

ME = Me(str(uuid.UUID(int=7)), None, "inspector")
N = 130


def _hazard(i: int) -> RecordChange:
    at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=i)
    fields = {
        "category": "fire",
        "severity": "low",
        "description": f"hazard {i}",
        "status": "rectified" if i % 10 == 0 else "reported",
        "overdue": i % 7 == 0,
        "reported_at": at.isoformat().replace("+00:00", "Z"),
        "reporter_id": ME.user_id,
    }
    return RecordChange(entity="hazard", id=uuid.UUID(int=1000 + i), version=1, fields=fields)


def _store(tmp_path: Path) -> tuple[ClientStore, Views]:
    path = tmp_path / "store.db"
    store = ClientStore(path, device_id="d")
    changes = [_hazard(i) for i in range(N)]
    store.apply_pull(PullResponse(scopes=[ScopePage(scope="grid:a", cursor=N, changes=changes)]))
    store.finish_pull()
    return store, Views(path, ME)


def _paged(views: Views, size: int, **query: str) -> list[uuid.UUID]:
    out: list[uuid.UUID] = []
    while True:
        page = views.hazards(**query, limit=size, offset=len(out))  # type: ignore[arg-type]
        out += [h.id for h in page]
        if len(page) < size:
            return out


def test_pages_cover_every_hazard_once_in_order_and_counts_agree(tmp_path: Path) -> None:
    _, views = _store(tmp_path)
    everything = [h.id for h in views.hazards(limit=10_000)]
    assert len(everything) == N == views.hazard_count()
    for query in ({}, {"status": "rectified"}, {"exclude": "rectified"}):
        whole = [h.id for h in views.hazards(**query, limit=10_000)]  # type: ignore[arg-type]
        for size in (1, 7, 50):
            assert _paged(views, size, **query) == whole, (query, size)
        assert views.hazard_count(**query) == len(whole)  # type: ignore[arg-type]
    assert views.hazard_count(status="rectified") == 13
    assert views.hazard_count(exclude="rectified") == N - 13
    # overdue first, then the newest report: the list's order holds across pages
    first = views.hazards(limit=3)
    assert all(h.overdue for h in first)
    one = uuid.UUID(int=1000 + 55)
    assert [h.id for h in views.hazards(ids=[one], limit=1)] == [one]


def test_a_queued_step_moves_its_hazard_between_the_lists(tmp_path: Path) -> None:
    store, views = _store(tmp_path)
    moved = uuid.UUID(int=1000 + 3)  # reported
    store.write(
        "hazard_step",
        uuid.uuid4(),
        {"hazard_id": str(moved), "to_status": "rectified", "at": "2026-11-02T00:00:00Z"},
        op=Op.CREATE,
    )
    assert views.hazard_count(status="rectified") == 14
    assert views.hazard_count(exclude="rectified") == N - 14
    waiting = _paged(views, 4, status="rectified")
    others = _paged(views, 9, exclude="rectified")
    assert moved in waiting and moved not in others
    assert len(waiting) == 14 and len(set(waiting) | set(others)) == N
    [view] = views.hazards(ids=[moved], limit=1)
    assert view.status == "rectified" and view.pending


def test_a_hazards_timeline_reads_in_the_servers_order(tmp_path: Path) -> None:
    """The record holds its entries as they arrived; the view orders them as the server's
    `HAZARD_TIMELINE_ORDER` does: by time, then the loop's order within one instant."""
    path = tmp_path / "store.db"
    store = ClientStore(path, device_id="d")
    t0, t1 = "2026-11-01T08:00:00Z", "2026-11-01T09:30:00Z"
    arrived = [
        {"id": "e", "from": "verified", "to": "verified", "at": t1, "kind": "escalated"},
        {"id": "c", "from": "reported", "to": "verified", "at": t1},  # sent late from offline
        {"id": "r", "to": "reported", "at": t0},
        {"id": "x", "from": "verified", "to": "rectification_assigned", "at": t1},
    ]
    hazard = _hazard(1)
    hazard.fields["timeline"] = arrived
    store.apply_pull(PullResponse(scopes=[ScopePage(scope="grid:a", cursor=1, changes=[hazard])]))
    store.finish_pull()
    (view,) = Views(path, ME).hazards(limit=1)
    assert [e["id"] for e in view.record["timeline"]] == ["e", "c", "r", "x"]
    assert [e["id"] for e in view.timeline] == ["r", "c", "e", "x"]
