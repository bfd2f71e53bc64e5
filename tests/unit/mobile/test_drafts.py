"""Drafts: saved on every change, durable across a killed app, offered back newest first,
removed when sent or discarded, and kept through sign-out with the photos they hold."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from mobile.core import localdb
from mobile.core.clock import ManualClock
from mobile.core.drafts import Drafts
from mobile.core.photos import PhotoState, PhotoStore, PreparedPhoto
from sync.store import ClientStore


def test_a_draft_survives_a_killed_app_and_is_offered_back(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "store.db"
    ClientStore(path, device_id="d").close()
    photos = PhotoStore(path, now=clock)
    pic = tmp_path / "p.jpg"
    pic.write_bytes(b"jpeg")
    ref = photos.add(PreparedPhoto(pic, "a" * 64, 4, 1, 1))
    drafts = Drafts(photos.db, now=clock)
    drafts.save("hazard_report", {"description": "blocked ex"})
    clock.advance(5)
    saved = drafts.save("hazard_report", {"description": "blocked exit"}, photos=[ref])
    assert saved.revision == 2
    clock.advance(60)
    drafts.save("task_complete", {"note": "fire out"}, key="task-1")
    # Killed: no close, no commit call; another connection (the restarted app) reads it.
    again = Drafts(localdb.connect(path), now=clock)
    offered = again.all()
    assert [(d.form, d.key) for d in offered] == [
        ("task_complete", "task-1"),
        ("hazard_report", "new"),
    ]
    report = offered[1]
    assert report.values == {"description": "blocked exit"} and report.photos == [ref]
    assert report.revision == 2 and report.saved_at == clock() - timedelta(seconds=60)
    assert "continue it?" in report.offer_text("en") and "是否继续" in report.offer_text()
    assert again.discard("task_complete", "task-1") and not again.discard("task_complete", "x")
    assert [d.form for d in again.all()] == ["hazard_report"]


def test_sign_out_keeps_drafts_and_their_stored_photos(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    ClientStore(path, device_id="d").close()
    photos = PhotoStore(path)
    refs = []
    for n in range(2):
        f = tmp_path / f"p{n}.jpg"
        f.write_bytes(b"jpeg%d" % n)
        refs.append(photos.add(PreparedPhoto(f, str(n) * 64, 5, 1, 1)))
        photos.update(str(n) * 64, state=PhotoState.STORED)
    Drafts(photos.db).save("hazard_report", {"description": "x"}, photos=refs[:1])
    photos.close()
    localdb.wipe_except_unsent(path)
    photos = PhotoStore(path)
    assert [p.sha256 for p in photos.all()] == [refs[0].sha256]  # the draft's photo stays
    assert (tmp_path / "p0.jpg").exists() and not (tmp_path / "p1.jpg").exists()
    assert [d.photos for d in Drafts(photos.db).all()] == [refs[:1]]
