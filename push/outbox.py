"""Transactional-outbox delivery: storage contract, retry policy and the worker.

The server writes a task and one outbox job per (event, device) in the same commit. This module
delivers those jobs; it knows nothing about the database. `OutboxStore` is the contract the
SQLAlchemy store implements; `InMemoryOutboxStore` is the reference implementation the tests use.

Delivery guarantee, stated honestly
-----------------------------------
A device gets each event *at least once* and, except in one bounded window, *at most once*:

1. `claim_due` leases a job to one worker; nobody else touches it until the lease expires.
2. Before sending, the worker asks `delivered_keys` whether (event_id, device_id) already has a
   delivery record; if so the job is closed without sending.
3. When the push service accepts the message, the worker hands it to its group commit, which
   writes the delivery record *and* closes the job in one transaction (`commit_deliveries`),
   together with the other sends accepted meanwhile: one commit per group, not two per message.

After that commit a crash cannot cause a resend: the job is closed, and a job whose lease was
lost meanwhile still gets its record, so a later claim of it finds the record and does not send.

The window is the time between the provider accepting a message and its group committing. A crash
(or a lost database connection) inside it resends the message once the lease expires. It is
bounded in count and in time:

- at most `commit_group - 1 + concurrency` accepted messages of one worker process are ever
  waiting for their commit: once `commit_group` are waiting or committing, every lane that adds
  one more waits until it is committed before it sends again, and a lane that is not waiting has
  at most one send of its own in flight;
- a waiting message is committed `commit_window_s` after the first of its group was accepted
  (sooner when the group fills), plus the time of a commit already under way, and always before
  `run_once` returns, i.e. before the next claim.

`commit_group=1` keeps the old bound: each lane waits for its own message's commit (record +
close in one transaction, shared with whatever other lanes accepted meanwhile) before it sends
the next, so at most `concurrency` messages, one per lane, are ever waiting, as when each record
was committed in a transaction of its own.

An ambiguous network failure (a timeout after the request left) is the same case: the job is
retried and may be a duplicate. Neither FCM v1 nor Web Push has an idempotency key, so the window
cannot be closed on the server; it is narrowed by the `collapse_key` (a still-queued duplicate
replaces the first at the push service) and closed on the phone, which drops a message whose
`data["event_id"]` it has already shown.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

import anyio
import anyio.lowlevel

from push.base import (
    Channel,
    Delivered,
    DeliveryResult,
    PermanentFailure,
    PushMessage,
    PushSender,
    RetryAfter,
    TransientFailure,
)

__all__ = [
    "BatchReport",
    "Clock",
    "Delivery",
    "InMemoryOutboxStore",
    "JobState",
    "OutboxStore",
    "OutboxWorker",
    "PushJob",
    "RetryPolicy",
    "utc_now",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DedupKey = tuple[str, str]  # (event_id, device_id)


def utc_now() -> datetime:
    """The default clock: timezone-aware UTC."""
    return datetime.now(UTC)


class JobState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    # Replaced before it was sent: a newer message of the same chain (an Update or Cancel of a
    # warning) took its place in the publishing transaction. Never claimed again.
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class PushJob:
    """One message for one device, as claimed from the outbox.

    `attempts` counts send attempts already made *before* this claim. `lease_token` identifies
    this claim: a store refuses state changes from a worker whose lease has since been taken over.
    """

    job_id: str
    event_id: str
    device_id: str
    channel: Channel
    address: str
    message: PushMessage
    attempts: int
    lease_token: str

    @property
    def key(self) -> DedupKey:
        return (self.event_id, self.device_id)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A send the push service accepted, waiting for `OutboxStore.commit_deliveries`."""

    job: PushJob
    at: datetime
    provider_id: str | None


