"""The transactional outbox in SQL: `SqlOutboxStore` (push.outbox's `OutboxStore`) and `enqueue`.

The server side writes jobs with `enqueue_for_users` (called by `server.notify`, which decides
who receives what in which language) inside the request's transaction, next to the task
they announce; the worker side (`SqlOutboxStore`) runs each method as its own short committed
transaction, as the Protocol requires. The hot one is `commit_deliveries`: a group of accepted
sends costs one transaction of two statements (a multi-row insert of the delivery records and a
lease-checked `UPDATE ... RETURNING` per claim) where it used to cost two transactions per
message. One job per (event_id, device_id), unique in the table, so a re-run never enqueues
twice. Claims are leased: PostgreSQL locks the due rows with `FOR UPDATE SKIP LOCKED` inside one
`UPDATE ... RETURNING`; SQLite runs the same statement under its database write lock (the engine
begins every transaction `IMMEDIATE`). Several worker processes can therefore share one outbox.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from push.base import Channel, PushMessage
from push.outbox import DedupKey, Delivery, JobState, PushJob
from server import audit
from server.db import dialect_of
from server.models import (
    Device,
    PushDelivery,
    PushJobRow,
    ResidentPlace,
    ResidentSubscription,
    User,
    utcnow,
)

__all__ = [
    "OUTBOX_FLAG",
    "SqlOutboxStore",
    "address_hash",
    "dialect_insert",
    "enqueue_for_devices",
    "enqueue_for_users",
    "registered_devices",
    "seal",
    "unseal",
]

# Set in `session.info` when a request enqueued jobs, so the app can wake its worker after commit.
OUTBOX_FLAG = "outbox_enqueued"

_JOBS = cast(Table, PushJobRow.__table__)
_DELIVERIES = cast(Table, PushDelivery.__table__)
_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(PushMessage)
_TEXTS = postgresql.ARRAY(String)
_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


def address_hash(channel: str, address: str) -> str:
    """The unique key of a resident subscription's address (SHA-256 hex of channel:address)."""
    return hashlib.sha256(f"{channel}:{address}".encode()).hexdigest()


SEALED = "sealed:v1:"


@functools.lru_cache(maxsize=4)
def _sealer(secret_key: str) -> Fernet:
    """Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from the server's secret key."""
    derived = hmac.digest(secret_key.encode(), b"liandong outbox sealed message v1", "sha256")
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(secret_key: str, message: PushMessage) -> str:
    """A job's message encrypted with the server's key (`SEALED` + a Fernet token), for texts
    nobody reading the database or a backup may read: a resident's SMS confirmation code.
    The worker opens it when it claims the job (`SqlOutboxStore(secret_key=...)`)."""
    return SEALED + _sealer(secret_key).encrypt(_encode.encode(message)).decode()


def unseal(secret_key: str, stored: str) -> str:
    """The message JSON of a sealed job; raises `InvalidToken` under another key."""
    return _sealer(secret_key).decrypt(stored.removeprefix(SEALED).encode()).decode()


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """A dialect-specific INSERT (both support ON CONFLICT DO NOTHING)."""
    return (postgresql if dialect_of(session) == "postgresql" else sqlite).insert(table)


# ---- the server's side: in the caller's transaction -------------------------------------------


DeviceRow = tuple[uuid.UUID, uuid.UUID, str, str, str | None]
"""(device id, user id, channel, token, the user's saved language) of a registered device."""


