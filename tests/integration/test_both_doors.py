"""One door for every write, proven as Zulip proves its events: each field action runs once
through the REST API and once through sync (the phone's real store, `SyncClient` and
`HttpTransport`), from the same starting state, on both databases; the resulting rows,
timeline, audit entries and push jobs must be the same. Each bad input must be refused on both
doors by the same rule: the REST problem's `type` ends in the sync refusal's `rule`.

A case prepares its starting state through REST (fresh records each time), then acts. What is
compared is normalized: the ids of the records a run made and of the step it took are replaced
by placeholders, and server clock times are dropped (the phone's own `at` is kept and
compared)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.sync import Op
from server.models import PushJobRow
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db, register_device, tasks_of
from tests.integration.sync_helpers import Phone
from tests.integration.test_media_api import photo, sha, upload

AT = "2026-11-20T08:30:00Z"  # the phone's clock at the step: kept on both doors
WEEKS = {"rest": f.week(-1), "sync": f.week()}  # one submission per week: one each
# Server clock times (the phone's `at` is compared; see `_norm`).
VOLATILE = {
    "created_at",
    "updated_at",
    "distance_m",
    "dispatched_at",
    "accept_by",
    "stored_at",
    "submitted_at",
}


@dataclass
class Run:
    """One door's run of a case: the client, the users' headers and what the case made."""

    client: TestClient[Any]
    auth: Sessions
    door: str
    ids: dict[str, str] = field(default_factory=dict)
    step_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Action:
    """A field action as both doors spell it."""

    actor: str
    rest: tuple[str, str, dict[str, Any]]  # method, path, body
    entity: str  # the sync entity
    op: Op
    record_id: str
    fields: dict[str, Any]


@dataclass
class Case:
    name: str
    prepare: Callable[[Run], None]
    act: Callable[[Run], Action]
    observe: Callable[[Run], dict[str, Any]]
    refused: str = ""  # the rule both doors must name; "" when the action succeeds


# ------------------------------------------------------------------------------ starting states


def _ok(r: Any) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def hazard_at(status: str) -> Callable[[Run], None]:
    """A hazard reported by inspector1 in grid A, moved through REST to `status`."""
    path = {
        "reported": [],
        "verified": ["verified"],
        "rectification_assigned": ["verified", "rectification_assigned"],
        "rectified": ["verified", "rectification_assigned", "rectified"],
        "reinspected": ["verified", "rectification_assigned", "rectified", "reinspected"],
    }[status]

    def prepare(run: Run) -> None:
        c, a = run.client, run.auth
        body = f.hazard(description="blocked fire exit, both doors")
        run.ids["hazard"] = _ok(c.post("/api/v1/hazards", headers=a("inspector1"), json=body))["id"]
        for to in path:
            who, extra = {
                "verified": ("dispatcher", {}),
                "rectification_assigned": ("dispatcher", _assignment()),
                "rectified": ("fire1", {"photo_sha256": [_proof(run)]}),
                "reinspected": ("inspector1", {}),
            }[to]
            _ok(
                c.post(
                    f"/api/v1/hazards/{run.ids['hazard']}/transitions",
                    headers=a(who),
                    json={"to_status": to, **extra},
                )
            )

    return prepare


def _deadline() -> str:
    return (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()


_DEADLINE = _deadline()


def _assignment() -> dict[str, Any]:
    return {"assignee_org_id": str(f.did("org:fire")), "deadline": _DEADLINE}


def _proof(run: Run) -> str:
    """An after-photo, uploaded by the rectifying unit (the same bytes on both doors)."""
    data = photo(taken="2026:11:20 16:20:00")
    assert upload(run.client, run.auth("fire1"), data).status_code in (200, 201)
    return sha(data)


def _photo_id(run: Run, who: str) -> str:
    data = photo(taken="2026:11:20 16:25:00", size=(320, 240))
    r = run.client.post("/api/v1/media", headers=run.auth(who), json={"sha256": sha(data)})
    return str(_ok(r)["id"])


def task_at(status: str, *, plan: bool = False) -> Callable[[Run], None]:
    """A task of fire1's unit (or a plan task of a hazmat incident), moved to `status`."""
    path = {"assigned": [], "accepted": ["accepted"], "en_route": ["accepted", "en_route"]}
    path["on_scene"] = [*path["en_route"], "on_scene"]

    def prepare(run: Run) -> None:
        c, d = run.client, run.auth("dispatcher")
        # Everyone the action may push to has a device (push jobs are per device).
        for who in ("fire1", "fire2", "dispatcher"):
            register_device(c, run.auth(who), f"{who}-{run.door}")
        if plan:
            body = f.incident(type="hazmat_leak", level=2, title="化工品泄漏 both doors")
            inc = _ok(c.post("/api/v1/incidents", headers=d, json=body))
            run.ids["incident"] = inc["id"]
            fire = [t for t in tasks_of(c, d, inc["id"]) if t["template_key"] == "fire"]
            run.ids["task"] = fire[0]["id"]
        else:
            task = _ok(c.post("/api/v1/tasks", headers=d, json=f.task(title="both doors")))
            run.ids["task"] = task["id"]
        for to in path[status]:
            r = c.post(
                f"/api/v1/tasks/{run.ids['task']}/transitions",
                headers=run.auth("fire1"),
                json={"to_status": to},
            )
            _ok(r)

    return prepare