class OutboxStore(Protocol):
    """What the worker needs from storage. Every method commits its own small transaction.

    The server's side (not in this Protocol): the request that creates a task inserts the jobs in
    the *same* transaction as the task, state `pending`, `attempts=0`, `not_before=now`, with a
    unique constraint on (event_id, device_id) so a re-run plan cannot enqueue twice.

    Rules for every implementation:
    - each method is atomic and durable when it returns (committed); the worker treats a raised
      exception as "nothing happened" and lets the lease expire;
    - state-changing methods that take a `PushJob` apply only while `job.lease_token` is still the
      job's current lease token and the job is `pending`; otherwise they change nothing and
      return False (another worker owns the job now);
    - times are timezone-aware UTC.
    """

    async def claim_due(self, *, now: datetime, limit: int, lease_for: timedelta) -> list[PushJob]:
        """Lease up to `limit` due jobs and return them, oldest `not_before` first.

        Due: state `pending`, `not_before <= now`, and no live lease (`leased_until` is null or
        `<= now`). Each returned job gets `leased_until = now + lease_for` and a fresh
        `lease_token`. Concurrent claimers must never receive the same job with live leases
        (PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` then `UPDATE` in one transaction;
        SQLite: one `UPDATE ... RETURNING` under the database write lock).
        """
        ...

    async def delivered_keys(self, keys: Sequence[DedupKey]) -> set[DedupKey]:
        """The subset of `keys` (event_id, device_id) that already have a delivery record."""
        ...

    async def record_delivery(self, job: PushJob, *, at: datetime, provider_id: str | None) -> bool:
        """Durably record that `job.key` was delivered; True if this call created the record.

        Insert-if-absent on the unique (event_id, device_id); it applies even if the lease was
        lost, because the message *was* delivered. Must be committed before returning: the
        worker's only protection against a resend after a crash.
        """
        ...

    async def mark_delivered(self, job: PushJob, *, at: datetime) -> bool:
        """Close the job as delivered (state `delivered`, lease cleared)."""
        ...

    async def commit_deliveries(self, deliveries: Sequence[Delivery]) -> set[str]:
        """`record_delivery` then `mark_delivered` for every delivery, all in ONE transaction.

        Returns the `job_id`s this call closed; a job missing from it had lost its lease (its
        record is written all the same). Committed before returning; on a raise nothing of it
        is. The worker's group commit: one transaction for many accepted sends.
        """
        ...

    async def schedule_retry(
        self, job: PushJob, *, at: datetime, attempts: int, error: str
    ) -> bool:
        """Release the job to be claimed again no earlier than `at`; store attempts and error."""
        ...

    async def mark_dead(self, job: PushJob, *, attempts: int, error: str) -> bool:
        """Give up on the job for good (state `dead`, error kept for the dispatcher to see)."""
        ...

    async def prune_address(self, channel: Channel, address: str, *, reason: str) -> int:
        """The address is dead: forget it and cancel what is queued for it.

        Deletes every device push registration on `channel` whose token/subscription is exactly
        `address` (a device that has since registered a new token keeps the new one), and marks
        `dead` every other `pending` job for (channel, address) with `reason`, leased or not.
        Returns the number of jobs cancelled.
        """
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; Retry-After always honoured.

    - attempt n (1-based, the attempt that just failed) waits uniform(0, min(cap, base * 2**(n-1)))
      seconds: full jitter spreads a burst of failures so they do not return in lockstep;
    - a provider's Retry-After of s waits s + uniform(0, retry_after_jitter): never earlier than
      asked, and many devices told "come back in 30 s" do not all return in the same millisecond;
    - after `max_attempts` attempts the job is dead.
    """

    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    max_attempts: int = 8
    retry_after_jitter_seconds: float = 1.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay after failed attempt number `attempt` (>= 1); in [0, cap]."""
        exponent = min(max(attempt - 1, 0), 64)  # 2**64 * base already exceeds any cap
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0**exponent)
        return rng.uniform(0.0, ceiling)

    def after_retry_after(self, seconds: float, rng: random.Random) -> float:
        """Delay honouring a provider's Retry-After; always >= `seconds`."""
        return max(0.0, seconds) + rng.uniform(0.0, self.retry_after_jitter_seconds)


