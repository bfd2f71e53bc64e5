"""Devices edit the same hazards offline against the REAL server (the Litestar app over HTTP
semantics, a real database, both backends) while requests and answers are lost at random and
the app is re-created ("server restart"). After a quiet sync every device equals what a fresh
device of the same user pulls, no acknowledged write is missing (present, overwritten later, or
kept as a conflict; refusals are logged on the device), nothing is duplicated, and the domain
rows agree with the change log."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from litestar.testing import TestClient
from sqlalchemy import select

from schemas.sync import Ack, AckStatus, Conflict, Mutation, Op
from server.app import create_app
from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.domain.sync.storage import decode_state
from server.models import Hazard, SyncConflict, SyncMutation, SyncRecord
from sync.client import TransportError
from sync.merge import RecordState
from sync.store import LocalRefusalError
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.sync_helpers import Phone

SEVERITIES = ["low", "medium", "high", "critical"]
STATUSES = ["verified", "rejected", "rectification_assigned", "rectified", "closed", "reopened"]
DROPS = [None, ("push", "before"), ("push", "after"), ("pull", "before"), ("pull", "after")]
USERS = ["inspector1", "inspector1", "dispatcher"]

import msgspec  # noqa: E402

_ack = msgspec.msgpack.Decoder(Ack)
_conflict = msgspec.json.Decoder(Conflict)


def read_server(
    url: str, ids: list[uuid.UUID], devices: list[str]
) -> tuple[
    dict[uuid.UUID, RecordState], dict[tuple[str, int], Ack], list[Conflict], dict[uuid.UUID, Any]
]:
    async def run() -> Any:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as s:
                recs = {
                    rid: decode_state(blob)
                    for rid, blob in (
                        await s.execute(
                            select(SyncRecord.record_id, SyncRecord.state).where(
                                SyncRecord.entity == "hazard", SyncRecord.record_id.in_(ids)
                            )
                        )
                    ).all()
                }
                acks = {
                    (d, seq): _ack.decode(blob)
                    for d, seq, blob in (
                        await s.execute(
                            select(
                                SyncMutation.device_id, SyncMutation.seq, SyncMutation.ack
                            ).where(SyncMutation.device_id.in_(devices))
                        )
                    ).all()
                }
                conflicts = [
                    _conflict.decode(d)
                    for d in (
                        await s.execute(
                            select(SyncConflict.data).where(SyncConflict.record_id.in_(ids))
                        )
                    ).scalars()
                ]
                domain = {
                    h.id: h
                    for h in (await s.execute(select(Hazard).where(Hazard.id.in_(ids)))).scalars()
                }
                return recs, acks, conflicts, domain
        finally:
            await engine.dispose()

    return asyncio.run(run())  # type: ignore[no-any-return]


class RealServerDevices(RuleBasedStateMachine):
    app_settings: Settings
    sessions: Sessions
    user_ids: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.cm: Any = TestClient(app=create_app(self.app_settings))
        self.client = self.cm.__enter__()
        self.phones = [Phone(self.client, self.sessions(u)) for u in USERS]
        for p in self.phones:
            p.client.pull_limit = 60  # several pages: resumable pagination under loss
            p.client.push_batch = 3
        self.written: list[list[Mutation]] = [[] for _ in USERS]
        self.records: list[uuid.UUID] = []

    def teardown(self) -> None:
        try:
            self.check()
        finally:
            for p in self.phones:
                p.close()
            self.cm.__exit__(None, None, None)

    @initialize()
    def seed(self) -> None:
        for _ in range(2):
            self._create(0)
        self.sync(0, None)
        for n in range(len(USERS)):
            self.sync(n, None)

    def _write(self, n: int, rid: uuid.UUID, fields: dict[str, Any], op: Op = Op.UPDATE) -> None:
        try:
            self.written[n].append(self.phones[n].store.write("hazard", rid, fields, op=op))
        except LocalRefusalError:
            pass

    def _create(self, n: int) -> None:
        rid = uuid.uuid4()
        self.records.append(rid)
        body = f.hazard()
        body.update({"title": "t", "status": "reported", "photos": [], "timeline": []})
        self._write(n, rid, body, Op.CREATE)

    def _pick(self, i: int) -> uuid.UUID:
        return self.records[i % len(self.records)]

    # Valid values, so that concurrent edits are accepted and really merge (and conflict).
    @rule(n=st.integers(0, 2), i=st.integers(0, 5), title=st.sampled_from("abc"))
    def edit_title(self, n: int, i: int, title: str) -> None:
        self._write(n, self._pick(i), {"title": title})

    @rule(n=st.integers(0, 2), i=st.integers(0, 5), sev=st.sampled_from(SEVERITIES))
    def edit_severity(self, n: int, i: int, sev: str) -> None:
        self._write(n, self._pick(i), {"severity": sev})

    # Hazard steps are refused on the sync path (they go through the transitions endpoint):
    # this keeps refusals, and their revert on the device, in the mix.
    @rule(n=st.integers(0, 2), i=st.integers(0, 5), s=st.sampled_from(STATUSES))
    def edit_status(self, n: int, i: int, s: str) -> None:
        self._write(n, self._pick(i), {"status": s})

    @rule(n=st.integers(0, 2), i=st.integers(0, 5), p=st.sampled_from(["p1", "p2"]))
    def add_photo(self, n: int, i: int, p: str) -> None:
        self._write(n, self._pick(i), {"photos": [f"{p}-{n}"]})

    @rule(n=st.integers(0, 2))
    def create(self, n: int) -> None:
        self._create(n)

    @precondition(lambda self: len(self.records) > 2)
    @rule(n=st.integers(0, 2), i=st.integers(0, 5))
    def delete(self, n: int, i: int) -> None:
        self._write(n, self._pick(i), {}, Op.DELETE)

    @rule(n=st.integers(0, 2), drop=st.sampled_from(DROPS))
    def sync(self, n: int, drop: tuple[str, str] | None) -> None:
        phone = self.phones[n]
        phone.transport.drop = drop
        try:
            phone.sync()
        except TransportError:
            pass

    @rule()
    def restart_server(self) -> None:
        self.cm.__exit__(None, None, None)
        self.cm = TestClient(app=create_app(self.app_settings))
        self.client = self.cm.__enter__()
        for p in self.phones:
            p.transport.client = self.client

    def check(self) -> None:
        for _ in range(2):
            for n in range(len(USERS)):
                self.sync(n, None)
        keys = [
            f"{self.user_ids[u]}/{p.store.device_id}"
            for u, p in zip(USERS, self.phones, strict=True)
        ]
        recs, acks, conflicts, domain = read_server(
            self.app_settings.database_url, self.records, keys
        )
        mine = set(self.records)
        for n, phone in enumerate(self.phones):
            assert phone.store.pending_count() == 0
            fresh = Phone(self.client, self.sessions(USERS[n]))
            fresh.sync()
            want = {k: v for k, v in fresh.store.all("hazard").items() if k in mine}
            have = {k: v for k, v in phone.store.all("hazard").items() if k in mine}
            fresh.close()
            assert have == want
            refused = {e.seq for e in phone.store.log_entries("refused")}
            for m in self.written[n]:
                ack = acks[(keys[n], m.seq)]
                if ack.status is AckStatus.REFUSED:
                    assert m.seq in refused
                    continue
                rec = recs[m.id]
                for name, value in m.fields.items():
                    if name in ack.lost:
                        assert any(
                            c.field == name and c.loser_device == keys[n] and c.loser_hlc == m.hlc
                            for c in conflicts
                        ), (name, m)
                        continue
                    # An acknowledged, not refused, not lost write must be on the server.
                    assert name in rec.fields, (name, m)
                    fs = rec.fields[name]
                    if fs.version >= ack.version:
                        continue  # applied at ack.version, or overwritten later
                    if name == "photos":
                        assert set(value) <= set(fs.value)
                    elif not (name == "status" and rec.deleted):
                        assert fs.value == value, (name, m, fs)
                if m.op is Op.DELETE:
                    assert rec.deleted
        for rid, rec in recs.items():
            photos = rec.fields["photos"].value if "photos" in rec.fields else []
            assert len(photos) == len(set(photos)), "duplicated append-only items"
            row = domain.get(rid)
            if row is None:
                assert rec.deleted  # created and deleted in one batch: never a domain row
                continue
            assert (row.deleted_at is not None) == rec.deleted
            if not rec.deleted:
                assert row.status == rec.fields["status"].value
                assert row.severity == rec.fields["severity"].value
                assert sorted(row.photo_ids) == sorted(photos)


@pytest.mark.slow
def test_devices_converge_against_the_real_server(
    settings: Settings, auth: Sessions, client: TestClient[Any]
) -> None:
    RealServerDevices.app_settings = settings
    RealServerDevices.sessions = auth
    RealServerDevices.user_ids = {u: str(f.did(f"user:{u}")) for u in USERS}
    run_state_machine_as_test(
        RealServerDevices,
        settings=settings_for_test(),
    )


def settings_for_test() -> Any:
    return settings(
        max_examples=10,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
