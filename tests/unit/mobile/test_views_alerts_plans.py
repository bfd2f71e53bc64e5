"""Read models over records as the server sends them (synthetic pulls into a real store):
active warnings for where I am (an Update replaced, a Cancel deleted, expired dropped, drills
marked, my language) and the plans my unit takes part in."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from mobile.core.clock import ManualClock, rfc3339
from mobile.core.views import Me, Views, in_area, iso_week
from schemas.sync import Op, PullResponse, RecordChange, ScopePage
from sync.store import ClientStore

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[121.0, 31.0], [122.0, 31.0], [122.0, 32.0], [121.0, 32.0], [121.0, 31.0]]],
}
ELSEWHERE = {
    "type": "MultiPolygon",
    "coordinates": [[[[110.0, 20.0], [111.0, 20.0], [111.0, 21.0], [110.0, 20.0]]]],
}


def _pull(store: ClientStore, scope: str, cursor: int, changes: list[RecordChange]) -> None:
    store.apply_pull(PullResponse(scopes=[ScopePage(scope=scope, cursor=cursor, changes=changes)]))
    store.finish_pull()


def _alert(n: int, clock: ManualClock, **values: Any) -> RecordChange:
    fields = {
        "status": "Actual",
        "msg_type": "Alert",
        "color": "yellow",
        "sent": rfc3339(clock() - timedelta(minutes=n)),
        "expires": rfc3339(clock() + timedelta(hours=6)),
        "texts": {
            "zh-CN": {"event": "暴雨", "headline": f"暴雨黄色预警 {n}"},
            "en-US": {"event": "Rainstorm", "headline": f"Rainstorm yellow {n}"},
        },
        "area": SQUARE,
        **values,
    }
    return RecordChange(entity="alert", id=uuid.UUID(int=n), version=1, fields=fields)


def test_active_alerts_for_where_i_am(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "store.db"
    store = ClientStore(path, device_id="d")
    _pull(
        store,
        "refarea:x",
        5,
        [
            _alert(1, clock),
            _alert(2, clock, color="red"),
            _alert(3, clock, status="Exercise", color="blue"),
            _alert(4, clock, expires=rfc3339(clock() - timedelta(seconds=1))),
            _alert(5, clock, area=ELSEWHERE),
            _alert(6, clock, texts={"zh-CN": {"headline": "只有中文"}}),
        ],
    )
    views = Views(path, Me("u"), now=clock)
    here = (121.5, 31.5)
    shown = views.alerts(lang="en", at=here)
    assert [a.id.int for a in shown] == [2, 1, 6, 3]  # red first; expired and elsewhere gone
    assert shown[1].headline == "Rainstorm yellow 1" and shown[2].headline == "只有中文"
    assert [a.drill for a in shown] == [False, False, False, True]
    assert views.alerts()[0].headline == "暴雨黄色预警 2"  # Chinese by default; no fix: all held
    assert {a.id.int for a in views.alerts(at=here, include_elsewhere=True)} == {1, 2, 3, 5, 6}

    # An Update replaces the warning's values (same record); a Cancel deletes the record.
    _pull(
        store,
        "refarea:x",
        7,
        [
            RecordChange(
                entity="alert",
                id=uuid.UUID(int=1),
                version=2,
                fields={"msg_type": "Update", "color": "orange"},
            ),
            RecordChange(entity="alert", id=uuid.UUID(int=2), version=2, deleted=True),
        ],
    )
    shown = views.alerts(lang="en", at=here)
    assert [(a.id.int, a.color) for a in shown] == [(1, "orange"), (6, "yellow"), (3, "blue")]
    clock.advance(7 * 3600)  # everything expired
    assert views.alerts(at=here) == []
    views.close()
    store.close()


def test_point_in_area_excludes_holes() -> None:
    holed = {
        "type": "Polygon",
        "coordinates": [
            SQUARE["coordinates"][0],
            [[121.4, 31.4], [121.6, 31.4], [121.6, 31.6], [121.4, 31.6], [121.4, 31.4]],
        ],
    }
    assert in_area(SQUARE, 121.5, 31.5) and not in_area(holed, 121.5, 31.5)
    assert in_area(holed, 121.1, 31.1) and not in_area(SQUARE, 120.9, 31.5)
    assert not in_area(None, 0, 0)


def test_plans_my_unit_takes_part_in(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = ClientStore(path, device_id="d")

    def plan(n: int, version: int, kinds: list[str], **values: Any) -> RecordChange:
        templates = [{"key": k, "unit_kind": k, "title": f"{k} part"} for k in kinds]
        fields = {
            "code": f"plan-{n}",
            "version": version,
            "name": f"Plan {n} v{version}",
            "incident_type": "fire",
            "min_level": n,
            "active": True,
            "templates": templates,
            **values,
        }
        return RecordChange(
            entity="plan", id=uuid.UUID(int=n * 10 + version), version=1, fields=fields
        )

    _pull(
        store,
        "plankind:fire",
        3,
        [plan(2, 1, ["fire", "ems"]), plan(2, 2, ["fire", "police"]), plan(1, 1, ["fire"])],
    )
    _pull(store, "plankind:x", 1, [plan(3, 1, ["fire"], active=False)])
    views = Views(path, Me("u", "unit", "responder"))
    assert views.unit_kinds() == {"fire", "x"}
    shown = views.plans()
    assert [(p.record["code"], p.record["version"]) for p in shown] == [
        ("plan-1", 1),
        ("plan-2", 2),
    ]
    assert [t["unit_kind"] for t in shown[1].mine] == ["fire"]  # my unit's part only
    assert views.plans(incident_type="flood") == []
    views.close()
    store.close()


def test_self_checks_of_the_week_from_the_servers_check_due_rows(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "store.db"
    store = ClientStore(path, device_id="d")
    week = iso_week(clock())
    ent, other = str(uuid.UUID(int=501)), str(uuid.UUID(int=502))
    tpl = [
        RecordChange(
            entity="check_template",
            id=uuid.UUID(int=600 + n),
            version=1,
            fields={"code": f"t{n}", "active": True, "items": [{"id": "i1", "text": "exits"}]},
        )
        for n in range(3)
    ]
    _pull(store, "ref", 3, tpl)
    views = Views(path, Me("u", None, "enterprise_staff"), now=clock)
    _pull(store, f"enterprise:{ent}", 1, [])
    # An older server sends no check_due: every active template is due for my enterprise.
    assert len(views.checks_this_week().due) == 3

    def due(n: int, status: str, template: int, week_: str = week) -> RecordChange:
        fields = {"enterprise_id": ent, "template_id": str(uuid.UUID(int=600 + template))}
        fields |= {"week": week_, "status": status}
        return RecordChange(entity="check_due", id=uuid.UUID(int=700 + n), version=1, fields=fields)

    _pull(
        store,
        f"enterprise:{ent}",
        5,
        [due(0, "due", 0), due(1, "missed", 1), due(2, "done", 2), due(3, "due", 2, "2026-W01")],
    )
    got = views.checks_this_week()
    assert [(e, t["code"]) for e, t in got.due] == [(ent, "t0")]
    assert [(e, t["code"]) for e, t in got.missed] == [(ent, "t1")]
    assert len(got.records) == 3 and got.week == week
    # A queued submission of this phone counts at once.
    store.write(
        "check_submission",
        uuid.uuid4(),
        {"enterprise_id": ent, "template_id": str(uuid.UUID(int=600)), "week": week, "results": []},
        op=Op.CREATE,
    )
    got = views.checks_this_week()
    assert got.due == [] and len(got.done) == 1
    assert other not in {e for e, _ in got.missed}
    views.close()
    store.close()


def test_a_self_check_is_done_per_template_code_as_on_the_server(tmp_path: Path) -> None:
    """The server takes one check per enterprise, template code and week (a version published
    mid-week is the same checklist: a second submission is refused `week_taken`); the phone
    counts the same way, and fills a due check in on the code's active version."""
    clock = ManualClock()
    path = tmp_path / "store.db"
    store = ClientStore(path, device_id="d")
    week = iso_week(clock())
    ent = str(uuid.UUID(int=501))
    v1, v2, other = (uuid.UUID(int=n) for n in (600, 601, 602))

    def template(tid: uuid.UUID, code: str, version: int, active: bool) -> RecordChange:
        fields = {"code": code, "version": version, "active": active, "items": []}
        return RecordChange(entity="check_template", id=tid, version=1, fields=fields)

    _pull(store, "ref", 1, [template(v1, "fire", 1, True), template(other, "gas", 1, True)])
    views = Views(path, Me("u", None, "enterprise_staff"), now=clock)
    _pull(store, f"enterprise:{ent}", 1, [])
    store.write(
        "check_submission",
        uuid.uuid4(),
        {"enterprise_id": ent, "template_id": str(v1), "week": week, "results": []},
        op=Op.CREATE,
    )
    # Version 2 of "fire" is published mid-week (version 1 retired): still done this week.
    _pull(store, "ref", 2, [template(v1, "fire", 1, False), template(v2, "fire", 2, True)])
    assert [t["code"] for _, t in views.checks_this_week().due] == ["gas"]

    # With the server's rows: a week's row made before version 2 names version 1; it is due on
    # version 2 (what the phone offers), and done by a submission of either version.
    row = {"enterprise_id": ent, "template_id": str(v1), "template_code": "fire", "week": week}
    row["status"] = "due"
    due = RecordChange(entity="check_due", id=uuid.UUID(int=700), version=1, fields=row)
    _pull(store, f"enterprise:{ent}", 2, [due])
    assert views.checks_this_week().due == []  # my queued submission of version 1 covers it
    views.close()
    store.close()

    fresh = tmp_path / "fresh.db"
    store = ClientStore(fresh, device_id="d2")
    _pull(store, "ref", 1, [template(v1, "fire", 1, False), template(v2, "fire", 2, True)])
    _pull(store, f"enterprise:{ent}", 1, [due])
    views = Views(fresh, Me("u", None, "enterprise_staff"), now=clock)
    [(enterprise, tpl)] = views.checks_this_week().due
    assert enterprise == ent and tpl["id"] == str(v2)
    views.close()
    store.close()
