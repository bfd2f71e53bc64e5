"""The hazard closed loop (隐患闭环) on SpatiaLite and PostGIS: photos through tus (the real
tuspy client, a connection cut mid-PATCH and resumed), each step by the right role with its
evidence, the timeline and audit log, evidence flags, the overdue job, queries and statistics."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tusclient import client as tus_client

from schemas.common import Point
from server import geo
from server.app import create_app
from server.cli import main as cli
from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.domain.reference.services import locate
from server.jobs import run_once
from server.models import Escalation, Hazard, HazardEvent, PushJobRow
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.dispatch_helpers import in_db, register_device
from tests.integration.sync_helpers import Phone
from tests.integration.test_media_api import TUS, photo, sha, upload
from tests.servers import serve_in_thread

SHANGHAI = ZoneInfo("Asia/Shanghai")
CHUNK = 256 * 1024
CUT_AT = 300_000


def exif_now(delta: timedelta = timedelta(0)) -> str:
    """A camera clock reading (Shanghai wall time) for now + delta."""
    return (datetime.now(SHANGHAI) + delta).strftime("%Y:%m:%d %H:%M:%S")


def step(
    client: TestClient[Any], headers: dict[str, str], hazard_id: str, to: str, **body: Any
) -> httpx.Response:
    return client.post(
        f"/api/v1/hazards/{hazard_id}/transitions", headers=headers, json={"to_status": to, **body}
    )


def report(client: TestClient[Any], auth: Sessions, **kw: Any) -> dict[str, Any]:
    r = client.post("/api/v1/hazards", headers=auth("inspector1"), json=f.hazard(**kw))
    assert r.status_code == 201, r.text
    return dict(r.json())


def deadline(days: float = 3) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def verified_and_assigned(
    client: TestClient[Any], auth: Sessions, hazard_id: str, **assignee: Any
) -> None:
    d = auth("dispatcher")
    assert step(client, d, hazard_id, "verified").status_code == 201
    assignee = assignee or {"assignee_enterprise_id": str(f.did("enterprise:bund-mall"))}
    r = step(client, d, hazard_id, "rectification_assigned", deadline=deadline(), **assignee)
    assert r.status_code == 201, r.text


def cut_patch(base: str, location: str, headers: dict[str, str], data: bytes, at: int) -> None:
    """Send a PATCH announcing all of `data`, deliver `at` bytes, then drop the connection."""
    host, port = base.removeprefix("http://").split(":")
    head = [
        f"PATCH {location} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: {headers['Authorization']}",
        "Tus-Resumable: 1.0.0",
        "Content-Type: application/offset+octet-stream",
        "Upload-Offset: 0",
        f"Content-Length: {len(data)}",
    ]
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data[:at])
        time.sleep(0.3)  # let the server read what was sent before the line goes dead


def wait_offset(base: str, location: str, headers: dict[str, str], expected: int) -> None:
    deadline_at = time.monotonic() + 10
    offset = None
    while time.monotonic() < deadline_at:
        r = httpx.head(base + location, headers={**headers, **TUS})
        if r.status_code == 200:
            offset = int(r.headers["Upload-Offset"])
            if offset == expected:
                return
        time.sleep(0.05)
    raise AssertionError(f"server offset {offset}, expected {expected}")


def test_done_when_inspector_reports_with_photos_and_the_loop_closes(
    client: TestClient[Any], auth: Sessions, settings: Settings
) -> None:
    insp, disp, ent = auth("inspector1"), auth("dispatcher"), auth("enterprise1")
    big = photo(size=(1600, 1200), taken=exif_now(), quality=95)
    small = photo(taken=exif_now())
    assert len(big) > CUT_AT + 2 * CHUNK

    # The phone made the report offline: it names its photos by hash before their bytes arrive.
    created = report(
        client,
        auth,
        photo_sha256=[sha(big), sha(small)],
        reported_at=datetime.now(UTC).isoformat(),
        description="消防通道堵塞 blocked fire lane",
    )
    hazard_id = created["id"]
    assert created["grid_id"] == str(f.did("grid:A"))
    assert sorted(created["missing_photos"]) == sorted([sha(big), sha(small)])

    with serve_in_thread(create_app(settings)) as base:
        collection = f"{base}/api/v1/uploads/"
        # Photo 1: the connection dies mid-PATCH; tuspy resumes with only the missing bytes.
        meta = {"filename": "big.jpg", "filetype": "image/jpeg", "sha256": sha(big)}
        first = tus_client.TusClient(collection, headers=insp).uploader(
            file_stream=io.BytesIO(big), chunk_size=CHUNK, metadata=meta, retry_delay=0
        )
        location = first.create_url().removeprefix(base)
        cut_patch(base, location, insp, big, CUT_AT)
        wait_offset(base, location, insp, CUT_AT)
        resumed = tus_client.TusClient(collection, headers=insp).uploader(
            file_stream=io.BytesIO(big), url=base + location, chunk_size=CHUNK, retry_delay=0
        )
        assert resumed.offset == CUT_AT  # learnt by HEAD: only the rest goes up
        resumed.upload()
        # Photo 2: plain tuspy, every chunk with a sha256 checksum.
        meta = {"filename": "small.jpg", "filetype": "image/jpeg", "sha256": sha(small)}
        tus_client.TusClient(collection, headers=insp).uploader(
            file_stream=io.BytesIO(small),
            chunk_size=64 * 1024,
            metadata=meta,
            upload_checksum=True,
            retry_delay=0,
        ).upload()

    hazard = client.get(f"/api/v1/hazards/{hazard_id}", headers=insp).json()
    assert hazard["missing_photos"] == []
    assert {p["status"] for p in hazard["photos"]} == {"stored"}
    assert hazard["evidence_flags"] == []
    assert all(p["distance_m"] < 5 for p in hazard["photos"])
    media = client.get(f"/api/v1/media/{sha(big)}", headers=insp).json()
    assert media["exif"]["latitude"] == pytest.approx(31.2375, abs=1e-5)
    assert media["exif"]["longitude"] == pytest.approx(121.4855, abs=1e-5)
    original = client.get(f"/api/v1/media/{sha(big)}/original", headers=insp)
    assert original.content == big  # the resumed upload is byte-identical

    assert step(client, disp, hazard_id, "verified", note="现场核实").status_code == 201
    assigned = step(
        client,
        disp,
        hazard_id,
        "rectification_assigned",
        assignee_enterprise_id=str(f.did("enterprise:bund-mall")),
        deadline=deadline(),
        note="三日内整改",
    )
    assert assigned.status_code == 201, assigned.text
    assert assigned.json()["detail"]["rectify_org_id"] == str(f.did("org:enterprise"))

    no_photo = step(client, ent, hazard_id, "rectified", note="已清理")
    assert no_photo.status_code == 422
    assert no_photo.json()["code"] == "evidence_required"
    after = photo(taken=exif_now())
    assert upload(client, ent, after).status_code == 201
    rectified = step(client, ent, hazard_id, "rectified", note="已清理", photo_sha256=[sha(after)])
    assert rectified.status_code == 201, rectified.text

    assert step(client, insp, hazard_id, "reinspected", note="复查合格").status_code == 201
    assert step(client, insp, hazard_id, "closed").status_code == 201

    timeline = client.get(f"/api/v1/hazards/{hazard_id}/timeline", headers=insp).json()
    assert [(e["from_status"], e["to_status"]) for e in timeline] == [
        (None, "reported"),
        ("reported", "verified"),
        ("verified", "rectification_assigned"),
        ("rectification_assigned", "rectified"),
        ("rectified", "reinspected"),
        ("reinspected", "closed"),
    ]
    actors = [e["actor_id"] for e in timeline]
    assert actors == [
        str(f.did(f"user:{u}"))
        for u in (
            "inspector1",
            "dispatcher",
            "dispatcher",
            "enterprise1",
            "inspector1",
            "inspector1",
        )
    ]
    assert len(timeline[0]["photo_ids"]) == 2
    assert len(timeline[3]["photo_ids"]) == 1
    assert timeline[3]["note"] == "已清理"

    audit = client.get(
        "/api/v1/audit",
        headers=auth("admin"),
        params={"entity": "hazard", "entity_id": hazard_id},
    ).json()
    steps = sorted(
        (e["detail"].get("to_status", "reported"), e["actor_id"])
        for e in audit
        if e["action"] in ("report", "transition")
    )
    assert steps == sorted((e["to_status"], e["actor_id"]) for e in timeline)

    closed = client.get(f"/api/v1/hazards/{hazard_id}", headers=insp).json()
    assert closed["status"] == "closed"
    kinds = sorted(p["kind"] for p in closed["photos"])
    assert kinds == ["rectification", "report", "report"]

    # Public derivatives carry no EXIF (reopened with Pillow); the original only for the roles
    # that may see locations: the enterprise sees the pictures of its hazard, not the original.
    for digest in (sha(big), sha(small)):
        for kind in ("display", "thumbnail"):
            r = client.get(f"/api/v1/media/{digest}/{kind}", headers=ent)
            assert r.status_code == 200
            with Image.open(io.BytesIO(r.content)) as im:
                assert len(im.getexif()) == 0
                assert not (im.info.keys() & {"exif", "xmp", "icc_profile", "comment"})
    assert client.get(f"/api/v1/media/{sha(big)}", headers=ent).json()["exif"] is None
    assert client.get(f"/api/v1/media/{sha(big)}/original", headers=ent).status_code == 404
    assert client.get(f"/api/v1/media/{sha(big)}/original", headers=disp).status_code == 200
    assert client.get(f"/api/v1/media/{sha(big)}", headers=disp).json()["exif"] is not None


def test_each_step_is_refused_to_the_wrong_role(client: TestClient[Any], auth: Sessions) -> None:
    hazard_id = report(client, auth)["id"]
    insp, insp2, disp = auth("inspector1"), auth("inspector2"), auth("dispatcher")
    ent, fire = auth("enterprise1"), auth("fire1")

    assert step(client, insp, hazard_id, "verified").status_code == 403
    assert step(client, insp2, hazard_id, "verified").status_code == 404  # other grid: unseen
    assert step(client, ent, hazard_id, "verified").status_code == 404  # not its enterprise
    jump = step(client, disp, hazard_id, "closed")
    assert jump.status_code == 409
    assert jump.json()["code"] == "illegal_transition"
    verified_and_assigned(client, auth, hazard_id)

    proof = photo(taken=exif_now())
    upload(client, disp, proof)
    evidence = {"photo_sha256": [sha(proof)]}
    assert step(client, disp, hazard_id, "rectified", **evidence).status_code == 403
    assert step(client, fire, hazard_id, "rectified", **evidence).status_code == 403  # other org
    assert step(client, insp, hazard_id, "rectified", **evidence).status_code == 403
    # Declared but not yet uploaded after-photos are accepted (they arrive later).
    pending = "ab" * 32
    r = step(client, ent, hazard_id, "rectified", photo_sha256=[pending])
    assert r.status_code == 201, r.text
    hazard = client.get(f"/api/v1/hazards/{hazard_id}", headers=disp).json()
    assert hazard["missing_photos"] == [pending]

    assert step(client, disp, hazard_id, "reinspected").status_code == 403  # grid has inspector
    assert step(client, insp2, hazard_id, "reinspected").status_code == 404
    assert step(client, ent, hazard_id, "reinspected").status_code == 403
    reopen = step(client, insp, hazard_id, "reopened")
    assert reopen.status_code == 422  # needs a reason
    assert step(client, insp, hazard_id, "reopened", note="仍有杂物").status_code == 201
    again = client.get(f"/api/v1/hazards/{hazard_id}", headers=insp).json()
    assert (again["status"], again["status_reason"]) == ("reopened", "仍有杂物")


def test_assignment_to_a_unit_and_the_evidence_each_step_needs(
    client: TestClient[Any], auth: Sessions
) -> None:
    disp, fire, ent = auth("dispatcher"), auth("fire1"), auth("enterprise1")
    hazard_id = report(client, auth)["id"]
    no_reason = step(client, disp, hazard_id, "rejected")
    assert no_reason.status_code == 422
    assert step(client, disp, hazard_id, "verified").status_code == 201
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    unit = {"assignee_org_id": str(f.did("org:fire"))}
    assert step(client, disp, hazard_id, "rectification_assigned", **unit).status_code == 422
    r = step(client, disp, hazard_id, "rectification_assigned", deadline=past, **unit)
    assert r.status_code == 422
    both = {**unit, "assignee_enterprise_id": str(f.did("enterprise:bund-mall"))}
    r = step(client, disp, hazard_id, "rectification_assigned", deadline=deadline(), **both)
    assert r.status_code == 422
    r = step(client, disp, hazard_id, "rectification_assigned", deadline=deadline(), **unit)
    assert r.status_code == 201
    proof = photo(taken=exif_now())
    assert upload(client, fire, proof).status_code == 201
    # The enterprise is not assigned: the hazard is not even visible to it.
    assert step(client, ent, hazard_id, "rectified", photo_sha256=[sha(proof)]).status_code == 404
    step_id = str(uuid.uuid4())
    body = {"photo_sha256": [sha(proof)], "id": step_id}
    first = step(client, fire, hazard_id, "rectified", **body)
    retry = step(client, fire, hazard_id, "rectified", **body)  # a phone's retry: a no-op
    assert first.status_code == 201 and retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.json()["id"] == retry.json()["id"] == step_id

    rejected_id = report(client, auth)["id"]
    r = step(client, disp, rejected_id, "rejected", note="重复上报 duplicate")
    assert r.status_code == 201
    rejected = client.get(f"/api/v1/hazards/{rejected_id}", headers=disp).json()
    assert (rejected["status"], rejected["status_reason"]) == ("rejected", "重复上报 duplicate")


def test_photos_far_from_the_point_or_the_time_are_flagged_not_refused(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp = auth("inspector1")
    far = photo(at=f.OUTSIDE_DISTRICT, taken=exif_now())
    old = photo(taken=exif_now(-timedelta(days=3)))
    near = photo(taken=exif_now())
    no_gps = photo(at=None, taken=exif_now())
    for data in (far, old, near, no_gps):
        assert upload(client, insp, data).status_code == 201
    hazard = report(client, auth, photo_sha256=[sha(x) for x in (far, old, near, no_gps)])
    assert hazard["status"] == "reported"
    assert hazard["evidence_flags"] == ["far_from_point", "time_mismatch"]
    flags = {p["sha256"]: p["flags"] for p in hazard["photos"]}
    assert flags[sha(far)] == ["far_from_point"]
    assert flags[sha(old)] == ["time_mismatch"]
    assert flags[sha(near)] == []
    assert flags[sha(no_gps)] == ["no_gps"]
    by_hash = {p["sha256"]: p for p in hazard["photos"]}
    assert by_hash[sha(far)]["distance_m"] > 10_000
    assert by_hash[sha(old)]["time_offset_s"] == pytest.approx(-3 * 86400, abs=120)


def _escalations(database_url: str, hazard_id: str) -> int:
    async def run() -> int:
        engine = make_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                stmt = select(func.count()).where(Escalation.hazard_id == uuid.UUID(hazard_id))
                return int((await session.execute(stmt)).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_overdue_job_escalates_once_even_when_runners_race(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    disp = auth("dispatcher")
    ids = [report(client, auth)["id"] for _ in range(2)]
    for hazard_id in ids:
        verified_and_assigned(client, auth, hazard_id)
    # Who hears of it: dispatch of the area, the grid's inspector, the rectifying unit.
    tokens = {
        who: register_device(client, auth(who), f"esc-{who}")
        for who in ("dispatcher", "inspector1", "enterprise1", "inspector2")
    }
    later = datetime.now(UTC) + timedelta(days=4)

    async def race() -> list[uuid.UUID]:
        engines = [make_engine(database_url) for _ in range(3)]
        try:
            reports = await asyncio.gather(
                *(run_once(make_sessionmaker(e), None, later) for e in engines)
            )
        finally:
            for engine in engines:
                await engine.dispose()
        return [h for r in reports for h in r.escalated]

    escalated = asyncio.run(race())
    for hazard_id in ids:
        assert escalated.count(uuid.UUID(hazard_id)) == 1
        assert _escalations(database_url, hazard_id) == 1
        hazard = client.get(f"/api/v1/hazards/{hazard_id}", headers=disp).json()
        assert hazard["overdue"] is True
        timeline = client.get(f"/api/v1/hazards/{hazard_id}/timeline", headers=disp).json()
        assert timeline[-1]["kind"] == "escalation"
        assert timeline[-1]["to_status"] == "rectification_assigned"

    again = asyncio.run(race())
    assert not set(again) & {uuid.UUID(i) for i in ids}

    # Each escalation was handed to the push outbox once per device, however the runners raced.
    async def queued(session: AsyncSession) -> list[tuple[str, str]]:
        rows = await session.execute(
            select(PushJobRow.event_id, PushJobRow.address).where(
                PushJobRow.event_id.like("hazard:%:overdue:%")
            )
        )
        return [(e, a) for e, a in rows.all()]

    jobs = in_db(database_url, queued)
    for hazard_id in ids:
        mine_jobs = sorted(a for e, a in jobs if e.startswith(f"hazard:{hazard_id}:"))
        expected = sorted(tokens[w] for w in ("dispatcher", "inspector1", "enterprise1"))
        assert mine_jobs == expected, (hazard_id, mine_jobs)

    async def undelivered(session: AsyncSession) -> int:
        stmt = select(func.count()).where(
            Escalation.hazard_id.in_([uuid.UUID(i) for i in ids]),
            Escalation.delivered_at.is_(None),
        )
        return int((await session.execute(stmt)).scalar_one())

    assert in_db(database_url, undelivered) == 0

    groups = client.get(
        "/api/v1/hazards/overdue", headers=disp, params={"grid_id": str(f.did("grid:A"))}
    ).json()
    mine = [g for g in groups if g["rectify_org_id"] == str(f.did("org:enterprise"))]
    assert len(mine) == 1 and set(ids) <= set(mine[0]["hazard_ids"])
    listed = client.get(
        "/api/v1/hazards",
        headers=disp,
        params={"overdue": "true", "rectify_org_id": str(f.did("org:enterprise")), "limit": 500},
    ).json()["items"]
    assert set(ids) <= {h["id"] for h in listed}
    audit = client.get(
        "/api/v1/audit", headers=auth("admin"), params={"entity": "hazard", "entity_id": ids[0]}
    ).json()
    assert [e["action"] for e in audit].count("escalate") == 1


def test_jobs_cli_runs_once(settings: Settings, database_url: str, tmp_path: Path) -> None:
    env = {
        "LIANDONG_DATABASE_URL": database_url,
        "LIANDONG_VAR_DIR": str(tmp_path),
        "LIANDONG_MEDIA_DIR": str(settings.media_dir),
        "LIANDONG_SECRET_KEY": settings.secret_key,
    }
    result = CliRunner().invoke(cli, ["jobs", "run-once"], env=env)
    assert result.exit_code == 0, result.output
    assert "overdue hazard(s)" in result.output
    bad = CliRunner().invoke(cli, ["jobs", "run-once", "--now", "2026-01-01T08:00:00"], env=env)
    assert bad.exit_code != 0


def test_queries_by_filters_time_area_and_statistics(
    client: TestClient[Any], auth: Sessions
) -> None:
    disp = auth("dispatcher")
    since = datetime.now(UTC) - timedelta(seconds=1)
    in_b = [
        client.post(
            "/api/v1/hazards",
            headers=auth("inspector2"),
            json=f.hazard(at=f.IN_GRID_B, category="landslide", severity=sev),
        ).json()["id"]
        for sev in ("low", "critical", "critical")
    ]
    in_a = report(client, auth, category="landslide", severity="critical")["id"]
    assert step(client, disp, in_b[0], "verified").status_code == 201

    window = {"category": "landslide", "created_from": since.isoformat()}
    stats = client.get("/api/v1/hazards/stats", headers=disp, params=window).json()
    counts = {(i["grid_id"], i["status"]): i["count"] for i in stats["items"]}
    grid_a, grid_b = str(f.did("grid:A")), str(f.did("grid:B"))
    assert counts == {(grid_a, "reported"): 1, (grid_b, "reported"): 2, (grid_b, "verified"): 1}
    assert stats["total"] == 4
    # The inspector of grid B counts only what it may see.
    own = client.get("/api/v1/hazards/stats", headers=auth("inspector2"), params=window).json()
    assert {i["grid_id"] for i in own["items"]} == {grid_b}

    def ids(**params: Any) -> set[str]:
        r = client.get("/api/v1/hazards", headers=disp, params={**window, "limit": 500, **params})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["items"]}

    assert ids() == {*in_b, in_a}
    assert ids(severity="critical", grid_id=grid_b) == set(in_b[1:])
    assert ids(status="verified") == {in_b[0]}
    assert ids(created_to=since.isoformat()) == set()
    lon, lat = f.IN_GRID_B
    assert ids(bbox=f"{lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}") == set(in_b)
    square = f.square(*f.IN_GRID_A, d=0.001)
    assert ids(within=json.dumps(square)) == {in_a}
    geo = client.get(
        "/api/v1/hazards",
        headers={**disp, "Accept": "application/geo+json"},
        params={**window, "grid_id": grid_b},
    )
    assert geo.headers["content-type"].startswith("application/geo+json")
    features = geo.json()["features"]
    assert {ft["id"] for ft in features} == set(in_b)
    assert all(ft["geometry"]["type"] == "Point" for ft in features)
    naive = client.get(
        "/api/v1/hazards", headers=disp, params={"created_from": "2026-01-01T00:00:00"}
    )
    assert naive.status_code == 422


def test_photo_ids_written_without_links_still_show(
    client: TestClient[Any], auth: Sessions, database_url: str
) -> None:
    # The sync engine writes `photo_ids` straight into the row; reads must still list them.
    insp = auth("inspector1")
    hazard_id = report(client, auth)["id"]
    data = photo(taken=exif_now())
    media_id = upload(client, insp, data).headers["Media-Id"]

    async def write() -> None:
        engine = make_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                row = await session.get(Hazard, uuid.UUID(hazard_id))
                assert row is not None
                row.photo_ids = [media_id, "not-a-uuid"]
        finally:
            await engine.dispose()

    asyncio.run(write())
    hazard = client.get(f"/api/v1/hazards/{hazard_id}", headers=insp).json()
    assert [(p["media_id"], p["kind"], p["flags"]) for p in hazard["photos"]] == [
        (media_id, "report", [])
    ]


def test_entries_of_one_instant_read_back_in_the_order_of_the_loop_by_rest_and_sync(
    client: TestClient[Any], auth: Sessions, settings: Settings
) -> None:
    """A hazard's entries can share their `at` (steps whose time two clients gave alike, or
    written in one transaction at the server's clock), and the server wrote them in some order.
    The REST timeline and the timeline the sync backfill gives the phones show them as the
    hazard lived them, an escalation after the step into its status, whatever the order they
    were written in, their write times and their ids (here all three reversed). The hazard is
    written outside the change log (as a script or an old release wrote it), so its synced
    timeline is the backfill's read."""
    lived = [
        (None, "reported", "transition"),
        ("reported", "verified", "transition"),
        ("verified", "rectification_assigned", "transition"),
        ("rectification_assigned", "rectification_assigned", "escalation"),
    ]
    ids = [uuid.UUID(int=(len(lived) - n) << 64) for n in range(len(lived))]  # descending
    at = datetime.now(UTC).replace(microsecond=123_000) - timedelta(minutes=5)
    lon, lat = f.IN_GRID_A

    async def written_outside_the_change_log(session: AsyncSession) -> uuid.UUID:
        grid, area_id = await locate(session, lon, lat)
        hazard = Hazard(
            category="fire",
            severity="high",
            description="exit blocked, written by a script",
            location=geo.point_to_db(Point(coordinates=(lon, lat))),
            status="rectification_assigned",
            reporter_id=f.did("user:inspector1"),
            grid_id=grid.id if grid is not None else None,
            area_id=area_id,
            reported_at=at,
        )
        session.add(hazard)
        await session.flush()
        first_write = datetime(2030, 1, 1, tzinfo=UTC)
        steps = list(zip(lived, ids, strict=True))
        for n, ((old, new, kind), step_id) in enumerate(reversed(steps)):
            session.add(
                HazardEvent(
                    id=step_id,
                    hazard_id=hazard.id,
                    from_status=old,
                    to_status=new,
                    kind=kind,
                    at=at,
                    created_at=first_write + timedelta(seconds=n),
                    detail={},
                )
            )
            await session.flush()  # one at a time: stored in the reverse of the loop
        return hazard.id

    hazard_id = in_db(settings.database_url, written_outside_the_change_log)
    with TestClient(app=create_app(settings)):
        pass  # its start-up backfill enters the hazard into the change log
    insp = auth("inspector1")
    timeline = client.get(f"/api/v1/hazards/{hazard_id}/timeline", headers=insp).json()
    assert [(e["from_status"], e["to_status"], e["kind"]) for e in timeline] == lived, timeline
    assert [e["id"] for e in timeline] == [str(i) for i in ids]
    phone = Phone(client, insp)
    try:
        phone.sync()
        synced = phone.get("hazard", hazard_id)
        assert synced is not None
        assert [(e.get("from"), e["to"], e["kind"]) for e in synced["timeline"]] == lived
    finally:
        phone.close()
