"""The phone core (mobile/core) driven as the app drives it, against the real app on both
databases: the real `HttpTransport`, the core's own tus client and session, over Litestar's
TestClient. "Offline" is a switch in the HTTP path (every request fails to connect), the app
"killed" mid-upload is an exception from the uploader's fault hook followed by a fresh
`PhoneCore` on the same files.

Each test ends with the server and the phone agreeing, and nothing sent twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from mobile.core.clock import ManualClock, utcnow
from mobile.core.geo import FixedGeolocator
from mobile.core.outbox import ItemState
from mobile.core.phone import PhoneCore
from mobile.core.photos import PhotoRef, PhotoState
from mobile.core.secret_store import MemorySecretStore
from mobile.core.session import device_secret_key
from tests import factories as f
from tests.conftest import DEMO_PASSWORD, Sessions
from tests.integration.test_media_api import SHANGHAI_A, photo, sha

HEADERS_NOT_FORWARDED = {"content-encoding", "content-length", "transfer-encoding"}


class Switch(httpx.BaseTransport):
    """The phone's network: forwards to the app through the TestClient, or fails like a dead
    link (`online = False`, or after `fail_after` more requests)."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self.online = True
        self.fail_after: int | None = None
        self.requests: list[str] = []
        self.bodies: dict[str, list[Any]] = {}  # JSON bodies sent, by path
        self.busy: dict[str, int] = {}  # path prefix -> Retry-After: answered 503 (shedding)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.fail_after is not None:
            if self.fail_after <= 0:
                self.online = False
                self.fail_after = None
            else:
                self.fail_after -= 1
        if not self.online:
            raise httpx.ConnectError("offline", request=request)
        offset = request.headers.get("Upload-Offset", "")
        self.requests.append(f"{request.method} {request.url.path} {offset}".strip())
        for prefix, seconds in self.busy.items():
            if request.url.path.startswith(prefix):
                return httpx.Response(503, headers={"Retry-After": str(seconds)})
        if request.headers.get("content-type") == "application/json":
            self.bodies.setdefault(request.url.path, []).append(json.loads(request.read()))
        r = self.client.send(
            self.client.build_request(
                request.method, str(request.url), headers=request.headers, content=request.read()
            )
        )
        headers = [(k, v) for k, v in r.headers.items() if k.lower() not in HEADERS_NOT_FORWARDED]
        return httpx.Response(r.status_code, headers=headers, content=r.content)


@pytest.fixture
def net(client: TestClient[Any]) -> Switch:
    return Switch(client)


def _core(tmp: Path, net: Switch, **kw: Any) -> PhoneCore:
    return PhoneCore(
        tmp,
        kw.pop("secrets", None) or MemorySecretStore(),
        http=httpx.Client(transport=net, base_url="http://testserver.local"),
        geolocator=kw.pop("geolocator", None) or _here(),
        photo_edge=320,
        chunk_size=8 * 1024,
        **kw,
    )


def _here() -> FixedGeolocator:
    geo = FixedGeolocator(*SHANGHAI_A, accuracy_m=6.0)
    geo.start()
    return geo


def _send(core: PhoneCore) -> Any:
    return asyncio.run(core.send_now())


def _ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201), r.text
    return r.json()