@dataclass(slots=True)
class BatchReport:
    """What one `run_once` did."""

    claimed: int = 0
    delivered: int = 0
    skipped_duplicates: int = 0
    retried: int = 0
    dead: int = 0
    pruned_addresses: int = 0
    lost_leases: int = 0
    commits: int = 0  # `commit_deliveries` transactions: delivered / commits = mean group size
    errors: dict[str, int] = field(default_factory=dict)

    def _error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class _GroupCommit:
    """The accepted sends of one batch's lanes, made durable a group at a time (module doc).

    Lanes `add()` each accepted send and go on sending. One committer task (`run`) commits
    everything waiting in one `commit_deliveries` transaction as soon as `size` sends are
    waiting, `window_s` after the first of them arrived, when a lane asks (`flush`), or when the
    last lane is done; sends accepted during a commit form the next group. A lane whose send
    brings the uncommitted total (waiting + committing) to `size` or more waits until that send
    is committed or the total drops below `size`: so at most `size - 1` sends plus one per lane
    are ever uncommitted.
    """

    def __init__(
        self, store: OutboxStore, report: BatchReport, *, size: int, window_s: float, lanes: int
    ) -> None:
        self._store = store
        self._report = report
        self._size = size
        self._window_s = window_s
        self._lanes = lanes
        self._waiting: list[Delivery] = []
        self._committing = 0
        self._added = 0  # sends ever added; they commit in order, so
        self._committed = 0  # the first `_committed` of them are durable
        self._flush_to = 0
        self._broken = False
        self._wake = anyio.Event()  # set when the committer may have work
        self._done = anyio.Event()  # set (and replaced) when a commit finishes

    def _uncommitted(self) -> int:
        return len(self._waiting) + self._committing

    async def add(self, delivery: Delivery) -> None:
        """Queue an accepted send; returns at once unless the uncommitted total is `size` or
        more, then when this send is committed or the total has dropped below `size`."""
        self._waiting.append(delivery)
        self._added += 1
        mine = self._added
        if len(self._waiting) == 1 or len(self._waiting) >= self._size:
            self._wake.set()
        # After a failed commit (`_broken`) a lane sends nothing more: it waits here until the
        # failure cancels the lanes.
        while self._broken or (self._committed < mine and self._uncommitted() >= self._size):
            await self._done.wait()

    async def flush(self) -> None:
        """Return once every send added so far is committed."""
        target = self._added
        if self._committed >= target:
            return
        self._flush_to = max(self._flush_to, target)
        self._wake.set()
        while self._committed < target:
            await self._done.wait()

    def lane_done(self) -> None:
        """A lane has finished: after the last one the committer commits what is left and ends."""
        self._lanes -= 1
        self._wake.set()

    def _due(self) -> bool:
        return (
            len(self._waiting) >= self._size
            or self._flush_to > self._committed + self._committing
            or self._lanes <= 0
        )

    async def _wait_wake(self) -> None:
        self._wake = anyio.Event()
        await self._wake.wait()

    async def run(self) -> None:
        """The committer: runs until the last lane is done and nothing is left to commit."""
        while True:
            if not self._waiting:
                if self._lanes <= 0:
                    return
                await self._wait_wake()
                continue
            if not self._due():
                with anyio.move_on_after(self._window_s):
                    while not self._due():
                        await self._wait_wake()
            await self._commit_waiting()

    async def _commit_waiting(self) -> None:
        group, self._waiting = self._waiting, []
        self._committing = len(group)
        try:
            # A commit under way finishes even if the lanes are being cancelled: abandoning it
            # half-way would only turn delivered messages into resends.
            with anyio.CancelScope(shield=True):
                closed = await self._store.commit_deliveries(group)
        except BaseException:
            self._broken = True
            raise
        self._committing = 0
        self._committed += len(group)
        self._report.commits += 1
        self._report.delivered += len(closed)
        self._report.lost_leases += sum(1 for d in group if d.job.job_id not in closed)
        done, self._done = self._done, anyio.Event()
        done.set()


