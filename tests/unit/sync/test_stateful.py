"""Several devices edit the same records offline in random order; requests and answers are
lost at random (before and after the server applied them); the server restarts. After a quiet
sync every device equals the server, no acknowledged write is missing (each is present, or kept
in a conflict, or logged as a refusal on its device) and nothing is duplicated."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from schemas.sync import AckStatus, Mutation, Op
from sync.client import SyncClient, TransportError
from sync.hlc import ManualClock
from sync.store import ClientStore, LocalRefusalError
from tests.unit.sync.helpers import LocalTransport, Rig, grid_id, hazard_fields

SCOPE = "grid:g1"
DEVICES = 3
STATUSES = [
    "reported",
    "verified",
    "rejected",
    "rectification_assigned",
    "rectified",
    "reinspected",
    "closed",
    "reopened",
]
DROPS = [None, ("push", "before"), ("push", "after"), ("pull", "before"), ("pull", "after")]


class Device:
    def __init__(self, rig: Rig, n: int) -> None:
        self.clock = ManualClock(rig.clock.now_ms() + n * 7)  # slightly skewed clocks
        self.store = ClientStore(clock=self.clock, device_id=f"dev{n}")
        self.drop: tuple[str, str] | None = None
        self.transport = LocalTransport(rig, f"user{n}", self._drop)
        self.client = SyncClient(self.store, self.transport, pull_limit=3, push_batch=2)
        self.written: list[Mutation] = []

    def _drop(self, kind: str, when: str) -> bool:
        if self.drop == (kind, when):
            self.drop = None  # lose one message, then the network recovers
            return True
        return False


class OfflineDevices(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.rig = Rig()
        self.devices = [Device(self.rig, n) for n in range(DEVICES)]
        self.records: list[uuid.UUID] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for d in self.devices:
            d.store.close()
        self.loop.close()

    @initialize()
    def seed(self) -> None:
        for _ in range(2):
            rid = uuid.uuid4()
            self.records.append(rid)
            self.run(
                self.rig.server().write(
                    "hazard", rid, {**hazard_fields(), "grid_id": grid_id("g1")}, op=Op.CREATE
                )
            )
        for d in self.devices:
            self.run(d.client.sync_once())

    def _write(self, d: Device, rid: uuid.UUID, fields: dict[str, Any], op: Op = Op.UPDATE) -> None:
        d.clock.advance(3)
        try:
            d.written.append(d.store.write("hazard", rid, fields, op=op))
        except LocalRefusalError:
            pass

    @rule(n=st.integers(0, DEVICES - 1), i=st.integers(0, 5), title=st.sampled_from("abc"))
    def edit_title(self, n: int, i: int, title: str) -> None:
        self._write(self.devices[n], self.records[i % len(self.records)], {"description": title})

    @rule(n=st.integers(0, DEVICES - 1), i=st.integers(0, 5), s=st.sampled_from(STATUSES))
    def edit_status(self, n: int, i: int, s: str) -> None:
        self._write(self.devices[n], self.records[i % len(self.records)], {"status": s})

    @rule(n=st.integers(0, DEVICES - 1), i=st.integers(0, 5), p=st.sampled_from(["p1", "p2", "p3"]))
    def add_photo(self, n: int, i: int, p: str) -> None:
        d = self.devices[n]
        self._write(
            d,
            self.records[i % len(self.records)],
            {"photo_ids": [p], "timeline": [{"id": f"{d.store.device_id}-{p}", "p": p}]},
        )

    @rule(n=st.integers(0, DEVICES - 1))
    def create(self, n: int) -> None:
        rid = uuid.uuid4()
        self.records.append(rid)
        self._write(self.devices[n], rid, hazard_fields(), Op.CREATE)

    @precondition(lambda self: len(self.records) > 2)
    @rule(n=st.integers(0, DEVICES - 1), i=st.integers(0, 5))
    def delete(self, n: int, i: int) -> None:
        self._write(self.devices[n], self.records[i % len(self.records)], {}, Op.DELETE)

    @rule(i=st.integers(0, 5), grid=st.sampled_from(["g1", "g2"]))
    def move(self, i: int, grid: str) -> None:
        rid = self.records[i % len(self.records)]
        rec = self.rig.storage.record("hazard", rid)
        if rec is not None:
            self.rig.clock.advance(1)
            self.run(self.rig.server().write("hazard", rid, {"grid_id": grid_id(grid)}))

    @rule(n=st.integers(0, DEVICES - 1), drop=st.sampled_from(DROPS))
    def sync(self, n: int, drop: tuple[str, str] | None) -> None:
        d = self.devices[n]
        d.drop = drop
        try:
            self.run(d.client.sync_once())
        except TransportError:
            pass

    @rule()
    def restart_server(self) -> None:
        self.rig.restart()

    @invariant()
    def outbox_never_loses_unanswered_writes(self) -> None:
        for d in self.devices:
            outcomes = self.rig.storage.outcomes()
            pending = {m.seq for m in d.store.pending()}
            for m in d.written:
                assert m.seq in pending or (d.store.device_id, m.seq) in outcomes

    def teardown_check(self) -> None:
        # Quiet sync: two rounds so every device sees what the others pushed.
        for _ in range(2):
            for d in self.devices:
                d.drop = None
                self.run(d.client.sync_once())
        expected = self.run(self.rig.server().scope_snapshot(SCOPE))
        outcomes = self.rig.storage.outcomes()
        conflicts = self.rig.storage.conflicts()
        for d in self.devices:
            assert d.store.pending_count() == 0
            assert d.store.snapshot(SCOPE) == expected
            visible = {("hazard", r): v for r, v in d.store.all("hazard").items()}
            assert visible == {k: v for k, (_, v) in expected.items()}
            refused_logged = {e.seq for e in d.store.log_entries("refused")}
            for m in d.written:
                ack = outcomes[(d.store.device_id, m.seq)]
                if ack.status is AckStatus.REFUSED:
                    assert m.seq in refused_logged
                    continue
                self._check_kept(d.store.device_id, m, ack.version, ack.lost, conflicts)
        for rec in self.rig.storage.records():
            for name in ("photo_ids", "timeline"):
                items = rec.fields[name].value if name in rec.fields else []
                keys = [i["id"] if isinstance(i, dict) else i for i in items]
                assert len(keys) == len(set(keys)), "duplicated append-only items"

    def _check_kept(
        self, device: str, m: Mutation, version: int, lost: list[str], conflicts: list[Any]
    ) -> None:
        rec = self.rig.storage.record(m.entity, m.id)
        assert rec is not None
        for name, value in m.fields.items():
            if name in lost:
                assert any(
                    c.record_id == m.id
                    and c.field == name
                    and c.loser_device == device
                    and c.loser_hlc == m.hlc
                    for c in conflicts
                ), (name, m)
                continue
            fs = rec.fields[name]
            if fs.version >= version:
                continue  # applied at `version` (or overwritten later by a newer write)
            if name in ("photo_ids", "timeline"):
                have = {str(i) for i in fs.value}
                assert {str(i) for i in value} <= have
            else:
                assert fs.value == value, (name, m, fs)
        if m.op is Op.DELETE:
            assert rec.deleted


OfflineDevices.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestOfflineDevices(OfflineDevices.TestCase):  # type: ignore[name-defined,misc]
    pass


# Hypothesis calls teardown(); run the quiet-sync checks first.
_orig_teardown = OfflineDevices.teardown


def _teardown(self: OfflineDevices) -> None:
    try:
        self.teardown_check()
    finally:
        _orig_teardown(self)


OfflineDevices.teardown = _teardown  # type: ignore[method-assign]
