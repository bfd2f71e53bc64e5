"""Sync endpoints on the real app and both databases: formats, exactly-once, refusals, the
REST bridge both ways, scope eviction, upgrade answers, conflicts, and "pull now" latency."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from schemas.sync import (
    SCHEMA_VERSION,
    AckStatus,
    ExchangeRequest,
    ExchangeResponse,
    Mutation,
    Op,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    Reason,
    UpgradeRequired,
)
from server.app import create_app
from server.config import Settings
from server.demo import did
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.sync_helpers import Phone, post, pull_everything, statements
from tests.servers import serve_in_thread


def hlc() -> int:
    return int(time.time() * 1000) << 16


def new_hazard_fields(**kw: Any) -> dict[str, Any]:
    body = f.hazard()
    body["description"] = "Exit blocked by boxes"
    body.update(kw)
    return body


def push(
    client: TestClient[Any],
    h: dict[str, str],
    device: str,
    muts: list[Mutation],
    **kw: Any,
) -> PushResponse:
    status, reply, _ = post(
        client,
        "push",
        h,
        PushRequest(schema_version=SCHEMA_VERSION, device_id=device, mutations=muts),
        **kw,
    )
    assert status == 200, reply
    assert isinstance(reply, PushResponse)
    return reply


def test_push_pull_roundtrip_in_msgpack_json_and_gzip(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp, d = auth("inspector1"), auth("dispatcher")
    rid = uuid.uuid4()
    m = Mutation(
        seq=1, entity="hazard", id=rid, hlc=hlc(), op=Op.CREATE, fields=new_hazard_fields()
    )
    reply = push(client, insp, f"dev-{rid}", [m])
    assert reply.acks[0].status is AckStatus.ACCEPTED, reply.acks
    assert reply.acks[0].version > 0
    for fmt, gz in (("msgpack", False), ("json", False), ("json", True), ("msgpack", True)):
        records, _ = pull_everything(client, d, fmt=fmt, gz=gz)
        got = records[("hazard", rid)]
        assert got["description"] == "Exit blocked by boxes"
        assert got["status"] == "reported" and got["timeline"][0]["to"] == "reported"
        assert got["grid_id"] == str(f.did("grid:A"))  # server-owned, from the location
        assert got["reporter_id"] == str(f.did("user:inspector1"))
    # The pushed hazard is a real hazard for REST too.
    rest = client.get(f"/api/v1/hazards/{rid}", headers=d)
    assert rest.status_code == 200, rest.text
    assert rest.json()["description"] == "Exit blocked by boxes"
    # A gzip answer is really compressed on the wire.
    status, _, headers = post(
        client,
        "pull",
        d,
        PullRequest(schema_version=SCHEMA_VERSION, cursors={}),
        fmt="json",
        gz=True,
    )
    assert status == 200 and headers.get("content-encoding") == "gzip"


def test_retried_push_changes_nothing(client: TestClient[Any], auth: Sessions) -> None:
    insp = auth("inspector1")
    rid = uuid.uuid4()
    muts = [
        Mutation(
            seq=1, entity="hazard", id=rid, hlc=hlc(), op=Op.CREATE, fields=new_hazard_fields()
        ),
        Mutation(seq=2, entity="hazard", id=rid, hlc=hlc() + 5, fields={"severity": "low"}),
    ]
    first = push(client, insp, f"dev-{rid}", muts)
    records_before, _ = pull_everything(client, insp)
    again = push(client, insp, f"dev-{rid}", muts)
    assert [a.status for a in again.acks] == [AckStatus.DUPLICATE, AckStatus.DUPLICATE]
    assert [a.version for a in again.acks] == [a.version for a in first.acks]
    records_after, _ = pull_everything(client, insp)
    assert records_after[("hazard", rid)] == records_before[("hazard", rid)]
    assert records_after[("hazard", rid)]["severity"] == "low"


def test_refused_mutations_get_typed_reasons_and_never_block(
    client: TestClient[Any], auth: Sessions
) -> None:
    d, fire = auth("dispatcher"), auth("fire1")
    inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()
    task = client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=inc["id"])).json()
    police = client.post("/api/v1/tasks", headers=d, json=f.task(unit="police")).json()
    tid, pid = uuid.UUID(task["id"]), uuid.UUID(police["id"])
    dev = f"dev-{tid}"
    h = hlc()

    def step(seq: int, task: uuid.UUID, **fields: Any) -> Mutation:
        fields["task_id"] = str(task)
        return Mutation(
            seq=seq, entity="task_step", id=uuid.uuid4(), hlc=h, op=Op.CREATE, fields=fields
        )

    muts = [
        step(1, tid, to_status="completed"),
        Mutation(seq=2, entity="incident", id=uuid.UUID(inc["id"]), hlc=h, fields={"title": "x"}),
        Mutation(seq=3, entity="task", id=tid, hlc=h, fields={"title": "mine now"}),
        step(4, pid, to_status="accepted"),  # the police's task: not even visible to fire
        Mutation(
            seq=5, entity="hazard", id=uuid.uuid4(), hlc=h, op=Op.CREATE, fields={"severity": 3}
        ),
        Mutation(
            seq=6, entity="task", id=tid, hlc=h, fields={"created_at": "2024-01-01T00:00:00Z"}
        ),
        step(7, tid, to_status="accepted", note="on my way"),
    ]
    reply = push(client, fire, dev, muts)
    codes = [a.refusal.code if a.refusal else a.status for a in reply.acks]
    assert codes == [
        Reason.ILLEGAL_TRANSITION,
        Reason.READ_ONLY,
        Reason.RULE,
        Reason.NOT_FOUND,
        Reason.INVALID_VALUE,
        Reason.SERVER_OWNED,
        AckStatus.ACCEPTED,
    ]
    rules = [a.refusal.rule if a.refusal else "" for a in reply.acks]
    assert rules[0] == "illegal_transition" and rules[2] == "use_task_step"
    # The accepted one went through the task's state machine into the domain and its timeline.
    assert client.get(f"/api/v1/tasks/{tid}", headers=d).json()["status"] == "accepted"
    timeline = client.get(f"/api/v1/tasks/{tid}/timeline", headers=d).json()
    assert [e["to_status"] for e in timeline] == ["assigned", "accepted"]
    assert timeline[-1]["note"] == "on my way"
    # A retry answers the same refusals (a lost answer never turns a refusal into silence).
    again = push(client, fire, dev, muts)
    again_codes = [a.refusal.code if a.refusal else a.status for a in again.acks]
    assert again_codes == [*codes[:6], AckStatus.DUPLICATE]


def test_rest_write_appears_in_next_pull_and_reassignment_evicts(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    phone = Phone(client, auth("fire1"))
    try:
        phone.sync()
        inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()
        task = client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=inc["id"])).json()
        result = phone.sync()
        got = phone.get("task", task["id"])
        assert got is not None and got["status"] == "assigned" and got["title"] == task["title"]
        assert phone.get("incident", inc["id"]) is not None  # incidents of the unit's tasks
        assert any(i.get("to") == "assigned" for i in got["timeline"])
        # A REST edit shows up as a delta.
        client.patch(f"/api/v1/tasks/{task['id']}", headers=d, json={"title": "moved"})
        phone.sync()
        assert phone.get("task", task["id"])["title"] == "moved"  # type: ignore[index]
        # Reassigned to police: the task and its incident leave the fire phone.
        r = client.patch(
            f"/api/v1/tasks/{task['id']}",
            headers=d,
            json={"assignee_unit_id": str(f.did("org:police"))},
        )
        assert r.status_code == 200, r.text
        result = phone.sync()
        assert phone.get("task", task["id"]) is None
        assert phone.get("incident", inc["id"]) is None
        assert sum(result.evicted.values()) >= 1
        police = Phone(client, auth("police1"))
        police.sync()
        assert police.get("task", task["id"]) is not None
        police.close()
    finally:
        phone.close()


def test_old_schema_version_gets_upgrade_answer(client: TestClient[Any], auth: Sessions) -> None:
    h = auth("fire1")
    old_push = PushRequest(schema_version=SCHEMA_VERSION - 1, device_id="old", mutations=[])
    old_pull = PullRequest(schema_version=SCHEMA_VERSION - 1, cursors={})
    for path, msg in (
        ("push", old_push),
        ("pull", old_pull),
        ("exchange", ExchangeRequest(push=old_push, pull=old_pull)),
    ):
        for fmt in ("msgpack", "json"):
            status, reply, _ = post(client, path, h, msg, fmt=fmt)
            assert status == 426
            assert isinstance(reply, UpgradeRequired) and reply.min_version == SCHEMA_VERSION


def test_exchange_is_a_push_then_a_pull_in_one_round_trip(
    client: TestClient[Any], auth: Sessions
) -> None:
    """The phone's round with edits is one request; what it pushed is in the pull's answer,
    the same as a device that pushed and then pulled sees; a second device agrees."""
    h = auth("inspector1")
    phone = Phone(client, h)
    try:
        ids = [uuid.uuid4() for _ in range(3)]
        for rid in ids:
            phone.store.write("hazard", rid, new_hazard_fields(), op=Op.CREATE)
        before = phone.transport.requests
        result = phone.sync()
        assert phone.transport.requests - before == 1 and result.accepted == 3
        assert all(phone.get("hazard", rid) is not None for rid in ids)
        assert phone.store.pending_count() == 0
        records, _ = pull_everything(client, h)
        mine = {rid: rec for (entity, rid), rec in records.items() if entity == "hazard"}
        assert set(ids) <= set(mine)
        # The raw answer: the push's acks and the pull's pages, in JSON too.
        m = Mutation(
            seq=1, entity="hazard", id=uuid.uuid4(), op=Op.CREATE, hlc=hlc(),
            fields=new_hazard_fields(),
        )  # fmt: skip
        msg = ExchangeRequest(
            push=PushRequest(schema_version=SCHEMA_VERSION, device_id="raw-x", mutations=[m]),
            pull=PullRequest(schema_version=SCHEMA_VERSION, device_id="raw-x", cursors={}),
        )
        status, reply, _ = post(client, "exchange", h, msg, fmt="json")
        assert status == 200 and isinstance(reply, ExchangeResponse)
        assert [a.status for a in reply.push.acks] == [AckStatus.ACCEPTED]
        pulled = {r.id for page in reply.pull.scopes for r in page.changes}
        assert m.id in pulled
        # Sent again (its answer lost): a duplicate, nothing applied twice.
        status, again, _ = post(client, "exchange", h, msg)
        assert [a.status for a in again.push.acks] == [AckStatus.DUPLICATE]
    finally:
        phone.close()


def test_sync_needs_auth_and_valid_bodies(client: TestClient[Any], auth: Sessions) -> None:
    r = client.post(
        "/api/v1/sync/pull", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401
    bad = client.post(
        "/api/v1/sync/pull",
        content=b"\x00garbage",
        headers={**auth("fire1"), "Content-Type": "application/msgpack"},
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_conflicts_listed_and_resolved_by_dispatch_denied_to_responders(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp, d = auth("inspector1"), auth("dispatcher")
    rid = uuid.uuid4()
    created = push(
        client,
        insp,
        "a",
        [
            Mutation(
                seq=1, entity="hazard", id=rid, hlc=hlc(), op=Op.CREATE, fields=new_hazard_fields()
            )
        ],
    )
    base = created.acks[0].version
    h = hlc()
    # Two devices change the severity concurrently from the same base: the later HLC wins.
    push(
        client,
        insp,
        "b",
        [
            Mutation(
                seq=1, entity="hazard", id=rid, hlc=h + 10, base=base, fields={"severity": "low"}
            )
        ],
    )
    lost = push(
        client,
        insp,
        "c",
        [
            Mutation(
                seq=1, entity="hazard", id=rid, hlc=h + 5, base=base, fields={"severity": "medium"}
            )
        ],
    )
    assert lost.acks[0].lost == ["severity"]
    assert client.get(f"/api/v1/hazards/{rid}", headers=d).json()["severity"] == "low"

    denied = client.get("/api/v1/sync/conflicts", headers=auth("fire1"))
    assert denied.status_code == 403
    # A dispatcher of another street sees neither the conflict nor a way to resolve it.
    body = f.user("dispatcher", "command", area_id=str(did("area:yuyuan")))
    assert client.post("/api/v1/users", headers=auth("admin"), json=body).status_code == 201
    elsewhere = auth(body["username"], body["password"])
    assert client.get("/api/v1/sync/conflicts", headers=elsewhere).json() == []
    listed = client.get(f"/api/v1/sync/conflicts?record_id={rid}", headers=d)
    assert listed.status_code == 200, listed.text
    [conflict] = listed.json()
    assert conflict["loser_value"] == "medium" and conflict["winner_value"] == "low"
    assert (
        client.post(
            f"/api/v1/sync/conflicts/{conflict['id']}/resolve",
            headers=auth("fire1"),
            json={"take": "loser"},
        ).status_code
        == 403
    )
    away = client.post(
        f"/api/v1/sync/conflicts/{conflict['id']}/resolve",
        headers=elsewhere,
        json={"take": "loser"},
    )
    assert away.status_code == 404, away.text
    assert client.get(f"/api/v1/sync/conflicts?record_id={rid}", headers=auth("admin")).json()
    phone = Phone(client, insp)
    try:
        phone.sync()
        assert phone.get("hazard", rid)["severity"] == "low"  # type: ignore[index]
        r = client.post(
            f"/api/v1/sync/conflicts/{conflict['id']}/resolve", headers=d, json={"take": "loser"}
        )
        assert r.status_code == 201, r.text
        assert r.json()["resolved"] is True
        # The resolution is a change: devices pull it, REST shows it.
        phone.sync()
        assert phone.get("hazard", rid)["severity"] == "medium"  # type: ignore[index]
        assert client.get(f"/api/v1/hazards/{rid}", headers=d).json()["severity"] == "medium"
        left = client.get(f"/api/v1/sync/conflicts?record_id={rid}", headers=d).json()
        assert left == []
    finally:
        phone.close()


async def seconds_to_pull_event(
    listening: str, writing: str, fire: dict[str, str], d: dict[str, str]
) -> float:
    """Subscribe fire1's "pull now" stream on `listening`, create a task for fire via
    `writing`, and time the commit until the `pull` event arrives."""
    async with (
        httpx.AsyncClient(base_url=listening, timeout=10) as sse,
        httpx.AsyncClient(base_url=writing, timeout=10) as http,
    ):
        async with sse.stream("GET", "/api/v1/sync/events", headers=fire) as stream:
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("event: ready"):
                    break
            # A first commit, untimed: it proves the path is live (for two servers, that the
            # listener's LISTEN connection is up) before the measured one.
            for timed in (False, True):
                t0 = time.perf_counter()
                r = await http.post("/api/v1/tasks", headers=d, json=f.task())
                assert r.status_code == 201, r.text
                async for line in lines:
                    if line.startswith("event: pull"):
                        break
                else:
                    raise AssertionError("the event stream ended without a pull event")
                if timed:
                    return time.perf_counter() - t0
    raise AssertionError("no pull event")


def test_commit_to_pull_now_event_under_one_second(
    settings: Settings, auth: Sessions, client: TestClient[Any]
) -> None:
    fire, d = auth("fire1"), auth("dispatcher")
    with serve_in_thread(create_app(settings)) as base:
        latency = asyncio.run(asyncio.wait_for(seconds_to_pull_event(base, base, fire, d), 10))
    assert latency < 1.0, latency


def test_sync_is_not_a_way_around_the_hazard_rules(client: TestClient[Any], auth: Sessions) -> None:
    """Values REST cannot read back and evidence-free hazard steps are refused, typed."""
    rid = uuid.uuid4()
    h = hlc()
    created = new_hazard_fields(enterprise_id=str(f.did("enterprise:bund-mall")))
    first = push(
        client,
        auth("inspector1"),
        "rules-1",
        [Mutation(seq=1, entity="hazard", id=rid, hlc=h, op=Op.CREATE, fields=created)],
    )
    assert first.acks[0].refusal is None, first.acks[0]
    bad = push(
        client,
        auth("enterprise1"),
        "rules-2",
        [
            Mutation(seq=1, entity="hazard", id=rid, hlc=h + 1, fields={"severity": "sa"}),
            Mutation(seq=2, entity="hazard", id=rid, hlc=h + 2, fields={"status": "verified"}),
            Mutation(seq=3, entity="hazard", id=rid, hlc=h + 3, fields={"severity": "low"}),
        ],
    )
    codes = [(a.refusal.code, a.refusal.field) if a.refusal else a.status for a in bad.acks]
    # As over REST (PATCH): only the reporter (before verification) or dispatch corrects.
    assert codes == [
        (Reason.INVALID_VALUE, "severity"),
        (Reason.RULE, "status"),
        (Reason.FORBIDDEN, ""),
    ]
    assert bad.acks[1].refusal is not None and bad.acks[1].refusal.rule == "use_hazard_step"
    mine = push(
        client,
        auth("inspector1"),
        "rules-1",
        [Mutation(seq=2, entity="hazard", id=rid, hlc=h + 4, fields={"severity": "low"})],
    )
    assert mine.acks[0].status is AckStatus.ACCEPTED, mine.acks
    got = client.get(f"/api/v1/hazards/{rid}", headers=auth("dispatcher"))
    assert got.status_code == 200
    assert (got.json()["severity"], got.json()["status"]) == ("low", "reported")


def test_pull_now_reaches_clients_of_another_server_process(
    settings: Settings, auth: Sessions, client: TestClient[Any]
) -> None:
    """Two servers on one database, each with its own broker (as two processes have): a commit
    through one wakes a device listening on the other in under a second. On PostgreSQL that is
    LISTEN/NOTIFY; SQLite deployments are one process, so there it is not expected."""
    if settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite deployments are one process; cross-process is PostgreSQL's NOTIFY")
    fire, d = auth("fire1"), auth("dispatcher")
    with serve_in_thread(create_app(settings)) as one, serve_in_thread(create_app(settings)) as two:
        latency = asyncio.run(asyncio.wait_for(seconds_to_pull_event(one, two, fire, d), 10))
    assert latency < 1.0, latency


def test_a_newer_apps_unknown_field_is_ignored_not_refused(
    client: TestClient[Any], auth: Sessions
) -> None:
    """A queued write carrying a field this server does not know yet (from a newer app) is
    applied without it, and the ack says which fields were ignored: field data is never thrown
    away for it."""
    insp = auth("inspector1")
    rid = uuid.uuid4()
    h = hlc()
    body = new_hazard_fields(smell_index=7)
    reply = push(
        client,
        insp,
        f"dev-{rid}",
        [
            Mutation(seq=1, entity="hazard", id=rid, hlc=h, op=Op.CREATE, fields=body),
            Mutation(
                seq=2, entity="hazard", id=rid, hlc=h + 1, fields={"severity": "low", "x_y": 1}
            ),
        ],
    )
    assert [a.status for a in reply.acks] == [AckStatus.ACCEPTED, AckStatus.ACCEPTED]
    assert [a.ignored for a in reply.acks] == [["smell_index"], ["x_y"]]
    got = client.get(f"/api/v1/hazards/{rid}", headers=auth("dispatcher")).json()
    assert got["severity"] == "low" and got["description"] == body["description"]


def caught_up(client: TestClient[Any], h: dict[str, str]) -> dict[str, int]:
    """The cursors of a device that pulled everything there is."""
    cursors: dict[str, int] = {}
    while True:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=300)
        status, reply, _ = post(client, "pull", h, req)
        assert status == 200 and not isinstance(reply, UpgradeRequired)
        cursors.update({p.scope: p.cursor for p in reply.scopes})
        if not reply.has_more:
            return cursors


def test_a_pull_with_nothing_new_asks_the_feed_once(
    client: TestClient[Any], auth: Sessions
) -> None:
    """Most pulls find nothing new: one statement probes every scope the phone holds (not one
    per scope, which made a surge's polling cost 17 queries a pull); a change still arrives."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    h = auth("fire1")
    cursors = caught_up(client, h)
    assert len(cursors) > 5
    feed: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if "sync_members" in statement:
            feed.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors)
        status, reply, _ = post(client, "pull", h, req)
        assert status == 200 and not isinstance(reply, UpgradeRequired)
        assert reply.scopes == [] and not reply.has_more
        assert len(feed) == 1, feed
        d = auth("dispatcher")
        task = client.post("/api/v1/tasks", headers=d, json=f.task()).json()
        feed.clear()
        status, reply, _ = post(client, "pull", h, req)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert status == 200 and not isinstance(reply, UpgradeRequired)
    got = {(c.entity, str(c.id)) for p in reply.scopes for c in p.changes}
    assert ("task", task["id"]) in got
    assert 1 < len(feed) < len(cursors)  # the probe, then only the scopes that changed