def nothing(run: Run) -> None:
    """No starting state beyond the demo data."""


# ------------------------------------------------------------------------------ actions


def hazard_step(to: str, who: str, **extra: Any) -> Callable[[Run], Action]:
    def act(run: Run) -> Action:
        body: dict[str, Any] = {"to_status": to, "at": AT, "id": run.step_id}
        for k, v in extra.items():
            body[k] = v(run) if callable(v) else v
        hid = run.ids["hazard"]
        return Action(
            who,
            ("POST", f"/api/v1/hazards/{hid}/transitions", body),
            "hazard_step",
            Op.CREATE,
            run.step_id,
            {**{k: v for k, v in body.items() if k != "id"}, "hazard_id": hid},
        )

    return act


def task_step(to: str | None, who: str = "fire1", **extra: Any) -> Callable[[Run], Action]:
    def act(run: Run) -> Action:
        body: dict[str, Any] = {"at": AT, "id": run.step_id}
        for k, v in extra.items():
            body[k] = v(run) if callable(v) else v
        if to is not None:
            body["to_status"] = to
        tid = run.ids["task"]
        path = f"/api/v1/tasks/{tid}/{'transitions' if to else 'notes'}"
        fields = {**{k: v for k, v in body.items() if k != "id"}, "task_id": tid}
        return Action(who, ("POST", path, body), "task_step", Op.CREATE, run.step_id, fields)

    return act


def report(run: Run) -> Action:
    rid = str(uuid.uuid4())
    run.ids["hazard"] = rid
    body = f.hazard(
        description="gas cylinders in the stairwell",
        severity="medium",
        reported_at=AT,
        photo_ids=[_photo_id(run, "inspector1")],
        # Named by hash only, as an offline phone can: declared (pending) by the report.
        photo_sha256=[sha(photo(taken="2026:11:20 16:26:00", size=(200, 150)))],
    )
    return Action(
        "inspector1",
        ("POST", "/api/v1/hazards", {**body, "id": rid}),
        "hazard",
        Op.CREATE,
        rid,
        body,
    )


def self_check(run: Run) -> Action:
    c, who = run.client, run.auth("enterprise1")
    tpl = _ok(c.get(f"/api/v1/check-templates/{f.did('check:weekly')}", headers=who))
    results = [
        {"item_id": i["id"], "result": "fail" if n == 0 else "pass", "note": f"item {n}"}
        for n, i in enumerate(tpl["items"])
    ]
    rid = str(uuid.uuid4())
    run.ids["submission"] = rid
    run.ids["week"] = WEEKS[run.door]
    body = {"template_id": tpl["id"], "week": WEEKS[run.door], "results": results}
    return Action(
        "enterprise1",
        ("POST", "/api/v1/check-submissions", {**body, "id": rid}),
        "check_submission",
        Op.CREATE,
        rid,
        body,
    )


def position(run: Run) -> Action:
    body = {"location": f.point(121.4861, 31.2381), "accuracy_m": 4.5, "at": AT}
    return Action(
        "fire1", ("POST", "/api/v1/positions", body), "position_fix", Op.CREATE, run.step_id, body
    )


# ------------------------------------------------------------------------------ observations


def _norm(run: Run, value: Any) -> Any:
    """Replace this run's ids with placeholders and drop server clock times."""
    names = {v: f"<{k}>" for k, v in run.ids.items()}
    names[run.step_id] = "<step>"
    if isinstance(value, dict):
        return {
            k: "<id>" if k == "id" and v not in names else _norm(run, v)
            for k, v in value.items()
            if k not in VOLATILE and not (k == "at" and v != AT)  # server clock: not compared
        }
    if isinstance(value, list):
        return [_norm(run, v) for v in value]
    if isinstance(value, str):
        return names.get(value, value)
    return value


def _audit(run: Run, entity_id: str) -> list[Any]:
    r = run.client.get(
        "/api/v1/audit", headers=run.auth("admin"), params={"entity_id": entity_id, "limit": 50}
    )
    return [
        _norm(run, {"action": e["action"], "actor": e["actor_id"], "detail": e["detail"]})
        for e in reversed(_ok_list(r))
    ]


