"""A hazard reaches the phones of whoever must rectify it (the assigned enterprise's staff, the
assigned organisation's members), with its photos, as REST shows it to them; migration 0012
brings hazards assigned under the old scope rules there, and tombstones the sync records the
old `alerts` table left behind."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from schemas.sync import Op
from server.db import make_engine
from server.domain.sync import mapping
from server.domain.sync.changelog import SyncRuntime
from server.domain.sync.storage import SqlTx, drive
from server.migrate import alembic_config, upgrade
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.sync_helpers import Phone
from tests.integration.test_hazard_loop import deadline, step
from tests.integration.test_media_api import photo, sha

OLD_RULES = mapping.HAZARD_SCOPE_KEYS[:4]  # grid, enterprise, reporter, area: before 0012


def _assigned_hazard(client: TestClient[Any], auth: Sessions, **assignee: str) -> tuple[str, str]:
    """An inspector's hazard (no enterprise) with a photo, verified and assigned; its id and
    the photo's id."""
    insp = auth("inspector1")
    data = photo()
    r = client.post("/api/v1/hazards", headers=insp, json=f.hazard(photo_sha256=[sha(data)]))
    assert r.status_code == 201, r.text
    hazard = r.json()
    assert hazard["enterprise_id"] is None
    media = client.post("/api/v1/media", headers=insp, json={"sha256": sha(data)}).json()
    d = auth("dispatcher")
    assert step(client, d, hazard["id"], "verified").status_code == 201
    r = step(client, d, hazard["id"], "rectification_assigned", deadline=deadline(), **assignee)
    assert r.status_code == 201, r.text
    return hazard["id"], media["id"]


def test_a_hazard_assigned_to_an_enterprise_reaches_its_staff_with_its_photo(
    client: TestClient[Any], auth: Sessions
) -> None:
    ent = str(f.did("enterprise:bund-mall"))
    hid, mid = _assigned_hazard(client, auth, assignee_enterprise_id=ent)
    staff = auth("enterprise1")
    assert client.get(f"/api/v1/hazards/{hid}", headers=staff).status_code == 200  # REST
    phone = Phone(client, staff)
    try:
        phone.sync()
        held = phone.get("hazard", hid)
        assert held is not None and held["rectify_enterprise_id"] == ent
        photo_rec = phone.get("media", mid)
        assert photo_rec is not None and f"enterprise:{ent}" in photo_rec["shared_with"]
    finally:
        phone.close()


def test_a_hazard_assigned_to_an_organisation_reaches_its_members(
    client: TestClient[Any], auth: Sessions
) -> None:
    org = str(f.did("org:fire2"))
    hid, mid = _assigned_hazard(client, auth, assignee_org_id=org)
    fire2 = Phone(client, auth("fire2"))
    try:
        fire2.sync()
        assert client.get(f"/api/v1/hazards/{hid}", headers=auth("fire2")).status_code == 200
        # Held through the assignment, wherever the hazard is (not only by its area).
        mine = fire2.store.snapshot(f"org:{org}")
        assert ("hazard", uuid.UUID(hid)) in mine
        assert ("media", uuid.UUID(mid)) in mine
    finally:
        fire2.close()


def test_migration_0012_moves_old_assignments_and_drops_old_alert_records(
    client: TestClient[Any], auth: Sessions, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ent = str(f.did("enterprise:bund-mall"))
    with monkeypatch.context() as old:
        old.setattr(mapping, "HAZARD_SCOPE_KEYS", OLD_RULES)
        hid, mid = _assigned_hazard(client, auth, assignee_enterprise_id=ent)
    # A record of the table 0008 dropped: entity `alert`, live, not a warning.
    stale = uuid.uuid4()

    def write(conn: Connection) -> None:
        s = Session(bind=conn)
        server = SyncRuntime().server(s)
        drive(server.server_writes(SqlTx(s), [("alert", stale, {"status": "Actual"}, Op.CREATE)]))

    async def run() -> None:
        engine = make_engine(database_url)
        async with engine.begin() as conn:
            await conn.run_sync(write)
        await engine.dispose()

    asyncio.run(run())
    staff, admin = Phone(client, auth("enterprise1")), Phone(client, auth("admin"))
    try:
        staff.sync()
        admin.sync()
        assert staff.get("hazard", hid) is None  # the old rules: the assignee never got it
        assert admin.get("alert", stale) is not None

        # 0012 again, alone: the later migrations are schema changes already made here.
        command.stamp(alembic_config(database_url), "0011")
        upgrade(database_url, "0012")
        command.stamp(alembic_config(database_url), "head")

        staff.sync()
        admin.sync()
        held = staff.get("hazard", hid)
        assert held is not None and held["rectify_enterprise_id"] == ent
        assert staff.get("media", mid) is not None  # its photo followed
        assert admin.get("alert", stale) is None  # tombstoned: the phone dropped it
        upgrade(database_url)  # at head: nothing to do
    finally:
        staff.close()
        admin.close()