class OutboxWorker:
    """Claims due jobs, sends each through the `PushSender` of its channel, settles the outcome.

    One worker per process is enough; run several processes for more throughput (claims are
    leased, see `OutboxStore.claim_due`). `lease_for` must comfortably exceed the time to send a
    batch: a lease that expires mid-send lets another worker send the same job (the dedup
    record then stops any third copy).

    Accepted sends are made durable by a group commit (`OutboxStore.commit_deliveries`): when
    `commit_group` are waiting, `commit_window_s` after the first of a group was accepted, and
    always before `run_once` returns. A crash resends at most `commit_group - 1 + concurrency`
    messages of this process (module doc). With `commit_group=1` every lane waits for its send's
    commit before it sends again (a commit still carries what other lanes had accepted
    meanwhile): at most one message per lane, as when each record was committed on its own.
    """

    def __init__(
        self,
        store: OutboxStore,
        senders: Mapping[Channel, PushSender],
        *,
        policy: RetryPolicy | None = None,
        clock: Clock = utc_now,
        batch_size: int = 200,
        concurrency: int = 64,
        lease_for: timedelta = timedelta(seconds=60),
        commit_group: int = 32,
        commit_window_s: float = 0.005,
        rng: random.Random | None = None,
    ) -> None:
        if commit_group < 1 or commit_window_s < 0:
            raise ValueError("commit_group must be >= 1 and commit_window_s >= 0")
        self._store = store
        self._senders = dict(senders)
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._lease_for = lease_for
        self._commit_group = commit_group
        self._commit_window_s = commit_window_s
        # Jitter needs no cryptographic randomness; an injectable Random makes tests repeatable.
        self._rng = rng or random.Random()  # noqa: S311
        self._wake: anyio.Event | None = None

    def notify(self) -> None:
        """Wake `run()` now instead of at the next poll (call after committing new jobs).

        Must be called from the worker's event-loop thread; from another thread use
        `anyio.from_thread.run_sync(worker.notify)`.
        """
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, stop: anyio.Event, poll_interval: float = 1.0) -> None:
        """Deliver until `stop` is set: drain full batches back to back, else sleep until
        `notify()` or `poll_interval` seconds (catching jobs whose retry time has come)."""
        while not stop.is_set():
            self._wake = anyio.Event()
            report = await self.run_once()
            if report.claimed >= self._batch_size:
                continue
            with anyio.move_on_after(poll_interval):
                async with anyio.create_task_group() as tg:

                    async def _wait_stop(scope: anyio.CancelScope = tg.cancel_scope) -> None:
                        await stop.wait()
                        scope.cancel()

                    tg.start_soon(_wait_stop)
                    await self._wake.wait()
                    tg.cancel_scope.cancel()

    async def run_once(self) -> BatchReport:
        """Claim one batch of due jobs and settle every one of them; returns what happened."""
        report = BatchReport()
        jobs = await self._store.claim_due(
            now=self._clock(), limit=self._batch_size, lease_for=self._lease_for
        )
        report.claimed = len(jobs)
        if not jobs:
            return report
        # The store keeps one job per key; if it ever returns two, the second waits for the
        # first and then meets its dedup record instead of racing it.
        first: dict[DedupKey, PushJob] = {}
        repeats: list[PushJob] = []
        for job in jobs:
            if job.key in first:
                repeats.append(job)
            else:
                first[job.key] = job
        for group in (list(first.values()), repeats):
            if not group:
                continue
            already = await self._store.delivered_keys([job.key for job in group])
            # `concurrency` lanes pulling from one queue rather than a task per job waiting on a
            # semaphore: same bound, but no task spawned per message (a tenth of the worker's
            # CPU per message at 1,000 messages/s).
            lanes = min(self._concurrency, len(group))
            commits = _GroupCommit(
                self._store,
                report,
                size=self._commit_group,
                window_s=self._commit_window_s,
                lanes=lanes,
            )
            pending = iter(group)
            async with anyio.create_task_group() as tg:
                tg.start_soon(commits.run)  # commits the rest and ends after the last lane
                for _ in range(lanes):
                    tg.start_soon(self._lane, pending, already, report, commits)
            # The task group ends after the committer: every accepted send is durable before the
            # repeats look for records, and before the next claim.
        return report

    async def _lane(
        self,
        pending: Iterator[PushJob],
        already: set[DedupKey],
        report: BatchReport,
        commits: _GroupCommit,
    ) -> None:
        try:
            for job in pending:  # shared iterator: each job goes to exactly one lane
                await self._settle_one(job, job.key in already, report, commits)
        finally:
            commits.lane_done()

    async def _settle_one(
        self, job: PushJob, already: bool, report: BatchReport, commits: _GroupCommit
    ) -> None:
        # A lane may run many jobs without reaching a checkpoint (FcmSender's send is shielded):
        # once the batch is cancelled, e.g. because a commit failed, start no new send.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if already:
            report.skipped_duplicates += 1
            await self._store.mark_delivered(job, at=self._clock())
            return
        sender = self._senders.get(job.channel)
        if sender is None:
            report.dead += 1
            report._error("NO_SENDER")
            await self._store.mark_dead(
                job, attempts=job.attempts, error=f"no sender for channel {job.channel}"
            )
            return
        try:
            result: DeliveryResult = await sender.send(job.address, job.message)
        except Exception as exc:
            # A PushSender promises results, not exceptions; a raise is a bug in an adapter.
            # It must not take the batch down, and the job deserves its retries.
            log.exception("push sender %s raised for job %s", job.channel, job.job_id)
            result = TransientFailure(code="SENDER_ERROR", detail=repr(exc))
        await self._apply(job, result, report, commits)

    async def _apply(
        self, job: PushJob, result: DeliveryResult, report: BatchReport, commits: _GroupCommit
    ) -> None:
        attempts = job.attempts + 1
        now = self._clock()
        match result:
            case Delivered(provider_id=provider_id):
                # Record + close in one transaction, shared with the group's other sends; the
                # group commit counts it as delivered (or as a lost lease) when it commits.
                await commits.add(Delivery(job, now, provider_id))
            case PermanentFailure(dead_token=dead_token, code=code, detail=detail):
                report.dead += 1
                report._error(code)
                await self._store.mark_dead(job, attempts=attempts, error=f"{code}: {detail}")
                if dead_token:
                    report.pruned_addresses += 1
                    # Pruning cancels every pending job to this address; a send to it that was
                    # accepted but not yet committed must be closed as delivered first.
                    await commits.flush()
                    await self._store.prune_address(job.channel, job.address, reason=code)
            case RetryAfter(seconds=seconds, code=code):
                report._error(code)
                delay = self._policy.after_retry_after(seconds, self._rng)
                await self._retry_or_die(job, attempts, delay, code, report)
            case TransientFailure(code=code, detail=detail):
                report._error(code)
                delay = self._policy.backoff(attempts, self._rng)
                await self._retry_or_die(job, attempts, delay, f"{code}: {detail}", report)

    async def _retry_or_die(
        self, job: PushJob, attempts: int, delay: float, error: str, report: BatchReport
    ) -> None:
        if attempts >= self._policy.max_attempts:
            report.dead += 1
            await self._store.mark_dead(job, attempts=attempts, error=f"gave up: {error}")
            return
        report.retried += 1
        at = self._clock() + timedelta(seconds=delay)
        await self._store.schedule_retry(job, at=at, attempts=attempts, error=error)


