"""Photo records (`media`) through sync, both databases: a photo travels with the hazards it is
attached to (and to its uploader), its status follows the upload, and a photo a device attaches
through sync is linked as REST's report links it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar.testing import TestClient

from schemas.sync import AckStatus, Mutation, Op, Reason
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.sync_helpers import Phone
from tests.integration.test_media_api import photo, sha, upload
from tests.integration.test_sync_api import push


def test_a_photo_travels_with_its_hazard_and_its_status_follows_the_upload(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp = auth("inspector1")
    data = photo()
    r = client.post("/api/v1/hazards", headers=insp, json=f.hazard(photo_sha256=[sha(data)]))
    assert r.status_code == 201, r.text
    hazard = r.json()
    media = client.post("/api/v1/media", headers=insp, json={"sha256": sha(data)}).json()
    mid = media["id"]
    phones = {who: Phone(client, auth(who)) for who in ("inspector1", "inspector2", "dispatcher")}
    try:
        for p in phones.values():
            p.sync()
        held = phones["inspector1"].get("media", mid)
        assert held is not None and held["status"] == "pending" and held["sha256"] == sha(data)
        assert f"grid:{hazard['grid_id']}" in held["shared_with"]
        assert phones["dispatcher"].get("media", mid) is not None  # the hazard's area
        assert phones["inspector2"].get("media", mid) is None  # another grid
        assert phones["inspector2"].store.all("media") == {}

        # The bytes arrive: every phone holding the photo learns it is stored.
        assert upload(client, insp, data).status_code == 201
        for p in phones.values():
            p.sync()
        for who in ("inspector1", "dispatcher"):
            now = phones[who].get("media", mid)
            assert now is not None and now["status"] == "stored", who
            assert now["width"] and now["height"], who

        # The reporter's phone corrects the location into grid B: the photo follows the hazard.
        moved = f.point(*f.IN_GRID_B)
        phones["inspector1"].store.write("hazard", uuid.UUID(hazard["id"]), {"location": moved})
        phones["inspector1"].sync()
        assert not phones["inspector1"].store.log_entries("refused")
        for p in phones.values():
            p.sync()
        there = phones["inspector2"].get("media", mid)
        assert there is not None and there["status"] == "stored"
        assert f"grid:{f.did('grid:B')}" in there["shared_with"]
        assert f"grid:{hazard['grid_id']}" not in there["shared_with"]
        assert phones["inspector1"].get("media", mid) is not None  # still the uploader's

        # Devices cannot write photo records (they upload through the API).
        h = int(time.time() * 1000) << 16
        refused = push(
            client,
            insp,
            "dev-media",
            [Mutation(seq=1, entity="media", id=uuid.UUID(mid), hlc=h, fields={"size": 1})],
        )
        assert refused.acks[0].refusal is not None
        assert refused.acks[0].refusal.code is Reason.READ_ONLY
    finally:
        for p in phones.values():
            p.close()


def test_a_photo_attached_through_sync_is_linked_and_shared(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp = auth("inspector1")
    hazard = client.post("/api/v1/hazards", headers=insp, json=f.hazard()).json()
    data = photo()
    mid = str(uuid.uuid4())  # the phone names the photo, then declares it
    declared = client.post("/api/v1/media", headers=insp, json={"sha256": sha(data), "id": mid})
    assert declared.status_code in (200, 201), declared.text
    phone, dispatch = Phone(client, insp), Phone(client, auth("dispatcher"))
    try:
        phone.sync()
        phone.store.write("hazard", uuid.UUID(hazard["id"]), {"photo_ids": [mid]})
        phone.sync()
        assert phone.store.pending_count() == 0 and not phone.store.log_entries("refused")
        got = client.get(f"/api/v1/hazards/{hazard['id']}", headers=auth("dispatcher")).json()
        # Linked as REST's report links a photo: listed, and missing until its bytes arrive.
        assert mid in got["photo_ids"], got
        assert [p["media_id"] for p in got["photos"]] == [mid], got
        assert got["missing_photos"] == [sha(data)], got
        dispatch.sync()
        held = dispatch.get("media", mid)
        assert held is not None and f"grid:{hazard['grid_id']}" in held["shared_with"]
        again = push(
            client,
            insp,
            "dev-again",
            [
                Mutation(
                    seq=1,
                    entity="hazard",
                    id=uuid.UUID(hazard["id"]),
                    hlc=int(time.time() * 1000) << 16,
                    op=Op.UPDATE,
                    fields={"photo_ids": [mid]},
                )
            ],
        )
        assert again.acks[0].status is AckStatus.ACCEPTED  # linking twice is harmless
    finally:
        phone.close()
        dispatch.close()