def _ok_list(r: Any) -> list[Any]:
    assert r.status_code == 200, r.text
    return list(r.json())


def _push_jobs(run: Run, needle: str) -> list[Any]:
    async def q(s: AsyncSession) -> list[tuple[Any, str]]:
        stmt = select(PushJobRow.user_id, PushJobRow.message).where(
            PushJobRow.message.contains(needle)
        )
        return [(u, m) for u, m in (await s.execute(stmt)).all()]

    out = set()  # per user and kind: each user may hold several devices (a job per device)
    for user, message in in_db(run.client.app.state.settings.database_url, q):
        data = json.loads(message).get("data", {})
        out.add((str(user), data.get("kind"), _norm(run, data.get("status"))))
    return sorted(out)


def hazard_view(run: Run) -> dict[str, Any]:
    c, d, hid = run.client, run.auth("dispatcher"), run.ids["hazard"]
    row = _ok(c.get(f"/api/v1/hazards/{hid}", headers=d))
    for n, p in enumerate(row.get("photos", [])):
        p.pop("time_offset_s", None)
        # Each run takes its own photos: compare them by their place in the list.
        run.ids[f"photo{n}"], run.ids[f"photo{n}-sha"] = p["media_id"], p["sha256"]
    timeline = _ok_list(c.get(f"/api/v1/hazards/{hid}/timeline", headers=d))
    return {
        "row": _norm(run, row),
        "timeline": _norm(run, timeline),
        "audit": _audit(run, hid),
        "push": _push_jobs(run, hid),
    }


def task_view(run: Run) -> dict[str, Any]:
    c, d, tid = run.client, run.auth("dispatcher"), run.ids["task"]
    row = _ok(c.get(f"/api/v1/tasks/{tid}", headers=d))
    row.pop("deadline")  # a plan task's: the server's clock plus the template's offset
    timeline = _ok_list(c.get(f"/api/v1/tasks/{tid}/timeline", headers=d))
    for e in timeline:
        for n, pid in enumerate(e.get("photo_ids") or []):
            run.ids[f"photo{n}"] = pid
        e.pop("device_id", None)  # the device's name: its login's on both doors, not compared
        if e["at"] != AT:
            e.pop("at")  # the server's own steps (dispatch, pass-on): its clock
    return {
        "row": _norm(run, row),
        "timeline": _norm(run, timeline),
        "audit": _audit(run, tid),
        "push": _push_jobs(run, tid),
        "position": position_view(run)["position"],
    }


def fix_view(run: Run) -> dict[str, Any]:
    """After a position fix: the responder is on dispatch's map where the phone said."""
    seen = position_view(run)
    assert [p["location"]["coordinates"] for p in seen["position"]] == [[121.4861, 31.2381]]
    return seen


def position_view(run: Run) -> dict[str, Any]:
    units = _ok_list(run.client.get("/api/v1/units/positions", headers=run.auth("dispatcher")))
    me = str(f.did("user:fire1"))
    found = [
        {k: v for k, v in p.items() if k in ("location", "accuracy_m", "at", "current_task_id")}
        for u in units
        for p in u.get("responders", [])
        if p.get("user_id") == me
    ]
    return {"position": _norm(run, found)}


def submission_view(run: Run) -> dict[str, Any]:
    c, sid = run.client, run.ids["submission"]
    row = _ok(c.get(f"/api/v1/check-submissions/{sid}", headers=run.auth("dispatcher")))
    return {"row": _norm(run, row), "audit": _audit(run, sid)}


# ------------------------------------------------------------------------------ the cases