def _jpeg(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.jpg"
    path.write_bytes(photo(taken="2026:11:20 16:20:00", size=(480, 360)))
    return path


@pytest.fixture
def server(client: TestClient[Any]) -> str:
    return str(client.base_url)


def test_responder_day_accept_en_route_offline_arrive_complete_with_photo(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    task = _ok(client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task()))
    tid = uuid.UUID(task["id"])
    core = _core(tmp_path, net)
    core.sign_in(server, "fire1", DEMO_PASSWORD)
    assert _send(core).ok
    mine = {t.id: t for t in core.views.my_tasks()}
    assert mine[tid].status == "assigned" and not mine[tid].pending

    net.online = False
    core.actions.accept_task(tid)
    core.actions.en_route(tid)
    report = _send(core)
    assert not report.ok  # nothing reached the server, nothing was lost
    assert [i.state for i in core.outbox.items()] == [ItemState.WAITING] * 2
    detail = core.views.task(tid)
    assert detail is not None and detail.task.status == "en_route" and detail.task.pending
    assert [(e.to_status, e.pending) for e in detail.timeline][-2:] == [
        ("accepted", True),
        ("en_route", True),
    ]
    assert {t.id for t in core.views.my_tasks(status="en_route")} >= {tid}

    net.online = True
    core.actions.on_scene(tid)
    pic = core.add_photo(_jpeg(tmp_path, "scene"))
    assert pic is not None
    done = core.actions.complete_task(tid, note="fire out", photos=[pic])
    report = _send(core)
    assert report.ok, report.error
    assert report.sync is not None and report.sync.refused == 0
    assert [u.state for u in report.uploads] == [PhotoState.STORED]

    # The phone: the server's timeline, nothing pending, the photo sent.
    detail = core.views.task(tid)
    assert detail is not None and detail.task.status == "completed" and not detail.task.pending
    steps = [e for e in detail.timeline if e.to_status != "assigned"]
    assert [(e.to_status, e.pending) for e in steps] == [
        ("accepted", False),
        ("en_route", False),
        ("on_scene", False),
        ("completed", False),
    ]
    assert steps[-1].id == str(done) and steps[-1].photos_done == 1
    assert steps[0].item["location"] == f.point(*SHANGHAI_A)  # stamped with the fix
    assert all(i.state is ItemState.SENT for i in core.outbox.items())
    # The server agrees, each step once, the photo stored.
    row = _ok(client.get(f"/api/v1/tasks/{tid}", headers=auth("dispatcher")))
    assert row["status"] == "completed"
    timeline = _ok(client.get(f"/api/v1/tasks/{tid}/timeline", headers=auth("dispatcher")))
    assert [e["to_status"] for e in timeline] == [
        "assigned",
        "accepted",
        "en_route",
        "on_scene",
        "completed",
    ]
    assert timeline[-1]["id"] == str(done) and timeline[-1]["photo_ids"] == [pic.media_id]
    media = _ok(client.get(f"/api/v1/media/{pic.sha256}", headers=auth("fire1")))
    assert media["status"] == "stored" and media["id"] == pic.media_id
    core.close()


def test_inspector_reports_with_three_photos_offline_upload_killed_and_flapping(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    secrets = MemorySecretStore()  # a restarted app finds its tokens again
    core = _core(tmp_path, net, secrets=secrets)
    core.sign_in(server, "inspector1", DEMO_PASSWORD)
    assert _send(core).ok
    net.online = False
    pics = [core.add_photo(_jpeg(tmp_path, f"p{n}")) for n in range(3)]
    refs = [p for p in pics if p is not None]
    hid = core.actions.report_hazard(
        category="fire", severity="high", description="blocked exit, three photos", photos=refs
    )
    [item] = core.outbox.items()
    assert (item.state, item.photos_done, item.photos_total) == (ItemState.WAITING, 0, 3)
    assert item.state_text("en") == "Waiting · 0 of 3 photos sent"
    assert core.views.hazards(mine=True)[0].id == hid

    # Online; the app is killed after the second chunk of the first photo reached the server.
    net.online = True
    patches = {"n": 0}

    def kill(step: str) -> None:
        if step == "patched":
            patches["n"] += 1
            if patches["n"] == 2:
                raise KeyboardInterrupt("app killed")

    core.uploader.fault = kill
    with pytest.raises(KeyboardInterrupt):
        _send(core)
    # The record reached the server before its photos.
    row = _ok(client.get(f"/api/v1/hazards/{hid}", headers=auth("dispatcher")))
    assert sorted(row["photo_ids"]) == sorted(p.media_id for p in refs)
    core.close()

    # Restarted: the same files, a new core. The link drops again after two requests.
    core = _core(tmp_path, net, secrets=secrets)
    core.open()
    first = core.photos.get(refs[0].sha256)
    assert first is not None and first.state is PhotoState.UPLOADING and first.upload_url
    upload_path = httpx.URL(first.upload_url).path
    restart = len(net.requests)
    net.fail_after = 2
    report = _send(core)
    assert not report.ok
    net.online = True
    report = _send(core)
    assert report.ok, report.error
    assert {p.state for p in core.photos.all()} == {PhotoState.STORED}
    [view] = [h for h in core.views.hazards() if h.id == hid]
    assert view.photos_sent == (3, 3) and view.status == "reported" and not view.pending
    [item] = core.outbox.items()
    assert (item.state, item.photos_done, item.photos_total) == (ItemState.SENT, 3, 3)
    # Resumed from the server's offset: the server had two chunks (the phone recorded only
    # one: it was killed before storing the second answer); HEAD, then on from 16 KiB.
    after = [r for r in net.requests[restart:] if upload_path in r]
    patches = [r for r in after if r.startswith("PATCH")]
    assert after[0] == f"HEAD {upload_path}"
    assert patches[0] == f"PATCH {upload_path} {2 * 8 * 1024}"

    # The server: one hazard, one report step, every photo stored once.
    row = _ok(client.get(f"/api/v1/hazards/{hid}", headers=auth("dispatcher")))
    assert sorted(p["media_id"] for p in row["photos"]) == sorted(p.media_id for p in refs)
    assert {p["status"] for p in row["photos"]} == {"stored"}
    timeline = _ok(client.get(f"/api/v1/hazards/{hid}/timeline", headers=auth("dispatcher")))
    assert [e["to_status"] for e in timeline] == ["reported"]
    for ref in refs:
        media = _ok(client.get(f"/api/v1/media/{ref.sha256}", headers=auth("inspector1")))
        assert media["id"] == ref.media_id and media["status"] == "stored"
        tracked = core.photos.get(ref.sha256)
        assert tracked is not None and sha(tracked.path.read_bytes()) == media["sha256"]
    core.close()


def _one_photo_hazard(core: PhoneCore, tmp: Path, name: str) -> tuple[PhotoRef, int]:
    """A hazard with one photo queued; returns the photo and its number of 8 KiB chunks."""
    ref = core.add_photo(_jpeg(tmp, name))
    assert ref is not None
    core.actions.report_hazard(category="fire", severity="low", description=name, photos=[ref])
    tracked = core.photos.get(ref.sha256)
    assert tracked is not None
    return ref, -(-tracked.size // (8 * 1024))


def test_killed_after_the_last_chunk_the_resume_finishes_from_head_without_a_patch(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    """The app dies right after the server took a photo's last chunk (as if that answer were
    lost): the resume's HEAD says the upload is stored, and that answer finishes the photo. A
    PATCH there is 409 (the upload is finished); the uploader used to HEAD and PATCH again
    without end, in the round's worker thread, which `asyncio.run` then waited for for ever.
    The link drops after 12 requests, so a loop ends the round instead of hanging the test."""
    secrets = MemorySecretStore()
    core = _core(tmp_path, net, secrets=secrets)
    core.sign_in(server, "inspector1", DEMO_PASSWORD)
    ref, chunks = _one_photo_hazard(core, tmp_path, "killed after its last chunk")
    patches = {"n": 0}

    def kill(step: str) -> None:
        if step == "patched":
            patches["n"] += 1
            if patches["n"] == chunks:
                raise KeyboardInterrupt("app killed")

    core.uploader.fault = kill
    with pytest.raises(KeyboardInterrupt):
        _send(core)
    core.close()

    core = _core(tmp_path, net, secrets=secrets)
    core.open()
    tracked = core.photos.get(ref.sha256)
    assert tracked is not None and tracked.state is PhotoState.UPLOADING and tracked.upload_url
    upload_path = httpx.URL(tracked.upload_url).path
    restart = len(net.requests)
    net.fail_after = 12
    report = _send(core)
    assert report.ok, report.error
    assert [r for r in net.requests[restart:] if upload_path in r] == [f"HEAD {upload_path}"]
    tracked = core.photos.get(ref.sha256)
    assert tracked is not None and tracked.state is PhotoState.STORED
    media = _ok(client.get(f"/api/v1/media/{ref.sha256}", headers=auth("inspector1")))
    assert media["id"] == tracked.media_id and media["status"] == "stored"
    [item] = core.outbox.items()
    assert (item.state, item.photos_done, item.photos_total) == (ItemState.SENT, 1, 1)
    core.close()


class RefusingSwitch(Switch):
    """`Switch` whose server answers every PATCH with `status` while `refuse` is set."""

    def __init__(self, client: TestClient[Any], status: int, headers: dict[str, str]) -> None:
        super().__init__(client)
        self.refuse, self.status, self.headers = True, status, headers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse and request.method == "PATCH":
            self.requests.append(f"PATCH {request.url.path}")
            return httpx.Response(self.status, headers={**self.headers, "Tus-Resumable": "1.0.0"})
        return super().handle_request(request)


def _round_ends_then_resumes(
    net: RefusingSwitch, server: str, tmp_path: Path, patches: int
) -> None:
    """A photo's round against a server answering every PATCH with `net.status` ends with an
    upload error after `patches` PATCHes (the link drops after 40 requests, bounding a loop);
    once the server behaves, the photo is stored."""
    core = _core(tmp_path, net)
    core.sign_in(server, "inspector1", DEMO_PASSWORD)
    error = f"upload: PATCH: HTTP {net.status}"
    ref, _ = _one_photo_hazard(core, tmp_path, error)
    net.fail_after = 40
    report = _send(core)
    assert report.error is not None and report.error.startswith(error)
    assert len([r for r in net.requests if r.startswith("PATCH")]) == patches
    net.refuse, net.online, net.fail_after = False, True, None
    assert _send(core).ok
    tracked = core.photos.get(ref.sha256)
    assert tracked is not None and tracked.state is PhotoState.STORED
    core.close()


def test_a_patch_the_server_keeps_answering_409_ends_the_round_and_resumes_later(
    client: TestClient[Any], server: str, tmp_path: Path
) -> None:
    """409 then HEAD is a resume from the server's offset; 409 again and again at the offset
    HEAD gave is no progress: after 3 the round ends with an upload error (its backoff waits)
    instead of looping at once."""
    _round_ends_then_resumes(
        RefusingSwitch(client, 409, {"Upload-Offset": "0"}), server, tmp_path, 4
    )


def test_an_upload_gone_at_every_patch_ends_the_round_and_resumes_later(
    client: TestClient[Any], server: str, tmp_path: Path
) -> None:
    """A 404 to a PATCH starts a new upload; a server that loses every new upload at once
    ends the round after three (it used to start again by recursion without a limit)."""
    _round_ends_then_resumes(RefusingSwitch(client, 404, {}), server, tmp_path, 3)


def test_refusals_show_in_the_outbox_with_their_rule(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    task = _ok(client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task()))
    tid = uuid.UUID(task["id"])
    core = _core(tmp_path, net)
    core.sign_in(server, "fire1", DEMO_PASSWORD)
    assert _send(core).ok
    # Dispatch cancels while the responder, offline, accepts.
    r = client.post(
        f"/api/v1/tasks/{tid}/transitions",
        headers=auth("dispatcher"),
        json={"to_status": "cancelled", "note": "false alarm"},
    )
    _ok(r)
    step = core.actions.accept_task(tid)
    report = _send(core)
    assert report.ok and report.sync is not None and report.sync.refused == 1
    [item] = core.outbox.items()
    assert item.state is ItemState.REFUSED and item.record_id == step
    assert (item.code, item.rule) == ("illegal_transition", "illegal_transition")
    assert item.reason("en") == "Not allowed in the record's current state"
    assert item.reason() == "当前状态不允许此操作"
    assert item.state_text() == "被拒绝"
    # The record shows as the server has it; the refused step is no longer pending.
    [view] = [t for t in core.views.my_tasks() if t.id == tid]
    assert view.status == "cancelled" and not view.pending
    core.close()


def test_session_refresh_and_logout_keep_unsent_items(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    task = _ok(client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task()))
    tid = uuid.UUID(task["id"])
    clock = ManualClock(utcnow())
    geo = FixedGeolocator(*SHANGHAI_A, accuracy_m=6.0, now=clock)
    geo.start()
    core = _core(tmp_path, net, now=clock, geolocator=geo)
    signed = core.sign_in(server, "fire1", DEMO_PASSWORD)
    assert (signed.unsent, signed.photos) == (0, 0)
    assert "device_secret" not in net.bodies["/api/v1/auth/login"][0]  # a first sign-in
    secret_key = device_secret_key(server, "fire1")
    issued = core.session.secrets.get(secret_key)
    assert issued
    assert _send(core).ok
    used = core.usage.total()
    assert used.requests >= 1 and used.sent > 300 and used.received > 1000
    assert core.store.get("task", tid) is not None
    first = core.session.tokens
    assert first is not None

    # Near expiry the token is refreshed before the request; sync goes on.
    clock.advance((first.expires_at - clock()).total_seconds() - 30)
    assert _send(core).ok
    renewed = core.session.tokens
    assert core.session.refreshes == 1 and renewed is not None
    assert renewed.refresh_token != first.refresh_token  # the old one is spent
    assert renewed.expires_at > first.expires_at

    # Offline: a progress note and a fix are queued, then the user signs out.
    net.online = False
    note = core.actions.task_note(tid, "hydrant at the north gate")
    assert core.actions.report_position() is not None
    out = core.sign_out()
    assert (out.unsent, out.photos) == (2, 0)
    path = core.session.data_dir / "users"
    [store_file] = list(path.glob("*/store.db"))
    db = sqlite3.connect(store_file)
    entities = sorted(e for (e,) in db.execute("SELECT entity FROM records"))
    assert entities == ["position_fix", "task_step"]  # no task, no incident stays
    assert db.execute("SELECT count(*) FROM scopes").fetchone()[0] == 0
    db.close()
    assert core.session.tokens is None and core.session.account is None

    # Someone else signs in on this phone: their own store, none of fire1's items.
    net.online = True
    other = core.sign_in(server, "fire2", DEMO_PASSWORD)
    assert (other.unsent, other.photos) == (0, 0)
    assert core.store.pending_count() == 0
    assert _send(core).ok
    core.sign_out()

    # fire1 again: proves the device with the kept secret (it survived sign-out), gets a new
    # one; told about the two items, which go out now, once.
    again = core.sign_in(server, "fire1", DEMO_PASSWORD)
    assert net.bodies["/api/v1/auth/login"][-1]["device_secret"] == issued
    assert core.session.secrets.get(secret_key) not in (None, issued)
    assert (again.unsent, again.photos) == (2, 0)
    report = _send(core)
    assert report.ok and report.sync is not None and report.sync.accepted == 2
    timeline = _ok(client.get(f"/api/v1/tasks/{tid}/timeline", headers=auth("dispatcher")))
    assert [e["id"] for e in timeline].count(str(note)) == 1
    assert core.store.get("task", tid) is not None  # a fresh snapshot came back
    core.close()


def test_a_shedding_server_holds_the_round_and_nothing_is_refused(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    """503 + Retry-After on declaring a photo stops the round before the push (a record naming
    an undeclared photo would be refused `unknown_photo`); the loop waits the server's time."""
    core = _core(tmp_path, net)
    core.sign_in(server, "inspector1", DEMO_PASSWORD)
    pic = core.add_photo(_jpeg(tmp_path, "busy"))
    assert pic is not None
    hid = core.actions.report_hazard(
        category="fire", severity="low", description="shed while declaring", photos=[pic]
    )
    net.busy["/api/v1/media"] = 45
    before = len(net.requests)
    report = asyncio.run(core.background.round())
    assert report is not None and not report.ok and report.retry_after_s == 45
    assert not any("/sync/push" in r or "/sync/exchange" in r for r in net.requests[before:])
    status = core.background.status
    assert status.state.value == "backing_off" and status.retry_at is not None
    assert (status.retry_at - utcnow()).total_seconds() >= 44
    net.busy.clear()
    report = asyncio.run(core.background.round())
    assert report is not None and report.ok and report.sync is not None
    assert report.sync.refused == 0 and [u.state for u in report.uploads] == [PhotoState.STORED]
    row = _ok(client.get(f"/api/v1/hazards/{hid}", headers=auth("dispatcher")))
    assert [p["status"] for p in row["photos"]] == ["stored"]
    core.close()


def test_a_step_between_the_push_answer_and_the_pull_builds_on_the_acknowledged_one(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    task = _ok(client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task()))
    tid = uuid.UUID(task["id"])
    core = _core(tmp_path, net)
    core.sign_in(server, "fire1", DEMO_PASSWORD)
    assert _send(core).ok
    core.actions.accept_task(tid)
    asyncio.run(core.sync.push())  # answered; the pull that confirms it has not run yet
    assert core.store.pending_count() == 0
    assert core.store.get("task", tid)["status"] == "assigned"  # type: ignore[index]
    assert core.actions.task_status(tid) == "accepted"
    core.actions.en_route(tid)  # not refused as "assigned -> en_route"
    report = _send(core)
    assert report.ok and report.sync is not None and report.sync.refused == 0
    assert core.store.get("task", tid)["status"] == "en_route"  # type: ignore[index]
    core.close()