# --------------------------------------------------------------------------------------------
# In-memory reference store
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    job_id: str
    event_id: str
    device_id: str
    channel: Channel
    address: str
    message: PushMessage
    created_at: datetime
    not_before: datetime
    state: JobState = JobState.PENDING
    attempts: int = 0
    last_error: str | None = None
    lease_token: str | None = None
    leased_until: datetime | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    event_id: str
    device_id: str
    job_id: str
    at: datetime
    provider_id: str | None


class InMemoryOutboxStore:
    """The reference `OutboxStore`: one process, no persistence, for tests and benchmarks.

    Every method runs without awaiting, so on one event loop each is atomic, as a committed
    transaction would be. It also models the server's side: `enqueue` (the job written with the
    task) and device registrations that `prune_address` removes.
    """

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self.rows: dict[str, _Row] = {}
        self._by_key: dict[DedupKey, str] = {}
        self.deliveries: dict[DedupKey, DeliveryRecord] = {}
        # device_id -> {channel: address}
        self.registrations: dict[str, dict[Channel, str]] = {}

    # -- the server's side -------------------------------------------------------------------

    def register(self, device_id: str, channel: Channel, address: str) -> None:
        self.registrations.setdefault(device_id, {})[channel] = address

    def enqueue(
        self,
        *,
        event_id: str,
        device_id: str,
        channel: Channel,
        address: str,
        message: PushMessage,
        not_before: datetime | None = None,
    ) -> str:
        """Add a pending job; idempotent on (event_id, device_id), returning the existing id."""
        key = (event_id, device_id)
        if key in self._by_key:
            return self._by_key[key]
        now = self._clock()
        job_id = str(uuid.uuid4())
        self.rows[job_id] = _Row(
            job_id=job_id,
            event_id=event_id,
            device_id=device_id,
            channel=channel,
            address=address,
            message=message,
            created_at=now,
            not_before=not_before or now,
        )
        self._by_key[key] = job_id
        return job_id

    def state_of(self, job_id: str) -> JobState:
        return self.rows[job_id].state

    def count(self, state: JobState) -> int:
        return sum(1 for row in self.rows.values() if row.state is state)

    # -- OutboxStore -----------------------------------------------------------------------------

    async def claim_due(self, *, now: datetime, limit: int, lease_for: timedelta) -> list[PushJob]:
        due = [
            row
            for row in self.rows.values()
            if row.state is JobState.PENDING
            and row.not_before <= now
            and (row.leased_until is None or row.leased_until <= now)
        ]
        due.sort(key=lambda row: (row.not_before, row.created_at))
        claimed: list[PushJob] = []
        for row in due[:limit]:
            row.lease_token = uuid.uuid4().hex
            row.leased_until = now + lease_for
            claimed.append(
                PushJob(
                    job_id=row.job_id,
                    event_id=row.event_id,
                    device_id=row.device_id,
                    channel=row.channel,
                    address=row.address,
                    message=row.message,
                    attempts=row.attempts,
                    lease_token=row.lease_token,
                )
            )
        return claimed

    async def delivered_keys(self, keys: Sequence[DedupKey]) -> set[DedupKey]:
        return {key for key in keys if key in self.deliveries}

    async def record_delivery(self, job: PushJob, *, at: datetime, provider_id: str | None) -> bool:
        if job.key in self.deliveries:
            return False
        self.deliveries[job.key] = DeliveryRecord(
            job.event_id, job.device_id, job.job_id, at, provider_id
        )
        return True

    def _owned(self, job: PushJob) -> _Row | None:
        row = self.rows.get(job.job_id)
        if row is None or row.state is not JobState.PENDING or row.lease_token != job.lease_token:
            return None
        return row

    async def mark_delivered(self, job: PushJob, *, at: datetime) -> bool:
        row = self._owned(job)
        if row is None:
            return False
        row.state = JobState.DELIVERED
        row.delivered_at = at
        row.lease_token = row.leased_until = None
        return True

    async def commit_deliveries(self, deliveries: Sequence[Delivery]) -> set[str]:
        # Nothing below suspends, so on one event loop this is one atomic step. It goes through
        # the two single methods so that a test's subclass can crash between them.
        closed: set[str] = set()
        for d in deliveries:
            await self.record_delivery(d.job, at=d.at, provider_id=d.provider_id)
            if await self.mark_delivered(d.job, at=d.at):
                closed.add(d.job.job_id)
        return closed

    async def schedule_retry(
        self, job: PushJob, *, at: datetime, attempts: int, error: str
    ) -> bool:
        row = self._owned(job)
        if row is None:
            return False
        row.not_before = at
        row.attempts = attempts
        row.last_error = error
        row.lease_token = row.leased_until = None
        return True

    async def mark_dead(self, job: PushJob, *, attempts: int, error: str) -> bool:
        row = self._owned(job)
        if row is None:
            return False
        row.state = JobState.DEAD
        row.attempts = attempts
        row.last_error = error
        row.lease_token = row.leased_until = None
        return True

    async def prune_address(self, channel: Channel, address: str, *, reason: str) -> int:
        for addresses in self.registrations.values():
            if addresses.get(channel) == address:
                del addresses[channel]
        cancelled = 0
        for row in self.rows.values():
            if row.state is JobState.PENDING and row.channel is channel and row.address == address:
                row.state = JobState.DEAD
                row.last_error = f"address pruned: {reason}"
                row.lease_token = row.leased_until = None
                cancelled += 1
        return cancelled

    def expire_leases(self) -> None:
        """Test helper: every live lease runs out now (a crashed worker's claims come back)."""
        for row in self.rows.values():
            if row.leased_until is not None:
                row.leased_until = datetime.min.replace(tzinfo=UTC)