CASES = [
    Case("hazard report", nothing, report, hazard_view),
    Case(
        "hazard verify", hazard_at("reported"), hazard_step("verified", "dispatcher"), hazard_view
    ),
    Case(
        "hazard reject",
        hazard_at("reported"),
        hazard_step("rejected", "dispatcher", note="duplicate of an earlier report"),
        hazard_view,
    ),
    Case(
        "hazard reject without reason",
        hazard_at("reported"),
        hazard_step("rejected", "dispatcher"),
        hazard_view,
        refused="reason_required",
    ),
    Case(
        "hazard verify by a responder",
        hazard_at("reported"),
        hazard_step("verified", "fire1"),
        hazard_view,
        refused="forbidden",
    ),
    Case(
        "hazard assign rectification",
        hazard_at("verified"),
        hazard_step("rectification_assigned", "dispatcher", **_assignment()),
        hazard_view,
    ),
    Case(
        "hazard rectified with after-photos",
        hazard_at("rectification_assigned"),
        hazard_step("rectified", "fire1", photo_sha256=lambda run: [_proof(run)]),
        hazard_view,
    ),
    Case(
        "hazard rectified without photos",
        hazard_at("rectification_assigned"),
        hazard_step("rectified", "fire1"),
        hazard_view,
        refused="evidence_required",
    ),
    Case(
        "hazard re-inspect",
        hazard_at("rectified"),
        hazard_step("reinspected", "inspector1"),
        hazard_view,
    ),
    Case(
        "hazard close", hazard_at("reinspected"), hazard_step("closed", "inspector1"), hazard_view
    ),
    Case(
        "hazard reopen",
        hazard_at("reinspected"),
        hazard_step("reopened", "inspector1", note="the exit is blocked again"),
        hazard_view,
    ),
    Case(
        "task accept",
        task_at("assigned"),
        task_step("accepted", location=f.point(121.4801, 31.2301), accuracy_m=6.0),
        task_view,
    ),
    Case("task en route", task_at("accepted"), task_step("en_route"), task_view),
    Case("task on scene", task_at("en_route"), task_step("on_scene"), task_view),
    Case(
        "task complete with a photo",
        task_at("on_scene"),
        task_step("completed", note="fire out", photo_ids=lambda run: [_photo_id(run, "fire1")]),
        task_view,
    ),
    Case(
        "task complete from assigned",
        task_at("assigned"),
        task_step("completed"),
        task_view,
        refused="illegal_transition",
    ),
    Case(
        "task decline with a reason passes it on",
        task_at("assigned", plan=True),
        task_step("declined", note="engine in repair"),
        task_view,
    ),
    Case(
        "task decline without a reason",
        task_at("assigned", plan=True),
        task_step("declined"),
        task_view,
        refused="reason_required",
    ),
    Case(
        "task progress note",
        task_at("on_scene"),
        task_step(
            None, note="two floors searched", location=f.point(121.4803, 31.2302), accuracy_m=5.0
        ),
        task_view,
    ),
    Case("self-check with a failed item", nothing, self_check, submission_view),
    Case("position fix", nothing, position, fix_view),
]


def _through_rest(run: Run, action: Action) -> dict[str, Any] | None:
    method, path, body = action.rest
    r = run.client.request(method, path, headers=run.auth(action.actor), json=body)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        return dict(r.json())
    return None


def _through_sync(run: Run, action: Action) -> dict[str, Any] | None:
    phone = Phone(run.client, run.auth(action.actor))
    try:
        phone.store.write(action.entity, uuid.UUID(action.record_id), action.fields, op=action.op)
        phone.sync()
        assert phone.store.pending_count() == 0, "the outbox must be empty after a sync"
        refused = phone.store.log_entries("refused")
        if refused:
            return {"rule": refused[-1].detail["rule"], "code": refused[-1].code}
        return None
    finally:
        phone.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rest_and_sync_do_the_same(case: Case, client: TestClient[Any], auth: Sessions) -> None:
    seen: dict[str, dict[str, Any]] = {}
    refusals: dict[str, dict[str, Any] | None] = {}
    for door, through in (("rest", _through_rest), ("sync", _through_sync)):
        run = Run(client, auth, door)
        case.prepare(run)
        action = case.act(run)
        before = case.observe(run) if case.refused and door == "sync" else None
        refusals[door] = through(run, action)
        seen[door] = case.observe(run)
        if before is not None:
            assert seen[door] == before, "a refused action must leave nothing behind"
    if case.refused:
        rest, sync = refusals["rest"], refusals["sync"]
        assert rest is not None and rest["type"].endswith(f"/{case.refused}"), rest
        assert sync is not None and sync["rule"] == case.refused, sync
    else:
        assert refusals == {"rest": None, "sync": None}, refusals
    assert seen["rest"].keys() == seen["sync"].keys()
    for key, rest_view in seen["rest"].items():
        assert rest_view == seen["sync"][key], f"{key}\nREST {rest_view}\nSYNC {seen['sync'][key]}"


def test_a_step_sent_twice_is_taken_once_on_both_doors(
    client: TestClient[Any], auth: Sessions
) -> None:
    """The step id makes a step idempotent across doors: a phone whose REST call timed out and
    that then syncs the same step (or the reverse) records one timeline entry."""
    run = Run(client, auth, "rest")
    task_at("assigned")(run)
    action = task_step("accepted")(run)
    assert _through_rest(run, action) is None
    assert _through_sync(run, action) is None
    again = client.post(action.rest[1], headers=auth("fire1"), json=action.rest[2])
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    timeline = _ok_list(
        client.get(f"/api/v1/tasks/{run.ids['task']}/timeline", headers=auth("dispatcher"))
    )
    assert [e["id"] for e in timeline].count(run.step_id) == 1
    assert sorted(e["to_status"] for e in timeline) == ["accepted", "assigned"]
