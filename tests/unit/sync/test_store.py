"""ClientStore: atomic writes and pulls, refusal revert, evictions keep edits, resync replay."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from schemas.sync import Op, Reason
from sync.client import SyncClient
from sync.hlc import ManualClock
from sync.store import ClientStore, LocalRefusalError
from tests.unit.sync.helpers import LocalTransport, Rig, grid_id, hazard_fields

pytestmark = pytest.mark.anyio


class Crash(Exception):
    pass


def crash_at(step: str):  # type: ignore[no-untyped-def]
    def hook(name: str) -> None:
        if name == step:
            raise Crash(name)

    return hook


def test_local_write_and_outbox_commit_together(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = ClientStore(db, fault=crash_at("write:queued"))
    rid = uuid.uuid4()
    with pytest.raises(Crash):
        store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    assert store.pending() == [] and store.get("hazard", rid) is None
    store.close()
    again = ClientStore(db)
    m = again.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    assert m.seq == 1  # the crashed write did not consume a sequence number
    assert again.get("hazard", rid)["description"] == "Blocked exit"
    assert [p.seq for p in again.pending()] == [1]


def test_local_refusals_are_raised_before_queuing() -> None:
    store = ClientStore()
    with pytest.raises(LocalRefusalError) as err:
        store.write("hazard", uuid.uuid4(), {"reporter_id": str(uuid.uuid4())})
    assert err.value.refusal.code is Reason.SERVER_OWNED
    with pytest.raises(LocalRefusalError):
        store.write("incident", uuid.uuid4(), {"description": "x"}, op=Op.CREATE)
    assert store.pending_count() == 0


async def test_pulled_batch_and_cursor_commit_together(tmp_path: Path, rig: Rig) -> None:
    writer = SyncClient(ClientStore(), LocalTransport(rig, "w"))
    for _ in range(5):
        writer.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await writer.sync_once()
    db = tmp_path / "r.db"
    reader = SyncClient(ClientStore(db, fault=crash_at("pull:page")), LocalTransport(rig, "r"))
    with pytest.raises(Crash):
        await reader.sync_once()
    assert reader.store.cursors() == {} and reader.store.all("hazard") == {}
    reader.store.close()
    fresh = SyncClient(ClientStore(db), LocalTransport(rig, "r"))
    await fresh.sync_once()
    assert len(fresh.store.all("hazard")) == 5
    assert fresh.store.snapshot("grid:g1") == await rig.server().scope_snapshot("grid:g1")


async def test_crash_while_settling_acks_then_retry_is_deduplicated(rig: Rig) -> None:
    store = ClientStore(fault=crash_at("acks:one"))
    client = SyncClient(store, LocalTransport(rig, "a"))
    rid = uuid.uuid4()
    store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    store.write("hazard", rid, {"photo_ids": ["p1"]})
    with pytest.raises(Crash):
        await client.sync_once()  # the server applied it; the device did not record the acks
    assert store.pending_count() == 2
    store._fault = None
    result = await client.sync_once()
    assert result.duplicate == 2 and store.pending_count() == 0
    assert rig.storage.record("hazard", rid).fields["photo_ids"].value == ["p1"]
    assert store.get("hazard", rid)["photo_ids"] == ["p1"]


async def test_refused_mutation_is_reverted_and_logged(rig: Rig) -> None:
    store = ClientStore()
    client = SyncClient(store, LocalTransport(rig, "a"))
    rid = uuid.uuid4()
    store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    await client.sync_once()
    store.write("hazard", rid, {"status": "closed"})  # illegal jump, allowed locally
    store.write("hazard", rid, {"description": "still fine"})
    assert store.get("hazard", rid)["status"] == "closed"
    result = await client.sync_once()
    assert result.refused == 1 and result.accepted == 1
    view = store.get("hazard", rid)
    assert view["status"] == "reported" and view["description"] == "still fine"
    (entry,) = store.log_entries("refused")
    assert entry.code == Reason.ILLEGAL_TRANSITION and entry.detail["fields"] == {
        "status": "closed"
    }


async def test_refused_create_disappears(rig: Rig) -> None:
    rig.policy.forbidden_users.add("m")
    store = ClientStore()
    rid = uuid.uuid4()
    store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    await SyncClient(store, LocalTransport(rig, "m")).sync_once()
    assert store.get("hazard", rid) is None and store.all("hazard") == {}


async def test_evicted_record_leaves_but_unsynced_edit_is_kept_and_pushed(rig: Rig) -> None:
    store = ClientStore()
    client = SyncClient(store, LocalTransport(rig, "a"))
    rid = uuid.uuid4()
    store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    await client.sync_once()
    store.write("hazard", rid, {"description": "offline note"})
    await rig.server().write("hazard", rid, {"grid_id": grid_id("g2")})
    await client.pull()  # the eviction arrives before the edit is pushed
    assert store.get("hazard", rid) is None
    assert store.aside()[("hazard", rid)]["description"] == "offline note"
    assert store.pending_count() == 1
    await client.sync_once()
    assert rig.storage.record("hazard", rid).fields["description"].value == "offline note"
    assert store.get("hazard", rid) is None and store.pending_count() == 0


async def test_scope_dropped_for_user_removes_records(rig: Rig) -> None:
    store = ClientStore()
    client = SyncClient(store, LocalTransport(rig, "a"))
    store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await client.sync_once()
    assert len(store.all("hazard")) == 1
    rig.policy.user_scope_map["a"] = frozenset({"grid:g2"})
    result = await client.sync_once()
    assert store.all("hazard") == {} and result.evicted == {"grid:g1": 1}
    assert "grid:g1" not in store.cursors()


async def test_resync_replaces_scope_and_replays_outbox(rig: Rig) -> None:
    store = ClientStore()
    client = SyncClient(store, LocalTransport(rig, "a"), pull_limit=1)
    keep, gone = uuid.uuid4(), uuid.uuid4()
    store.write("hazard", keep, hazard_fields(), op=Op.CREATE)
    store.write("hazard", gone, hazard_fields(), op=Op.CREATE)
    await client.sync_once()
    other = SyncClient(ClientStore(), LocalTransport(rig, "b"))
    await other.sync_once()
    other.store.write("hazard", gone, {}, op=Op.DELETE)
    await other.sync_once()
    rig.clock.advance(31 * 86_400_000)
    await rig.server().purge_tombstones()
    store.write("hazard", keep, {"description": "offline edit"})
    await client.pull()  # pull first: resync while the edit is still pending
    assert store.log_entries("resync")
    assert set(store.all("hazard")) == {keep}
    assert store.get("hazard", keep)["description"] == "offline edit"
    await client.sync_once()
    assert rig.storage.record("hazard", keep).fields["description"].value == "offline edit"


async def test_checksum_mismatch_refetches_the_scope(rig: Rig) -> None:
    store = ClientStore()
    client = SyncClient(store, LocalTransport(rig, "a"))
    rid = uuid.uuid4()
    store.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    await client.sync_once()
    # Corrupt the device copy behind the store's back (as a bad flash write would).
    store._db.execute("DELETE FROM members")
    store._db.execute("UPDATE scopes SET checksum=12345")
    await rig.server().write("hazard", rid, {"status_reason": "checked by dispatch"})
    await client.sync_once()
    assert store.log_entries("checksum_mismatch")
    assert store.snapshot("grid:g1") == await rig.server().scope_snapshot("grid:g1")


def test_process_killed_mid_pull_loses_nothing(tmp_path: Path) -> None:
    """A real process is killed with os._exit inside the pull transaction."""
    db = tmp_path / "k.db"
    script = textwrap.dedent(f"""
        import os, uuid, anyio
        from schemas.sync import Op
        from sync.client import SyncClient
        from sync.store import ClientStore
        from tests.unit.sync.helpers import LocalTransport, Rig, hazard_fields

        async def main():
            rig = Rig()
            w = SyncClient(ClientStore(), LocalTransport(rig, "w"))
            for _ in range(3):
                w.store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
            await w.sync_once()
            def kill(step):
                if step == "pull:records":
                    os._exit(9)
            s = ClientStore({str(db)!r}, fault=kill, device_id="dev")
            s.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
            await SyncClient(s, LocalTransport(rig, "r")).pull()
        anyio.run(main)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path.cwd(), check=False)
    assert proc.returncode == 9
    store = ClientStore(db, clock=ManualClock())
    assert store.device_id == "dev" and store.cursors() == {}
    assert store.pending_count() == 1 and len(store.all("hazard")) == 1


