"""`SqlOutboxStore.commit_deliveries` and the worker's group commit on real SpatiaLite and PostGIS,
sending through the real firebase-admin SDK to the FCM stand-in: one record per (event, device),
lease ownership kept, far fewer transactions, and a crash resends only the stated window."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import firebase_admin
import msgspec
import pytest
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from push.base import Channel, DeliveryResult, PushMessage, PushSender
from push.fcm import FcmSender, firebase_app
from push.outbox import Delivery, OutboxWorker, PushJob
from server.db import make_engine, make_sessionmaker
from server.models import PushDelivery, PushJobRow
from server.outbox import SqlOutboxStore
from tests.conftest import fresh_database
from tests.integration.push.conftest import PROJECT
from tests.peers.fcm_standin import FcmStandIn

LEASE = timedelta(seconds=60)


@pytest.fixture(scope="module")
def outbox_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_database(backend, tmp_path_factory.mktemp("gc"), scratch="liandong_push_gc")


# A stand-in and an SDK app of this module's own, so that the session's stand-in (whose message
# ids other modules assert on) never sees these hundreds of sends.
@pytest.fixture(scope="module")
def fcm() -> Iterator[FcmStandIn]:
    with FcmStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def fcm_sender(fcm: FcmStandIn) -> Iterator[FcmSender]:
    app = firebase_app(PROJECT, name=f"group-commit-{uuid.uuid4().hex[:6]}", http_timeout=5)
    yield FcmSender(app, endpoint=fcm.base_url, max_concurrency=16)
    firebase_admin.delete_app(app)


class WorkerKilled(Exception):
    """The process died here (raised, so the test can look at what the database kept)."""


class CrashingStore(SqlOutboxStore):
    """The real store, except that the `crash_at`-th group commit never happens."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], crash_at: int) -> None:
        super().__init__(sessions)
        self.crash_at = crash_at
        self.groups = 0

    async def commit_deliveries(self, deliveries: Sequence[Delivery]) -> set[str]:
        self.groups += 1
        if self.groups == self.crash_at:
            raise WorkerKilled("worker killed before the group committed")
        return await super().commit_deliveries(deliveries)


class Harness:
    """A tagged set of jobs in the outbox and the store/engine to work them with."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = make_engine(url)
        self.sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        self.tag = uuid.uuid4().hex[:8]
        self.commits = 0

        @event.listens_for(self.engine.sync_engine, "commit")
        def _count(_conn: Any) -> None:
            self.commits += 1

    def token(self, i: int) -> str:
        return f"tok-{self.tag}-{i}"

    async def add_jobs(self, n: int, at: datetime) -> list[uuid.UUID]:
        ids = [uuid.uuid4() for _ in range(n)]
        rows = [
            {
                "id": ids[i],
                "event_id": f"ev-{self.tag}-{i}",
                "device_id": f"dev-{self.tag}-{i}",
                "channel": "fcm",
                "address": self.token(i),
                "message": msgspec.json.encode(
                    PushMessage(data={"event_id": f"ev-{self.tag}-{i}"})
                ).decode(),
                "state": "pending",
                "attempts": 0,
                "not_before": at,
                "created_at": at,
            }
            for i in range(n)
        ]
        async with self.sessions() as s, s.begin():
            await s.execute(insert(PushJobRow).values(rows))
        return ids

    async def jobs(self) -> dict[str, Any]:
        """job id -> row, for this harness's jobs."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(PushJobRow).where(PushJobRow.event_id.like(f"ev-{self.tag}-%"))
            )
            return {str(r.id): r for r in rows.scalars()}

    async def records(self) -> dict[tuple[str, str], Any]:
        async with self.sessions() as s:
            rows = await s.execute(
                select(PushDelivery).where(PushDelivery.event_id.like(f"ev-{self.tag}-%"))
            )
            return {(r.event_id, r.device_id): r for r in rows.scalars()}

    def sent(self, standin: FcmStandIn) -> list[str]:
        tokens = (m.token or "" for m in standin.messages())
        return [t for t in tokens if t.startswith(f"tok-{self.tag}")]


