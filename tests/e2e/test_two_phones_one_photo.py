"""Two phones photograph the same notice: the same bytes, so the same SHA-256, and the server
keeps one media object per hash. The second phone's declare answers the first phone's id;
its queued writes (made offline, naming its own id) must be rewritten to that id before the
push, or the server refuses them (`unknown_photo`). The phone core against the real app on
both databases (tests/integration/test_phone_core.py's network switch), nothing mocked."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from mobile.core.outbox import ItemState
from mobile.core.photos import PhotoState
from schemas.ids import uuid7
from schemas.sync import Op
from tests import factories as f
from tests.conftest import DEMO_PASSWORD, Sessions
from tests.integration.test_phone_core import Switch, _core, _jpeg, _ok, _send, net, server

__all__ = ["net", "server"]  # fixtures


def test_two_phones_send_the_same_photo_bytes_and_both_records_are_accepted(
    client: TestClient[Any], auth: Sessions, net: Switch, server: str, tmp_path: Path
) -> None:
    task = _ok(client.post("/api/v1/tasks", headers=auth("dispatcher"), json=f.task()))
    tid = uuid.UUID(task["id"])
    same = _jpeg(tmp_path, "notice")  # both phones' cameras produce these bytes

    a = _core(tmp_path / "a", net)
    a.sign_in(server, "inspector1", DEMO_PASSWORD)
    b = _core(tmp_path / "b", net)
    b.sign_in(server, "fire1", DEMO_PASSWORD)
    assert _send(b).ok

    # Phone B writes offline first, naming the id it made for the photo.
    net.online = False
    ref_b = b.add_photo(same)
    assert ref_b is not None
    b.actions.task_note(tid, "门口告示照片", photos=[ref_b])
    net.online = True

    # Phone A reports a hazard with the same bytes and sends first: its id is the server's.
    ref_a = a.add_photo(same)
    assert ref_a is not None and ref_a.sha256 == ref_b.sha256 and ref_a.media_id != ref_b.media_id
    hid = a.actions.report_hazard(
        category="fire", severity="high", description="消防通道告示", photos=[ref_a]
    )
    assert _send(a).ok
    assert a.store.log_entries("refused") == []

    # Phone B's round: the declare answers A's id; the queued note is rewritten and accepted.
    report = _send(b)
    assert report.ok, report.error
    assert b.store.log_entries("refused") == [], b.store.log_entries("refused")
    tracked = b.photos.get(ref_b.sha256)
    assert tracked is not None and tracked.media_id == ref_a.media_id
    assert tracked.state is PhotoState.STORED  # A's bytes are there: nothing to upload
    [note] = b.outbox.items()
    assert note.state is ItemState.SENT and note.fields["photo_ids"] == [ref_a.media_id]

    # A screen still holding B's old ref: the write names the server's id.
    b.actions.task_note(tid, "已处置", photos=[ref_b])
    # A write queued while a declare ran, naming the old id: rewritten before the push.
    b.store.write(
        "task_step",
        uuid7(),
        {
            "task_id": str(tid),
            "note": "补充照片",
            "at": "2026-11-20T08:00:00.000Z",
            "device_id": b.store.device_id,
            "photo_ids": [ref_b.media_id],
        },
        op=Op.CREATE,
    )
    report = _send(b)
    assert report.ok, report.error
    assert b.store.log_entries("refused") == [], b.store.log_entries("refused")

    # The server: the hazard and every task step carry the one media object.
    hazard = _ok(client.get(f"/api/v1/hazards/{hid}", headers=auth("dispatcher")))
    assert hazard["photo_ids"] == [ref_a.media_id]
    timeline = _ok(client.get(f"/api/v1/tasks/{tid}/timeline", headers=auth("dispatcher")))
    notes = [e for e in timeline if e.get("note") in ("门口告示照片", "已处置", "补充照片")]
    assert len(notes) == 3, timeline
    assert all(e.get("photo_ids") == [ref_a.media_id] for e in notes), notes
    a.close()
    b.close()
