"""Wiring into the app: synced sessions, the start-up backfill and the purge job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.config import Settings
from server.domain.sync.changelog import SyncRuntime, backfill, install
from server.domain.sync.events import listen
from server.domain.sync.services import purge

log = logging.getLogger("liandong.sync")


def synced_sessionmaker(sessionmaker: async_sessionmaker[Any]) -> dict[str, Any]:
    """App state entries: the sessionmaker (now making synced sessions) and the runtime."""
    runtime = SyncRuntime()
    install(sessionmaker, runtime)
    return {"sessionmaker": sessionmaker, "sync": runtime}


async def run_backfill(sessionmaker: async_sessionmaker[Any], runtime: SyncRuntime) -> int:
    """Enter domain rows missing from the change log; one transaction."""
    async with sessionmaker() as session, session.begin():
        n: int = await session.run_sync(lambda s: backfill(s, runtime))
        return n


async def run_purge(sessionmaker: async_sessionmaker[Any], days: float) -> int:
    """Purge tombstones older than `days`; return the horizon seq."""
    async with sessionmaker() as session, session.begin():
        h: int = await session.run_sync(lambda s: purge(s, days))
        return h


@asynccontextmanager
async def sync_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Backfill at start; on PostgreSQL listen for other processes' commits ("pull now");
    with background jobs, purge tombstones on an interval."""
    settings: Settings = app.state.settings
    sessionmaker = app.state.sessionmaker
    runtime: SyncRuntime = app.state.sync
    n = await run_backfill(sessionmaker, runtime)
    if n:
        log.info("sync backfill: %d records entered the change log", n)
    tasks: list[asyncio.Task[None]] = []
    engine = app.state.engine
    if engine.dialect.name == "postgresql":
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        tasks.append(asyncio.create_task(listen(dsn, runtime.broker)))
    if settings.background_jobs:

        async def loop() -> None:
            while True:
                try:
                    await run_purge(sessionmaker, settings.sync_tombstone_days)
                except Exception:  # a failed run is retried next interval; keep the job alive
                    log.exception("sync purge failed")
                await asyncio.sleep(settings.sync_purge_interval_s)

        tasks.append(asyncio.create_task(loop()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["run_backfill", "run_purge", "sync_lifespan", "synced_sessionmaker"]