async def test_a_pulled_change_keeps_the_devices_unsent_edit_on_top(rig: Rig) -> None:
    """A record with a queued edit gets another field changed by someone else: the pull
    shows both (the pull rebuilds the local view of records with outbox rows)."""
    a, b = ClientStore(device_id="a"), ClientStore(device_id="b")
    ca, cb = SyncClient(a, LocalTransport(rig, "a")), SyncClient(b, LocalTransport(rig, "b"))
    rid = uuid.uuid4()
    a.write("hazard", rid, hazard_fields(), op=Op.CREATE)
    await ca.sync_once()
    await cb.sync_once()
    a.write("hazard", rid, {"description": "Exit cleared by A"})  # queued, not sent
    b.write("hazard", rid, {"severity": "low"})
    await cb.sync_once()
    await ca.pull()
    seen = a.get("hazard", rid)
    assert seen is not None
    assert (seen["description"], seen["severity"]) == ("Exit cleared by A", "low")
    assert a.pending_count() == 1


# The records and members tables as apps before store layout 1 wrote them (kept here to build
# such a file from a current one), with an index like the app's read models make.
_LAYOUT_0 = """
CREATE TABLE records_0(
    entity TEXT NOT NULL, id BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 0,
    data BLOB, local BLOB, PRIMARY KEY(entity, id));
INSERT INTO records_0 SELECT entity, id, version, data, local FROM records ORDER BY n DESC;
CREATE TABLE members_0(
    scope TEXT NOT NULL, entity TEXT NOT NULL, id BLOB NOT NULL,
    version INTEGER NOT NULL, stale INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(scope, entity, id));
INSERT INTO members_0 SELECT m.scope, r.entity, r.id, m.version, m.stale
    FROM members m JOIN records r ON r.n=m.rec;
DROP TABLE members;
DROP TABLE records;
ALTER TABLE records_0 RENAME TO records;
ALTER TABLE members_0 RENAME TO members;
CREATE INDEX members_by_record ON members(id);
CREATE INDEX app_hazards ON records(json_extract(data, '$.status')) WHERE entity='hazard';
PRAGMA user_version=0;
"""


