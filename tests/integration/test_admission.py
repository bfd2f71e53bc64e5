"""Load shedding in the real app (issue 13): a process with a tiny admission limit answers what
it cannot take with 503 `overloaded` + Retry-After at once, serves what fits, and never sheds
its health probes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from schemas.sync import SCHEMA_VERSION
from server.app import create_app
from server.config import Settings
from tests.conftest import Sessions, fresh_database, make_settings

pytestmark = pytest.mark.anyio
PULL = json.dumps({"v": SCHEMA_VERSION, "d": "shed-test"})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _tiny(settings: Settings, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "admission_limit": 1,
        "admission_queue": 2,
        "admission_wait_s": 0.3,
        "admission_retry_after_s": 2,
    }
    return replace(settings, **{**base, **kw})


@asynccontextmanager
async def _client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    # The app in this test's own event loop (Litestar's AsyncTestClient runs it in another
    # thread), so the test can hold a slot of the same admission the requests queue for.
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def _assert_overloaded(r: httpx.Response, base: int = 2) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert base <= int(r.headers["retry-after"]) <= 2 * base
    assert r.json()["code"] == "overloaded"


async def _pull(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    h = {**headers, "Content-Type": "application/json", "Accept": "application/json"}
    return await client.post("/api/v1/sync/pull", content=PULL, headers=h)


async def test_a_full_process_sheds_reads_fast_but_keeps_probes_and_serves_what_fits(
    settings: Settings, auth: Sessions
) -> None:
    app = create_app(_tiny(settings))
    headers = auth("inspector1")
    async with _client(app) as client:
        assert (await _pull(client, headers)).status_code == 200  # within the limit: served
        adm = app.state.admission
        assert adm.active == 0
        assert await adm.acquire(True)  # a request at work holds the only slot
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        started = time.monotonic()
        _assert_overloaded(await _pull(client, headers))
        assert time.monotonic() - started < 2  # waited admission_wait_s, not minutes
        # Queued behind the slot, a read is served as soon as the slot is given back.
        queued = asyncio.create_task(_pull(client, headers))
        await asyncio.sleep(0.05)
        assert adm.waiting == 1
        adm.release()
        assert (await queued).status_code == 200
        assert adm.active == 0 and adm.waiting == 0


async def test_a_flood_is_answered_quickly_some_served_the_rest_told_when_to_return(
    settings: Settings, auth: Sessions
) -> None:
    app = create_app(_tiny(settings, admission_limit=2))
    headers = auth("inspector1")
    async with _client(app) as client:
        started = time.monotonic()
        answers = await asyncio.gather(*(_pull(client, headers) for _ in range(40)))
        elapsed = time.monotonic() - started
    served = [r for r in answers if r.status_code == 200]
    shed = [r for r in answers if r.status_code != 200]
    assert len(served) >= 2 and shed, [r.status_code for r in answers]
    for r in shed:
        _assert_overloaded(r)
    assert elapsed < 20
    assert app.state.admission.active == 0


async def test_writes_are_queued_when_reads_are_already_refused(
    settings: Settings, auth: Sessions
) -> None:
    app = create_app(_tiny(settings, admission_wait_s=5))
    headers = auth("inspector1")
    async with _client(app) as client:
        adm = app.state.admission
        assert await adm.acquire(True)
        read = asyncio.create_task(_pull(client, headers))  # takes the readers' half
        await asyncio.sleep(0.05)
        _assert_overloaded(await _pull(client, headers))  # no room left for reads
        write = asyncio.create_task(
            client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43, "device_id": "d"})
        )
        await asyncio.sleep(0.05)
        assert adm.waiting == 2
        adm.release()
        # The write goes first: answered (401, the token is made up), not shed.
        assert (await write).status_code == 401
        assert (await read).status_code == 200


def test_sqlite_busy_past_its_timeout_answers_503_overloaded_not_500(tmp_path: Path) -> None:
    # Another writer holds SQLite's one write lock past the busy timeout (10 s): the request
    # is told to come back later, as a shed one is, instead of failing with a server error.
    url = fresh_database("sqlite", tmp_path)
    app = create_app(make_settings(url, tmp_path))
    body = {"username": "nobody", "password": "x" * 12, "device_id": "d"}
    with TestClient(app) as client:
        holder = sqlite3.connect(tmp_path / "liandong.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            r = client.post("/api/v1/auth/login", json=body)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        _assert_overloaded(r, base=10)
        assert client.post("/api/v1/auth/login", json=body).status_code == 401


async def test_a_pull_answers_a_short_page_while_others_wait_and_all_when_none_do(
    settings: Settings, auth: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first sync (a snapshot of every scope) is long: while a request waits behind it for
    # the slot, it is answered in pages of BUSY_PULL_LIMIT (made 3 here); alone, in one.
    monkeypatch.setattr("server.admission.BUSY_PULL_LIMIT", 3)
    app = create_app(_tiny(settings, admission_queue=4, admission_wait_s=5))
    headers = auth("inspector1")

    def changes(r: httpx.Response) -> int:
        assert r.status_code == 200, r.text
        return sum(len(p.get("r", [])) for p in r.json()["s"])

    async with _client(app) as client:
        adm = app.state.admission
        assert await adm.acquire(True)
        first = asyncio.create_task(_pull(client, headers))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(_pull(client, headers))  # waits behind the first
        await asyncio.sleep(0.05)
        assert adm.waiting == 2
        adm.release()
        busy, alone = await first, await second
    assert changes(busy) == 3 and busy.json()["m"] is True
    assert changes(alone) > 3 and not alone.json().get("m", False)


def _watches() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "Admission.watch"
    ]


async def test_a_serving_app_reads_how_late_its_loop_runs(settings: Settings) -> None:
    async with _client(create_app(replace(settings, admission_adaptive=False))):
        assert not _watches()  # a fixed admission: nothing to read it for
    app = create_app(settings)  # the default: adaptive
    async with _client(app) as client:
        assert len(_watches()) == 1
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.sleep(0.06)  # the watch is waiting for its next reading
        time.sleep(0.3)  # noqa: ASYNC251 - a request holding the loop
        await asyncio.sleep(0.1)
        assert app.state.admission.lag_s > 0.02
    await asyncio.sleep(0)
    assert not _watches()  # stopped with the app