def test_commit_deliveries_records_every_send_and_closes_only_what_it_still_leases(
    outbox_url: str,
) -> None:
    t0 = datetime(2033, 1, 1, tzinfo=UTC)

    async def scenario() -> None:
        h = Harness(outbox_url)
        store = SqlOutboxStore(h.sessions)
        try:
            await h.add_jobs(3, t0)
            a_jobs = await store.claim_due(now=t0, limit=10, lease_for=LEASE)
            a_jobs = sorted(a_jobs, key=lambda j: j.address)
            assert len(a_jobs) == 3
            # The third job's lease runs out early and worker B takes it over.
            async with h.sessions() as s, s.begin():
                await s.execute(
                    update(PushJobRow)
                    .where(PushJobRow.id == uuid.UUID(a_jobs[2].job_id))
                    .values(leased_until=t0)
                )
            [b_job] = await store.claim_due(
                now=t0 + timedelta(seconds=1), limit=10, lease_for=LEASE
            )
            assert b_job.job_id == a_jobs[2].job_id and b_job.lease_token != a_jobs[2].lease_token

            at = [t0 + timedelta(milliseconds=k) for k in range(3)]
            deliveries = [Delivery(j, at[k], f"p-{k}") for k, j in enumerate(a_jobs)]
            before = h.commits
            closed = await store.commit_deliveries(deliveries)
            assert h.commits - before == 1  # one transaction for the whole group
            assert closed == {a_jobs[0].job_id, a_jobs[1].job_id}  # not B's job

            records = await h.records()
            assert len(records) == 3  # every send is recorded, B's job included
            rows = await h.jobs()
            for k in (0, 1):
                row = rows[a_jobs[k].job_id]
                assert row.state == "delivered" and row.lease_token is None
                assert row.delivered_at == at[k]  # the job's own time, from its record
            taken = rows[b_job.job_id]
            assert taken.state == "pending" and taken.lease_token == b_job.lease_token

            # Replaying the same group changes nothing (insert-if-absent, guard on the lease).
            assert await store.commit_deliveries(deliveries) == set()
            assert len(await h.records()) == 3
            # B, still the owner, closes its job; the record keeps the first delivery's time.
            later = Delivery(b_job, t0 + timedelta(seconds=2), "p-b")
            assert await store.commit_deliveries([later]) == {b_job.job_id}
            rows = await h.jobs()
            assert rows[b_job.job_id].state == "delivered"
            assert rows[b_job.job_id].delivered_at == at[2]
            records = await h.records()
            assert records[(b_job.event_id, b_job.device_id)].provider_id == "p-2"
        finally:
            await h.engine.dispose()

    asyncio.run(scenario())


def test_a_batch_is_delivered_once_per_device_in_a_few_transactions(
    outbox_url: str, fcm: FcmStandIn, fcm_sender: FcmSender
) -> None:
    t0 = datetime(2034, 1, 1, tzinfo=UTC)
    n, group, lanes = 120, 16, 8

    async def scenario() -> tuple[Harness, int]:
        h = Harness(outbox_url)
        try:
            await h.add_jobs(n, t0)
            worker = OutboxWorker(
                SqlOutboxStore(h.sessions),
                {Channel.FCM: fcm_sender},
                clock=lambda: t0,
                concurrency=lanes,
                commit_group=group,
                commit_window_s=60,  # only full groups and the batch's end commit
            )
            before = h.commits
            report = await worker.run_once()
            assert (report.claimed, report.delivered, report.lost_leases) == (n, n, 0)
            assert report.commits <= math.ceil(n / group)
            transactions = h.commits - before
            assert transactions == 1 + report.commits  # the claim, then the groups
            rows = await h.jobs()
            assert all(r.state == "delivered" and r.delivered_at == t0 for r in rows.values())
            assert len(await h.records()) == n
        finally:
            await h.engine.dispose()
        return h, transactions

    h, transactions = asyncio.run(scenario())
    sent = h.sent(fcm)
    assert sorted(sent) == sorted(h.token(i) for i in range(n))  # each device once
    assert transactions <= 1 + math.ceil(n / group)  # was 1 + 2 * n


@pytest.mark.parametrize(("group", "lanes"), [(1, 4), (16, 8)])
def test_a_crash_before_a_group_commits_resends_only_that_window(
    outbox_url: str, fcm: FcmStandIn, fcm_sender: FcmSender, group: int, lanes: int
) -> None:
    t0 = datetime(2035, 1, 1, tzinfo=UTC) + timedelta(days=group)
    n = 100

    async def scenario() -> tuple[Harness, int, set[str]]:
        h = Harness(outbox_url)
        try:
            await h.add_jobs(n, t0)
            crashing = CrashingStore(h.sessions, crash_at=3)
            worker = OutboxWorker(
                crashing,
                {Channel.FCM: fcm_sender},
                clock=lambda: t0,
                concurrency=lanes,
                commit_group=group,
                commit_window_s=60,
            )
            crashed = False
            try:
                await worker.run_once()
            except* WorkerKilled:
                crashed = True
            assert crashed
            committed = {str(k) for k, r in (await h.jobs()).items() if r.state == "delivered"}
            unrecorded = len(h.sent(fcm)) - len(await h.records())
            # A new worker once the dead one's leases have run out.
            later = t0 + LEASE + timedelta(seconds=1)
            again = OutboxWorker(
                SqlOutboxStore(h.sessions),
                {Channel.FCM: fcm_sender},
                clock=lambda: later,
                concurrency=lanes,
                commit_group=group,
            )
            while (await again.run_once()).claimed:
                pass
            rows = await h.jobs()
            assert all(r.state == "delivered" for r in rows.values())
            assert len(await h.records()) == n
            tokens = {rows[k].address for k in committed}
        finally:
            await h.engine.dispose()
        return h, unrecorded, tokens

    h, unrecorded, committed_tokens = asyncio.run(scenario())
    assert 0 < unrecorded <= group - 1 + lanes  # the documented window, and it is real
    sent = h.sent(fcm)
    assert set(sent) == {h.token(i) for i in range(n)}
    assert len(sent) - n == unrecorded  # exactly the unrecorded sends went out twice
    assert all(sent.count(token) == 1 for token in committed_tokens)