def test_a_hazard_push_reads_nothing_twice(
    client: TestClient[Any], auth: Sessions, backend: str
) -> None:
    """A hazard reported through sync (the surge's slowest request) runs the whole one-door
    action, and reads each thing once: the hazard's id once (the push's locking read also
    answers the create's "is this id taken"), grid and area in one spatial statement, the
    area's dispatchers in one, their devices with each owner's language in one, and no scope
    memberships for a record that is new. The rules still run: a second report with that id
    by someone else is refused."""
    rid = uuid.uuid4()
    fields = new_hazard_fields(severity="high")
    mutation = Mutation(seq=1, entity="hazard", id=rid, hlc=hlc(), op=Op.CREATE, fields=fields)
    with statements() as seen:
        reply = push(client, auth("fire1"), f"dev-{rid}", [mutation])
    assert reply.acks[0].status is AckStatus.ACCEPTED, reply.acks

    def reads(table: str) -> list[str]:
        return [s for s in seen if s.startswith("SELECT") and f"FROM {table} " in f"{s} "]

    assert len(reads("hazards")) == 1, reads("hazards")
    spatial = [s for s in seen if "grids.boundary" in s or "admin_areas.boundary" in s]
    assert len(spatial) == 1 and "grids.boundary" in spatial[0], spatial
    assert "admin_areas.boundary" in spatial[0]
    assert not [s for s in reads("admin_areas") if s.startswith("SELECT admin_areas.path")]
    assert not [s for s in reads("users") if s.startswith("SELECT users.id, users.language")]
    assert len(reads("devices")) == 1, reads("devices")
    assert reads("sync_members") == [], reads("sync_members")
    # The auth read, the outcome, the two locking reads, grid (with its inspector) and area,
    # three inserts, the dispatchers, their devices, the counter, the change log's five
    # writes; and on PostgreSQL the device's lock and the NOTIFY. It was 21 and 23.
    assert len(seen) <= (18 if backend == "postgis" else 16), "\n".join(seen)
    other = push(client, auth("inspector1"), f"dev-x-{rid}", [mutation])
    assert other.acks[0].status is AckStatus.REFUSED  # the id is taken: the rule still runs


