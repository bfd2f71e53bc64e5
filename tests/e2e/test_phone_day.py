"""A day in the life of each field role, driven through the phone core alone, against the real
`liandong serve` process on both databases (SpatiaLite file; PostGIS scratch database).

The phone reaches the server through `tests/peers/slow_link.SlowLink` on loopback, whose
`cut()` is the connection dropping (open connections die, new ones are refused) and
`restore()` its return. The app "killed" mid-upload is an exception from the uploader's fault
hook followed by a new `PhoneCore` on the same files and the same 0600 secret file. Each test
ends with the server and the phone agreeing: nothing duplicated, every photo stored.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mobile.core.actions import CheckResult
from mobile.core.geo import FixedGeolocator
from mobile.core.outbox import ItemState
from mobile.core.phone import PhoneCore
from mobile.core.photos import PhotoState
from mobile.core.secret_store import FileSecretStore
from tests import factories as f
from tests.conftest import BACKENDS, DEMO_PASSWORD, fresh_database, seed_demo
from tests.e2e.test_server_process import LIANDONG, _env
from tests.integration.test_media_api import SHANGHAI_A, photo, sha, upload
from tests.peers.slow_link import SlowLink, slow_link
from tests.servers import free_port

pytestmark = pytest.mark.e2e


class Served:
    """The server process, its direct URL (for the dispatcher's REST calls) and the link the
    phones use."""

    def __init__(self, base: str, link: SlowLink) -> None:
        self.base = base
        self.link = link
        self.http = httpx.Client(base_url=base, timeout=20)
        self._tokens: dict[str, str] = {}

    def auth(self, user: str) -> dict[str, str]:
        if user not in self._tokens:
            r = self.http.post(
                "/api/v1/auth/login",
                json={"username": user, "password": DEMO_PASSWORD, "device_id": f"rest-{user}"},
            )
            assert r.status_code == 200, r.text
            self._tokens[user] = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    def ok(self, r: httpx.Response) -> Any:
        assert r.status_code in (200, 201), r.text
        return r.json()


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    backend = str(request.param)
    var = tmp_path_factory.mktemp(f"phone-e2e-{backend}")
    url = fresh_database(backend, var, scratch="liandong_phone_e2e")
    seed_demo(url)
    port = free_port()
    env = _env(var, port)
    env["LIANDONG_DATABASE_URL"] = url
    log = (var / "serve.log").open("wb")  # read it when the server does not start
    proc = subprocess.Popen([LIANDONG, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            _ready(base, proc)
        except AssertionError:
            log.flush()
            raise AssertionError((var / "serve.log").read_text()[-3000:]) from None
        with slow_link(base) as link:
            yield Served(base, link)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def _ready(base: str, proc: subprocess.Popen[bytes], within_s: float = 300.0) -> None:
    """Wait for /readyz (start-up takes seconds, and far longer on a loaded machine)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not become ready")


def _phone(data: Path, served: Served, **kw: Any) -> PhoneCore:
    geo = FixedGeolocator(*SHANGHAI_A, accuracy_m=6.0)
    geo.start()
    return PhoneCore(
        data,
        FileSecretStore(data / "secrets.json"),
        http=httpx.Client(timeout=10),
        geolocator=geo,
        photo_edge=640,
        chunk_size=16 * 1024,
        **kw,
    )


def _send(core: PhoneCore) -> Any:
    return asyncio.run(core.send_now())


def _jpeg(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.jpg"
    path.write_bytes(photo(taken="2026:11:20 16:20:00", size=(480, 360)))
    return path


async def _until(check: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def _all_sent(core: PhoneCore) -> bool:
    return all(i.state is ItemState.SENT for i in core.outbox.items())


def test_responder_new_task_by_pull_now_accept_en_route_offline_arrive_photo_complete(
    served: Served, tmp_path: Path
) -> None:
    link = served.link
    core = _phone(tmp_path, served, interval_s=3600)
    core.sign_in(link.url, "fire1", DEMO_PASSWORD)
    assert _send(core).ok
    [plan] = core.views.plans()  # the demo's hazmat plan, with the fire unit's part
    assert [t["unit_kind"] for t in plan.mine] == ["fire"]
    holder: dict[str, uuid.UUID] = {}

    async def day() -> None:
        stop = asyncio.Event()
        bg = core.background
        runner = asyncio.ensure_future(bg.run(stop))
        listener = asyncio.ensure_future(bg.listen(stop))
        await _until(lambda: bg.status.rounds >= 1)
        await asyncio.sleep(0.3)  # the stream is subscribed
        # Dispatch creates a task for the fire unit; "pull now" brings it, no polling.
        body = f.task(title="warehouse fire, pull now")
        task = await asyncio.to_thread(
            lambda: served.ok(
                served.http.post("/api/v1/tasks", headers=served.auth("dispatcher"), json=body)
            )
        )
        tid = holder["task"] = uuid.UUID(task["id"])
        await _until(lambda: any(t.id == tid for t in core.views.my_tasks()))
        assert bg.wakeups.get("pull_now", 0) >= 1
        core.actions.accept_task(tid)
        await _until(lambda: _all_sent(core) and bg.status.failures == 0)
        # Offline on the way: the step waits, the sender backs off and says so.
        link.cut()
        core.actions.en_route(tid)  # wakes the sender: the round fails
        await _until(lambda: bg.status.failures >= 1)
        assert bg.status.state.value == "backing_off" and bg.status.last_error
        assert [i.state for i in core.outbox.items()][-1] is not ItemState.SENT
        link.restore()
        core.actions.on_scene(tid)
        pic = core.add_photo(_jpeg(tmp_path, "scene"))
        assert pic is not None
        holder["photo"] = uuid.UUID(pic.media_id)
        holder["done"] = core.actions.complete_task(tid, note="fire out", photos=[pic])
        bg.send_now()
        await _until(
            lambda: _all_sent(core) and {p.state for p in core.photos.all()} == {PhotoState.STORED},
            within_s=30,
        )
        stop.set()
        await asyncio.gather(runner, listener)

    asyncio.run(day())
    tid = holder["task"]
    detail = core.views.task(tid)
    assert detail is not None and detail.task.status == "completed" and not detail.task.pending
    timeline = served.ok(
        served.http.get(f"/api/v1/tasks/{tid}/timeline", headers=served.auth("dispatcher"))
    )
    assert [e["to_status"] for e in timeline] == [
        "assigned",
        "accepted",
        "en_route",
        "on_scene",
        "completed",
    ]
    assert timeline[-1]["photo_ids"] == [str(holder["photo"])]
    media = served.ok(
        served.http.get(
            f"/api/v1/media/{core.photos.all()[0].sha256}", headers=served.auth("fire1")
        )
    )
    assert media["status"] == "stored"
    assert core.usage.total().requests > 5
    core.close()


def test_inspector_three_photos_offline_flapping_killed_mid_upload_arrive_once(
    served: Served, tmp_path: Path
) -> None:
    link = served.link
    core = _phone(tmp_path, served)
    core.sign_in(link.url, "inspector1", DEMO_PASSWORD)
    assert _send(core).ok
    link.cut()
    refs = [core.add_photo(_jpeg(tmp_path, f"p{n}")) for n in range(3)]
    pics = [p for p in refs if p is not None]
    hid = core.actions.report_hazard(
        category="fire", severity="high", description="blocked exit, three photos", photos=pics
    )
    assert not _send(core).ok  # offline: nothing lost
    [item] = core.outbox.items()
    assert (item.state, item.photos_done, item.photos_total) == (ItemState.WAITING, 0, 3)
    link.restore()

    # Killed after the second chunk of the first photo reached the server.
    patched = {"n": 0}

    def kill(step: str) -> None:
        if step == "patched":
            patched["n"] += 1
            if patched["n"] == 2:
                raise KeyboardInterrupt("app killed")

    core.uploader.fault = kill
    with pytest.raises(KeyboardInterrupt):
        _send(core)
    core.close()

    # Restarted (same files, same secret file); the link drops during the next upload.
    core = _phone(tmp_path, served)
    core.open()
    first = core.photos.get(pics[0].sha256)
    assert first is not None and first.state is PhotoState.UPLOADING

    def flap(step: str) -> None:
        if step == "patched":
            link.cut()

    core.uploader.fault = flap
    report = _send(core)
    assert not report.ok and report.error is not None and report.error.startswith("upload")
    link.restore()
    core.uploader.fault = None
    report = _send(core)
    assert report.ok, report.error
    assert {p.state for p in core.photos.all()} == {PhotoState.STORED}
    [view] = [h for h in core.views.hazards() if h.id == hid]
    assert view.photos_sent == (3, 3) and not view.pending

    # The server: one hazard, one report step, every photo stored once with the right bytes.
    row = served.ok(served.http.get(f"/api/v1/hazards/{hid}", headers=served.auth("dispatcher")))
    assert sorted(p["media_id"] for p in row["photos"]) == sorted(p.media_id for p in pics)
    assert {p["status"] for p in row["photos"]} == {"stored"}
    timeline = served.ok(
        served.http.get(f"/api/v1/hazards/{hid}/timeline", headers=served.auth("dispatcher"))
    )
    assert [e["to_status"] for e in timeline] == ["reported"]
    mine = served.ok(served.http.get("/api/v1/hazards", headers=served.auth("inspector1")))
    items = mine["items"] if isinstance(mine, dict) else mine
    assert [h["id"] for h in items].count(str(hid)) == 1
    for ref in pics:
        tracked = core.photos.get(ref.sha256)
        assert tracked is not None
        media = served.ok(
            served.http.get(f"/api/v1/media/{ref.sha256}", headers=served.auth("inspector1"))
        )
        assert media["id"] == ref.media_id and media["sha256"] == sha(tracked.path.read_bytes())
    core.close()


def test_inspector_reinspects_and_closes_a_rectified_hazard_offline(
    served: Served, tmp_path: Path
) -> None:
    # Set up through REST: reported, verified, assigned to the fire unit, rectified with a photo.
    a = served.auth
    hazard = served.ok(
        served.http.post(
            "/api/v1/hazards", headers=a("inspector1"), json=f.hazard(description="rectify me")
        )
    )
    hid = uuid.UUID(hazard["id"])
    proof = photo(taken="2026:11:20 16:20:00")
    assert upload(served.http, a("fire1"), proof).status_code in (200, 201)
    deadline = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()
    for who, to, extra in (
        ("dispatcher", "verified", {}),
        (
            "dispatcher",
            "rectification_assigned",
            {"assignee_org_id": str(f.did("org:fire")), "deadline": deadline},
        ),
        ("fire1", "rectified", {"photo_sha256": [sha(proof)]}),
    ):
        served.ok(
            served.http.post(
                f"/api/v1/hazards/{hid}/transitions",
                headers=a(who),
                json={"to_status": to, **extra},
            )
        )

    link = served.link
    core = _phone(tmp_path, served)
    core.sign_in(link.url, "inspector1", DEMO_PASSWORD)
    assert _send(core).ok
    [view] = [h for h in core.views.hazards() if h.id == hid]
    assert view.status == "rectified"
    link.cut()
    core.actions.reinspect_hazard(hid, note="exit clear")
    core.actions.close_hazard(hid, note="closed on site")
    [view] = [h for h in core.views.hazards() if h.id == hid]
    assert view.status == "closed" and view.pending  # shown at once, offline
    assert not _send(core).ok
    link.restore()
    report = _send(core)
    assert report.ok and report.sync is not None and report.sync.refused == 0
    row = served.ok(served.http.get(f"/api/v1/hazards/{hid}", headers=a("dispatcher")))
    assert row["status"] == "closed"
    timeline = served.ok(
        served.http.get(f"/api/v1/hazards/{hid}/timeline", headers=a("dispatcher"))
    )
    assert [e["to_status"] for e in timeline] == [
        "reported",
        "verified",
        "rectification_assigned",
        "rectified",
        "reinspected",
        "closed",
    ]
    [view] = [h for h in core.views.hazards() if h.id == hid]
    assert view.status == "closed" and not view.pending
    core.close()


def test_enterprise_officer_submits_this_weeks_check_with_a_failed_item_offline(
    served: Served, tmp_path: Path
) -> None:
    link = served.link
    core = _phone(tmp_path, served)
    core.sign_in(link.url, "enterprise1", DEMO_PASSWORD)
    assert _send(core).ok
    week = core.views.checks_this_week()
    assert week.due and not week.done
    enterprise, template = week.due[0]
    link.cut()
    pic = core.add_photo(_jpeg(tmp_path, "extinguisher"))
    assert pic is not None
    items = template["items"]
    results = [
        CheckResult(
            item_id=str(it["id"]),
            result="fail" if n == 0 else "pass",
            note="extinguisher empty" if n == 0 else None,
            photos=[pic] if n == 0 else [],
        )
        for n, it in enumerate(items)
    ]
    sid = core.actions.submit_check(
        enterprise_id=enterprise, template_id=str(template["id"]), week=week.week, results=results
    )
    after = core.views.checks_this_week()
    assert not [d for d in after.due if d[1]["id"] == template["id"]]  # done, offline
    assert not _send(core).ok
    link.restore()
    report = _send(core)
    assert report.ok and report.sync is not None and report.sync.refused == 0, report
    assert [u.state for u in report.uploads] == [PhotoState.STORED]
    subs = served.ok(
        served.http.get("/api/v1/check-submissions", headers=served.auth("enterprise1"))
    )
    rows = subs["items"] if isinstance(subs, dict) else subs
    assert [s["id"] for s in rows].count(str(sid)) == 1
    [mine] = [s for s in rows if s["id"] == str(sid)]
    failed = [r for r in mine["results"] if r["result"] == "fail"]
    assert len(failed) == 1 and failed[0]["photo_ids"] == [pic.media_id]
    assert _send(core).ok and _all_sent(core)
    core.close()