class TakeOverDuringSend:
    """A PushSender around the real one: while the first message is in flight, its lease runs
    out and another worker claims the job (a send slower than `lease_for`)."""

    channel = Channel.FCM

    def __init__(self, inner: PushSender, store: SqlOutboxStore, at: datetime) -> None:
        self.inner = inner
        self.store = store
        self.at = at
        self.taken: list[PushJob] = []

    async def send(self, address: str, message: PushMessage) -> DeliveryResult:
        if not self.taken:
            self.taken.extend(await self.store.claim_due(now=self.at, limit=10, lease_for=LEASE))
        return await self.inner.send(address, message)


def test_a_job_taken_over_mid_send_is_recorded_but_not_closed_by_the_old_worker(
    outbox_url: str, fcm: FcmStandIn, fcm_sender: FcmSender
) -> None:
    t0 = datetime(2036, 1, 1, tzinfo=UTC)
    late = t0 + LEASE + timedelta(seconds=1)

    async def scenario() -> Harness:
        h = Harness(outbox_url)
        store = SqlOutboxStore(h.sessions)
        try:
            [job_id] = await h.add_jobs(1, t0)
            slow = TakeOverDuringSend(fcm_sender, store, late)
            report = await OutboxWorker(store, {Channel.FCM: slow}, clock=lambda: t0).run_once()
            assert (report.delivered, report.lost_leases, report.commits) == (0, 1, 1)
            [taken] = slow.taken
            row = (await h.jobs())[str(job_id)]
            assert row.state == "pending" and row.lease_token == taken.lease_token
            assert len(await h.records()) == 1  # the message *was* delivered

            # After the new owner's lease runs out too, the next worker finds the record.
            latest = late + LEASE + timedelta(seconds=1)
            worker = OutboxWorker(store, {Channel.FCM: fcm_sender}, clock=lambda: latest)
            again = await worker.run_once()
            assert (again.claimed, again.skipped_duplicates) == (1, 1)
            assert (await h.jobs())[str(job_id)].state == "delivered"
        finally:
            await h.engine.dispose()
        return h

    h = asyncio.run(scenario())
    assert h.sent(fcm) == [h.token(0)]


def test_the_worker_loop_survives_a_failing_group_commit(
    tmp_path: Path, fcm: FcmStandIn, fcm_sender: FcmSender, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error inside the group commit (a task of the worker) reaches the server's
    worker loop wrapped in an exception group; the loop must still log it and carry on."""
    from server.pushing import Background
    from tests.conftest import make_settings

    url = fresh_database("sqlite", tmp_path)

    async def scenario() -> None:
        h = Harness(url)
        try:
            await h.add_jobs(3, datetime.now(UTC) - timedelta(seconds=1))
            async with h.engine.begin() as conn:  # every group commit now fails
                await conn.exec_driver_sql(
                    "CREATE TRIGGER refuse BEFORE INSERT ON push_deliveries"
                    " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            settings = make_settings(url, tmp_path, outbox_poll_s=0.05, escalate_poll_s=3600.0)
            background = Background(settings, h.sessions, senders={Channel.FCM: fcm_sender})
            async with background.running():
                await asyncio.sleep(0.5)
            async with h.sessions() as s:
                pending = await s.scalar(
                    select(func.count())
                    .select_from(PushJobRow)
                    .where(PushJobRow.state == "pending")
                )
            assert pending == 3  # nothing closed: the leases will run out and the jobs return
        finally:
            await h.engine.dispose()

    with caplog.at_level("ERROR", logger="liandong.jobs"):
        asyncio.run(scenario())
    assert any("outbox worker failed" in r.getMessage() for r in caplog.records)
