"""Push delivery and background jobs for the server: senders from settings, the outbox worker
and the escalation loop, run inside the app's lifespan or on their own (`liandong worker`).

Any number of processes may run these loops against one database: outbox claims are leased
(`server.outbox.SqlOutboxStore`) and escalation wins by conditional UPDATE. The request that
commits new jobs wakes its own process's worker (`Background.notify`); other processes' workers
pick them up at their next poll.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from push.base import Channel, PushSender
from push.outbox import Clock, OutboxWorker, utc_now
from server.config import Settings
from server.db import make_engine
from server.domain.dispatch.escalation import escalate_due
from server.outbox import SqlOutboxStore

log = logging.getLogger("liandong.jobs")


def build_senders(settings: Settings) -> dict[Channel, PushSender]:
    """The push senders this server is configured for (none when nothing is configured)."""
    senders: dict[Channel, PushSender] = {}
    if settings.fcm_project_id:
        from push.fcm import FcmSender, firebase_app

        credential: Any = None
        if settings.fcm_credentials is not None:
            from firebase_admin import credentials

            credential = credentials.Certificate(str(settings.fcm_credentials))
        elif not settings.fcm_endpoint:
            raise RuntimeError(
                "LIANDONG_FCM_PROJECT_ID without LIANDONG_FCM_CREDENTIALS: anonymous credentials "
                "are only for a loopback LIANDONG_FCM_ENDPOINT"
            )
        # One firebase app per (project, endpoint): the SDK keeps the send URL per app.
        key = f"{settings.fcm_project_id}|{settings.fcm_endpoint or ''}"
        name = "liandong-" + hashlib.sha256(key.encode()).hexdigest()[:12]
        app = firebase_app(settings.fcm_project_id, name=name, credential=credential)
        senders[Channel.FCM] = FcmSender(app, endpoint=settings.fcm_endpoint)
    if settings.vapid_private_key:
        from push.webpush import WebPushSender

        senders[Channel.WEBPUSH] = WebPushSender(
            settings.vapid_private_key,
            settings.vapid_subject,
            allow_hosts=settings.push_test_hosts,
        )
    if settings.sms_secret_id and settings.sms_secret_key and settings.sms_app_id:
        from push.sms import SmsSender, TencentSms

        templates = {
            key: value
            for key, value in (
                ("code", settings.sms_template_code),
                ("warning", settings.sms_template_warning),
            )
            if value
        }
        endpoint = settings.sms_endpoint
        scheme = "https"
        if endpoint and endpoint.startswith(("http://", "https://")):
            scheme, _, endpoint = endpoint.partition("://")
        senders[Channel.SMS] = SmsSender(
            TencentSms(
                secret_id=settings.sms_secret_id,
                secret_key=settings.sms_secret_key,
                app_id=settings.sms_app_id,
                sign_name=settings.sms_sign,
                templates=templates,
                region=settings.sms_region,
                endpoint=endpoint,
                scheme=scheme,
            )
        )
    return senders


def worker_engine(url: str) -> AsyncEngine:
    """The database engine of a worker process (`liandong worker`), without pings.

    The server's engine pings a connection it takes from the pool when it sat idle 10 s or
    more (`server.db.ping_idle_connections`); it used to ping at every checkout, which cost
    ~3 % of a worker's CPU in a fan-out (py-spy, PostgreSQL). A worker needs none: a
    connection the database dropped fails that one transaction, SQLAlchemy then invalidates the
    pool, and the worker loop starts again after a poll interval (`Background._worker_loop`);
    leases bring back any job of a batch it abandoned, and a failed claim leased nothing.
    """
    return make_engine(url, ping_idle_s=None)


async def escalate_once(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """One escalation pass in its own transaction; returns how many tasks this pass flagged."""
    async with sessions() as session, session.begin():
        return len(await escalate_due(session, now))


class Background:
    """The outbox worker and the escalation loop of one process.

    `worker` is None when no push sender is configured: jobs then wait in the outbox for a
    process that has one (they are never marked dead for lack of a sender here).
    """

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Clock = utc_now,
        senders: dict[Channel, PushSender] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        senders = build_senders(settings) if senders is None else senders
        self.store = SqlOutboxStore(sessions, secret_key=settings.secret_key)
        self.worker = OutboxWorker(self.store, senders, clock=clock) if senders else None
        self._stop = anyio.Event()

    def notify(self) -> None:
        """Wake the worker now; call on the event loop's thread (e.g. after a request commits)."""
        if self.worker is not None:
            self.worker.notify()

    async def _escalation_loop(self) -> None:
        while not self._stop.is_set():
            try:
                flagged = await escalate_once(self.sessions, self.clock())
                if flagged:
                    log.info("escalated %d task(s)", flagged)
            except (SQLAlchemyError, OSError):
                log.exception("escalation pass failed; retrying next poll")
            with anyio.move_on_after(self.settings.escalate_poll_s):
                await self._stop.wait()

    async def _worker_loop(self, worker: OutboxWorker) -> None:
        while not self._stop.is_set():
            try:
                await worker.run(stop=self._stop, poll_interval=self.settings.outbox_poll_s)
            # except*: a failure inside the worker's lanes or group commit (its own tasks)
            # arrives wrapped in an exception group, and must not end the loop either.
            except* (SQLAlchemyError, OSError):
                log.exception("outbox worker failed; restarting after a pause")
                with anyio.move_on_after(self.settings.outbox_poll_s):
                    await self._stop.wait()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Background]:
        """Run both loops until the context exits."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._escalation_loop)
            if self.worker is not None:
                tg.start_soon(self._worker_loop, self.worker)
            try:
                yield self
            finally:
                self._stop.set()

    def stop(self) -> None:
        """Ask the loops to finish (from the loop's thread)."""
        self._stop.set()