async def registered_devices(
    session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> list[DeviceRow]:
    """The registered devices of these users who are active, with each owner's language
    (one statement: `server.notify` picks each message's language from it)."""
    ids = sorted(set(user_ids))
    if not ids:
        return []
    rows = await session.execute(
        select(Device.id, Device.user_id, Device.channel, Device.token, User.language)
        .join(User, User.id == Device.user_id)
        .where(
            Device.user_id.in_(ids),
            Device.token.is_not(None),
            Device.channel.is_not(None),
            Device.deleted_at.is_(None),
            User.disabled.is_(False),
            User.deleted_at.is_(None),
        )
    )
    return [cast(DeviceRow, tuple(r)) for r in rows.all()]


async def enqueue_for_users(
    session: AsyncSession,
    user_ids: Iterable[uuid.UUID],
    *,
    event_id: str,
    message: PushMessage,
    now: datetime | None = None,
) -> int:
    """Queue `message` for every registered device of these (active) users; returns how many.

    Runs in the caller's transaction, so the jobs commit with the change they announce.
    Idempotent per (event_id, device): a second call for the same event adds nothing.
    """
    devices = await registered_devices(session, user_ids)
    return await enqueue_for_devices(session, devices, event_id=event_id, message=message, now=now)


async def enqueue_for_devices(
    session: AsyncSession,
    devices: Sequence[DeviceRow],
    *,
    event_id: str,
    message: PushMessage,
    now: datetime | None = None,
) -> int:
    """Queue `message` for these devices (`registered_devices`), as `enqueue_for_users`."""
    if not devices:
        return 0
    at = now or utcnow()
    body = _encode.encode(message).decode()
    values = [
        {
            "id": uuid.uuid4(),
            "event_id": event_id,
            "device_id": str(device_id),
            "user_id": user_id,
            "channel": channel,
            "address": token,
            "message": body,
            "state": JobState.PENDING.value,
            "attempts": 0,
            "not_before": at,
            "created_at": at,
        }
        for device_id, user_id, channel, token, _ in devices
    ]
    stmt = dialect_insert(session, PushJobRow.__table__).values(values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["event_id", "device_id"])
    result = await session.execute(stmt)
    session.info[OUTBOX_FLAG] = True
    return int(getattr(result, "rowcount", 0) or 0)


# ---- the worker's side: every method its own committed transaction ---------------------------


def _id_among(pg: bool, column: Any, ids: list[uuid.UUID]) -> ColumnElement[bool]:
    """`column IN ids` as one statement text whatever the count: on PostgreSQL `= ANY(:ids)`, one
    array parameter. An expanding `IN` renders new SQL for each list length, which SQLAlchemy
    rewrites per execution and asyncpg prepares once per connection and text."""
    if pg:
        return cast(
            "ColumnElement[bool]",
            column == any_(bindparam(None, ids, type_=postgresql.ARRAY(column.type))),
        )
    return cast("ColumnElement[bool]", column.in_(ids))


async def _plan_for_these_values(session: AsyncSession) -> None:
    """On PostgreSQL, plan this transaction's statements for their parameters at every
    execution (`plan_cache_mode = force_custom_plan`, for this transaction only).

    asyncpg prepares each statement once per connection, and after five executions PostgreSQL
    may keep a generic plan, costed with the table sizes of that moment: one made while
    `push_deliveries` was nearly empty looked each delivered job's record up by a sequential
    scan, per job, for the rest of a 100,000-message fan-out (1.3 ms of PostgreSQL CPU a
    message at 20,000). The statements it covers run once per claim or per group commit, so
    planning them anew costs little."""
    if dialect_of(session) == "postgresql":
        await session.execute(_CUSTOM_PLANS)


def _still_pending(t: Table) -> ColumnElement[bool]:
    """`state = 'pending'` in a form no index serves, for statements that find their jobs by id.

    The due index leads with `state`. Its statistics predate a fan-out that has just queued
    100,000 jobs (autovacuum analyses up to a minute later), so the planner believed few jobs
    pending and closed a group of 32 by scanning every pending entry of that index (BitmapAnd
    with the primary key, or the index alone): ~8 ms of PostgreSQL CPU a group, growing with the
    backlog. Guarded this way, the ids' primary-key lookups are the only way in."""
    return func.coalesce(t.c.state, "") == JobState.PENDING.value


class SqlOutboxStore:
    """`push.outbox.OutboxStore` over the `push_jobs` and `push_deliveries` tables."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, secret_key: str | None = None
    ) -> None:
        """`secret_key`: the server's (`Settings.secret_key`), to open sealed messages (`seal`);
        a sealed job this store cannot open is marked dead at its claim, never sent."""
        self._sessions = sessionmaker
        self._secret_key = secret_key

    async def claim_due(self, *, now: datetime, limit: int, lease_for: timedelta) -> list[PushJob]:
        """Lease up to `limit` due jobs, oldest first (see the Protocol)."""
        t = _JOBS
        token = uuid.uuid4().hex
        due = (
            select(t.c.id)
            .where(
                t.c.state == JobState.PENDING.value,
                t.c.not_before <= now,
                or_(t.c.leased_until.is_(None), t.c.leased_until <= now),
            )
            .order_by(t.c.not_before, t.c.created_at)
            .limit(limit)
            # PostgreSQL: concurrent claimers skip each other's rows instead of waiting; SQLite
            # renders no FOR UPDATE and serialises writers on its database lock.
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(t)
            .where(t.c.id.in_(due))
            .values(leased_until=now + lease_for, lease_token=token)
            .returning(
                t.c.id,
                t.c.event_id,
                t.c.device_id,
                t.c.channel,
                t.c.address,
                t.c.message,
                t.c.attempts,
                t.c.not_before,
                t.c.created_at,
            )
        )
        async with self._sessions() as session, session.begin():
            rows = list((await session.execute(stmt)).all())
        rows.sort(key=lambda r: (r.not_before, r.created_at))
        # One object per distinct message: a fan-out's jobs carry the same text (one per
        # language), and the senders build a message's payload once per object.
        messages: dict[str, PushMessage] = {}
        jobs = []
        unreadable = []
        for r in rows:
            message = messages.get(r.message)
            if message is None and r.message.startswith(SEALED):
                try:
                    message = _decode.decode(unseal(self._secret_key or "", r.message))
                except InvalidToken:
                    unreadable.append(r.id)
                    continue
            elif message is None:
                message = messages[r.message] = _decode.decode(r.message)
            jobs.append(
                PushJob(
                    job_id=str(r.id),
                    event_id=r.event_id,
                    device_id=r.device_id,
                    channel=Channel(r.channel),
                    address=r.address,
                    message=message,
                    attempts=r.attempts,
                    lease_token=token,
                )
            )
        if unreadable:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(t)
                    .where(t.c.id.in_(unreadable), t.c.lease_token == token)
                    .values(
                        state=JobState.DEAD.value,
                        leased_until=None,
                        lease_token=None,
                        last_error="sealed message: this worker lacks the server's key",
                    )
                )
        return jobs

    async def delivered_keys(self, keys: Sequence[DedupKey]) -> set[DedupKey]:
        """Which (event_id, device_id) already have a delivery record."""
        if not keys:
            return set()
        wanted = sorted(set(keys))
        async with self._sessions() as session:
            if dialect_of(session) != "postgresql":
                # SQLite: per event, its devices as an `IN` list on the primary key's second
                # column (a claim of a fan-out is one event). A row-value `IN` list scanned the
                # whole primary-key index of `push_deliveries` at each claim.
                devices: dict[str, list[str]] = {}
                for event_id, device_id in wanted:
                    devices.setdefault(event_id, []).append(device_id)
                d = _DELIVERIES
                found: set[DedupKey] = set()
                for event_id, ids in devices.items():
                    rows = await session.execute(
                        select(d.c.device_id).where(
                            d.c.event_id == event_id, d.c.device_id.in_(ids)
                        )
                    )
                    found.update((event_id, device_id) for device_id in rows.scalars())
                return found
            # PostgreSQL: the pairs as two arrays, each looked up by a subquery on both
            # primary-key columns (a correlated scalar subquery stays a lookup per pair; the
            # planner cannot turn it into a join or a scan of the event's records). A row-value
            # `IN` list, and `event_id = ... AND device_id = ANY(...)` alike, were planned as a
            # scan of the event's every record, rechecked against the list, whenever the
            # statistics predated the fan-out: each claim re-read all it had delivered so far
            # (~170 ms a claim at 20,000 delivered).
            await _plan_for_these_values(session)
            d = _DELIVERIES
            pairs = (
                func.unnest(
                    bindparam("events", [e for e, _ in wanted], type_=_TEXTS),
                    bindparam("devices", [v for _, v in wanted], type_=_TEXTS),
                )
                .table_valued("event_id", "device_id")
                .render_derived(name="pairs")
            )
            recorded = (
                select(d.c.device_id)
                .where(d.c.event_id == pairs.c.event_id, d.c.device_id == pairs.c.device_id)
                .scalar_subquery()
            )
            rows = await session.execute(
                select(pairs.c.event_id, pairs.c.device_id).where(recorded.is_not(None))
            )
            return {(e, v) for e, v in rows.all()}

    async def record_delivery(self, job: PushJob, *, at: datetime, provider_id: str | None) -> bool:
        """Insert the delivery record if absent; committed before returning."""
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, PushDelivery.__table__).values(
                event_id=job.event_id,
                device_id=job.device_id,
                job_id=uuid.UUID(job.job_id),
                at=at,
                provider_id=provider_id,
            )
            result = await session.execute(
                stmt.on_conflict_do_nothing(index_elements=["event_id", "device_id"])
            )
            return bool(getattr(result, "rowcount", 0))

    async def commit_deliveries(self, deliveries: Sequence[Delivery]) -> set[str]:
        """Record every delivery and close each job still under its lease, in one transaction.

        The records go in first (insert-if-absent, whatever became of the lease); then one
        `UPDATE ... RETURNING` per lease token (one claim gives all its jobs the same token)
        closes the jobs under `_owned_update`'s guard (pending + same lease token), taking
        `delivered_at` from the job's delivery record. Both statements are the same whatever the
        group's size, so they compile once. Records are inserted in key order, so on PostgreSQL
        two workers whose groups overlap (a lease lost mid-send) wait for each other on the
        unique index instead of deadlocking there.
        """
        if not deliveries:
            return set()
        t = _JOBS
        records: dict[DedupKey, dict[str, Any]] = {}
        by_token: dict[str, list[uuid.UUID]] = {}
        for d in deliveries:
            job = d.job
            job_id = uuid.UUID(job.job_id)
            records.setdefault(
                job.key,
                {
                    "event_id": job.event_id,
                    "device_id": job.device_id,
                    "job_id": job_id,
                    "at": d.at,
                    "provider_id": d.provider_id,
                },
            )
            by_token.setdefault(job.lease_token, []).append(job_id)
        recorded_at = (
            select(_DELIVERIES.c.at)
            .where(
                _DELIVERIES.c.event_id == t.c.event_id,
                _DELIVERIES.c.device_id == t.c.device_id,
            )
            .scalar_subquery()
        )
        closed: set[str] = set()
        async with self._sessions() as session, session.begin():
            await _plan_for_these_values(session)
            # executemany, which SQLAlchemy sends from one cached statement; `.values([...])`
            # would be compiled anew for every group.
            await session.execute(
                dialect_insert(session, _DELIVERIES).on_conflict_do_nothing(
                    index_elements=["event_id", "device_id"]
                ),
                [records[key] for key in sorted(records)],
            )
            pg = dialect_of(session) == "postgresql"
            for token, ids in by_token.items():
                rows = await session.execute(
                    update(t)
                    .where(
                        _id_among(pg, t.c.id, sorted(ids)),
                        _still_pending(t),
                        t.c.lease_token == token,
                    )
                    .values(
                        state=JobState.DELIVERED.value,
                        delivered_at=recorded_at,
                        leased_until=None,
                        lease_token=None,
                    )
                    .returning(t.c.id)
                )
                closed.update(str(i) for i in rows.scalars())
        return closed

    async def _owned_update(self, job: PushJob, **values: Any) -> bool:
        t = _JOBS
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(t)
                .where(
                    t.c.id == uuid.UUID(job.job_id),
                    _still_pending(t),
                    t.c.lease_token == job.lease_token,
                )
                .values(leased_until=None, lease_token=None, **values)
            )
            return bool(getattr(result, "rowcount", 0))

    async def mark_delivered(self, job: PushJob, *, at: datetime) -> bool:
        """pending + our lease -> delivered."""
        return await self._owned_update(job, state=JobState.DELIVERED.value, delivered_at=at)

    async def schedule_retry(
        self, job: PushJob, *, at: datetime, attempts: int, error: str
    ) -> bool:
        """pending + our lease -> due again at `at`."""
        return await self._owned_update(job, not_before=at, attempts=attempts, last_error=error)

    async def mark_dead(self, job: PushJob, *, attempts: int, error: str) -> bool:
        """pending + our lease -> dead, error kept."""
        return await self._owned_update(
            job, state=JobState.DEAD.value, attempts=attempts, last_error=error
        )

    async def prune_address(self, channel: Channel, address: str, *, reason: str) -> int:
        """Clear every device registration equal to `address`, delete resident subscriptions
        to it, and kill jobs still queued to it."""
        t = _JOBS
        async with self._sessions() as session, session.begin():
            devices = (
                await session.execute(
                    update(Device)
                    .where(Device.channel == channel.value, Device.token == address)
                    .values(token=None, channel=None)
                    .returning(Device.id, Device.user_id)
                )
            ).all()
            result = await session.execute(
                update(t)
                .where(
                    # Written out, not a parameter, so that a generic plan (asyncpg prepares
                    # its statements) may still use the partial index of pending jobs.
                    t.c.state == literal_column(f"'{JobState.PENDING.value}'"),
                    t.c.address == address,
                    t.c.channel == channel.value,
                )
                .values(
                    state=JobState.DEAD.value,
                    last_error=f"address pruned: {reason}",
                    leased_until=None,
                    lease_token=None,
                )
            )
            for device_id, user_id in devices:
                audit.record(
                    session, None, "prune_push", "device", device_id, user=user_id, reason=reason
                )
            # A resident's subscription whose push address is dead is deleted with its places
            # (it has no account to keep; registering again makes a new one).
            key = address_hash(channel.value, address)
            dead = select(ResidentSubscription.id).where(ResidentSubscription.address_hash == key)
            await session.execute(
                delete(ResidentPlace).where(ResidentPlace.subscription_id.in_(dead))
            )
            await session.execute(
                delete(ResidentSubscription).where(ResidentSubscription.address_hash == key)
            )
            return int(getattr(result, "rowcount", 0) or 0)