async def test_a_store_an_older_app_wrote_is_upgraded_in_place(tmp_path: Path, rig: Rig) -> None:
    """An app update opens a phone's file of store layout 0: memberships, cursors, checksums
    and the unsent outbox survive, and the next sync runs on the new layout."""
    db = tmp_path / "old.db"
    store = ClientStore(db, device_id="dev")
    client = SyncClient(store, LocalTransport(rig, "a"))
    kept = uuid.uuid4()
    for _ in range(4):
        store.write("hazard", uuid.uuid4(), hazard_fields(), op=Op.CREATE)
    await client.sync_once()
    store.write("hazard", kept, hazard_fields(), op=Op.CREATE)  # unsent at the upgrade
    before = (store.snapshot("grid:g1"), store.cursors(), store.checksum("grid:g1"))
    store._db.executescript(_LAYOUT_0)
    store.close()

    upgraded = ClientStore(db)
    db_sql = upgraded._db.execute("SELECT sql FROM sqlite_master WHERE name='members'")
    assert "WITHOUT ROWID" in db_sql.fetchone()[0]
    indexes = upgraded._db.execute("SELECT name FROM sqlite_master WHERE tbl_name='records'")
    assert "app_hazards" in {name for (name,) in indexes}
    assert upgraded._db.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert (
        upgraded.snapshot("grid:g1"),
        upgraded.cursors(),
        upgraded.checksum("grid:g1"),
    ) == before
    assert upgraded.device_id == "dev" and upgraded.pending_count() == 1
    await rig.server().write("hazard", next(iter(before[0]))[1], {"severity": "low"})
    await SyncClient(upgraded, LocalTransport(rig, "a")).sync_once()
    assert upgraded.snapshot("grid:g1") == await rig.server().scope_snapshot("grid:g1")
    assert not upgraded.log_entries("checksum_mismatch") and upgraded.pending_count() == 0
    upgraded.close()
    assert ClientStore(db).snapshot("grid:g1") == await rig.server().scope_snapshot("grid:g1")