def test_an_idle_pull_computes_scopes_in_one_statement(
    client: TestClient[Any], auth: Sessions, backend: str
) -> None:
    """A responder's pull with nothing new: the auth read (on PostgreSQL straight on the
    driver, so not among SQLAlchemy's statements), one statement for the scopes (their tasks
    once, for incidents and reference areas; the organisation with the areas' version; their
    areas with the grids in them), and one probe of the feed with its bounds."""
    h = auth("fire1")
    cursors = caught_up(client, h)
    with statements() as seen:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors)
        status, reply, _ = post(client, "pull", h, req)
    assert status == 200 and isinstance(reply, PullResponse) and reply.scopes == []
    scopes = [s for s in seen if "FROM tasks" in s]
    assert len(scopes) == 1, scopes
    assert "FROM admin_areas" in scopes[0] and "grids" in scopes[0], scopes
    assert len(seen) == (2 if backend == "postgis" else 3), "\n".join(seen)


def test_scopes_follow_their_inputs_at_the_next_pull(
    client: TestClient[Any], auth: Sessions
) -> None:
    """What a phone reads is computed from the inputs as they are at each pull, never a
    remembered answer: a task newly assigned to the user's unit brings its incident at the
    next pull, and a user moved to another unit drops the old unit's scopes for the new one's
    at the next pull (their session stays valid)."""
    fire, d = auth("fire1"), auth("dispatcher")
    cursors = caught_up(client, fire)

    def pull() -> PullResponse:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors)
        status, reply, _ = post(client, "pull", fire, req)
        assert status == 200 and isinstance(reply, PullResponse)
        cursors.update({p.scope: p.cursor for p in reply.scopes})
        for gone in reply.dropped:
            cursors.pop(gone, None)
        return reply

    inc = client.post("/api/v1/incidents", headers=d, json=f.incident()).json()
    client.post("/api/v1/tasks", headers=d, json=f.task(incident_id=inc["id"]))
    assert f"incident:{inc['id']}" in {p.scope for p in pull().scopes}
    fire_unit, police = did("org:fire"), did("org:police")
    moved = client.patch(
        f"/api/v1/users/{did('user:fire1')}", headers=auth("admin"), json={"org_id": str(police)}
    )
    assert moved.status_code == 200, moved.text
    reply = pull()
    assert {f"unit:{fire_unit}", f"org:{fire_unit}"} <= set(reply.dropped), reply.dropped
    assert f"unit:{police}" in {p.scope for p in reply.scopes}
    assert f"unit:{fire_unit}" not in cursors and f"unit:{police}" in cursors
