"""Load shedding (server/admission.py): a bounded queue per process, writes before reads, a
quick 503 + Retry-After for the rest, and no slot lost to a client that goes away."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from server.admission import (
    AT_WORK_MIN,
    ENGAGE_REFUSALS,
    LAG_HIGH_S,
    LAG_LOW_S,
    STANDING_S,
    STANDING_WAIT_S,
    Admission,
    AdmissionMiddleware,
    admission_from,
    is_urgent,
)
from server.config import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_writes_and_refreshes_are_urgent_reads_and_logins_are_not() -> None:
    assert is_urgent("POST", "/api/v1/sync/push")
    assert is_urgent("POST", "/api/v1/hazards")
    assert is_urgent("PATCH", "/api/v1/uploads/abc")
    assert is_urgent("POST", "/api/v1/auth/refresh")
    assert not is_urgent("POST", "/api/v1/sync/pull")
    assert not is_urgent("POST", "/api/v1/auth/login")
    assert not is_urgent("GET", "/api/v1/tasks")


def test_the_default_limit_and_queue_follow_the_backend(tmp_path: Path) -> None:
    def settings(url: str, **kw: Any) -> Settings:
        return Settings(database_url=url, secret_key="k", var_dir=tmp_path, **kw)

    assert admission_from(settings("sqlite+aiosqlite:///x.db")).limit == 2
    assert admission_from(settings("postgresql+asyncpg://h/db")).limit == 16
    assert admission_from(settings("sqlite+aiosqlite:///x.db", admission_limit=0)).limit == 0
    assert admission_from(settings("sqlite+aiosqlite:///x.db")).queue == 256
    assert admission_from(settings("postgresql+asyncpg://h/db")).queue == 128
    assert admission_from(settings("sqlite+aiosqlite:///x.db", admission_queue=8)).queue == 8
    pg = "postgresql+asyncpg://h/db"
    assert admission_from(settings(pg)).adaptive
    assert not admission_from(settings(pg, admission_adaptive=False)).adaptive


async def test_within_the_limit_everyone_is_admitted_at_once() -> None:
    adm = Admission(limit=3, queue=0)
    assert [await adm.acquire(False) for _ in range(3)] == [True, True, True]
    assert adm.active == 3
    assert not await adm.acquire(True)  # no queue: refused at once
    assert adm.shed == 1


async def test_a_queued_request_gets_the_next_free_slot() -> None:
    adm = Admission(limit=1, queue=4, max_wait_s=5)
    assert await adm.acquire(False)
    waiter = asyncio.create_task(adm.acquire(False))
    await asyncio.sleep(0)
    assert adm.waiting == 1
    adm.release()
    assert await waiter
    assert adm.active == 1 and adm.waiting == 0
    adm.release()
    assert adm.active == 0


async def test_reads_get_half_the_queue_writes_all_of_it_and_go_first() -> None:
    adm = Admission(limit=1, queue=4, max_wait_s=5)
    assert await adm.acquire(False)
    reads = [asyncio.create_task(adm.acquire(False)) for _ in range(3)]
    await asyncio.sleep(0)
    # Two reads fit in half the queue; the third is refused at once.
    assert [r.done() for r in reads] == [False, False, True]
    assert reads[2].result() is False
    writes = [asyncio.create_task(adm.acquire(True)) for _ in range(3)]
    await asyncio.sleep(0)
    # Two writes fill the rest of the queue; the third is refused too.
    assert [w.done() for w in writes] == [False, False, True]
    order: list[str] = []
    for name, task in (("r0", reads[0]), ("r1", reads[1]), ("w0", writes[0]), ("w1", writes[1])):
        task.add_done_callback(lambda _t, n=name: order.append(n))
    for _ in range(4):
        adm.release()
        await asyncio.sleep(0)
    assert all(await asyncio.gather(*reads[:2], *writes[:2]))
    assert order == ["w0", "w1", "r0", "r1"]


async def test_a_request_that_waits_too_long_is_shed_quickly() -> None:
    adm = Admission(limit=1, queue=4, max_wait_s=0.05)
    assert await adm.acquire(True)
    started = time.monotonic()
    assert not await adm.acquire(True)
    assert 0.04 <= time.monotonic() - started < 1
    assert adm.waiting == 0 and adm.shed == 1
    adm.release()
    assert adm.active == 0


async def test_a_client_that_leaves_the_queue_costs_no_slot() -> None:
    adm = Admission(limit=1, queue=4, max_wait_s=5)
    assert await adm.acquire(True)
    gone = asyncio.create_task(adm.acquire(True))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert adm.waiting == 0
    adm.release()
    assert adm.active == 0
    assert await adm.acquire(False)  # the slot is free again


async def test_a_lagging_loop_lets_fewer_work_at_once_and_more_once_it_keeps_up() -> None:
    adm = Admission(limit=8, queue=4, max_wait_s=30, adaptive=True)
    assert all([await adm.acquire(False) for _ in range(8)])
    waiters = [asyncio.create_task(adm.acquire(False)) for _ in range(2)]
    await asyncio.sleep(0)
    for _ in range(20):  # a queue only just formed: a burst, the limit stays
        adm.note_lag(5 * LAG_HIGH_S)
    assert adm.at_work == 8
    later = asyncio.get_running_loop().time() + STANDING_S + 0.1
    for _ in range(20):  # standing and late, but the fixed admission refused no one yet
        adm.note_lag(5 * LAG_HIGH_S, later)
    assert adm.at_work == 8 and adm.wait_s(later) == 30
    assert not await adm.acquire(False)  # the readers' half of the queue is full: refused
    for _ in range(20):  # one refused is a burst's
        adm.note_lag(5 * LAG_HIGH_S, later)
    assert adm.at_work == 8
    assert not await adm.acquire(False)  # as many refused as the readers' half holds
    for _ in range(20):  # a loop late by 5 x the mark, read after read, the queue standing
        adm.note_lag(5 * LAG_HIGH_S, later)
    assert adm.at_work == AT_WORK_MIN
    # Slots given back while more are at work than the lag lets go free, not to a waiter.
    for _ in range(8 - AT_WORK_MIN):
        adm.release()
    assert adm.active == AT_WORK_MIN and adm.waiting == 2
    adm.release()  # now at the lowered limit: the slot passes on
    assert adm.active == AT_WORK_MIN and adm.waiting == 1
    for _ in range(40):  # the loop keeps up again: the limit climbs back, the waiter gets in
        adm.note_lag(0.0)
    assert adm.at_work == 8
    assert all(await asyncio.gather(*waiters))
    assert adm.active == AT_WORK_MIN + 1 and adm.waiting == 0


def test_an_overload_is_as_many_refusals_as_the_readers_half_of_the_queue_at_most_32() -> None:
    assert Admission(queue=4)._engage_after() == 2
    assert Admission(queue=64)._engage_after() == ENGAGE_REFUSALS == 32
    assert Admission(queue=128)._engage_after() == ENGAGE_REFUSALS
    assert Admission(queue=1)._engage_after() == 1


async def test_a_lag_without_a_standing_queue_changes_nothing_nor_does_a_fixed_one() -> None:
    adm = Admission(limit=8, adaptive=True)
    later = asyncio.get_running_loop().time() + STANDING_S + 0.1
    for _ in range(20):  # late for long, but nobody waits for a slot: not ours to fix
        adm.note_lag(5 * LAG_HIGH_S, later)
    assert adm.at_work == 8
    fixed = Admission(limit=8, adaptive=False)
    assert all([await fixed.acquire(False) for _ in range(8)])
    waiter = asyncio.create_task(fixed.acquire(False))
    await asyncio.sleep(0)
    for _ in range(20):
        fixed.note_lag(5 * LAG_HIGH_S, later)
    assert fixed.at_work == 8
    fixed.release()
    assert await waiter


async def test_a_queue_that_stands_makes_the_next_request_wait_briefly() -> None:
    adm = Admission(limit=1, queue=2, max_wait_s=5, adaptive=True)
    fixed = Admission(limit=1, queue=2, max_wait_s=5, adaptive=False)
    for a in (adm, fixed):
        assert await a.acquire(True)
    first = [asyncio.create_task(a.acquire(True)) for a in (adm, fixed)]
    await asyncio.sleep(STANDING_S + 0.1)  # the queue has not emptied since
    for a in (adm, fixed):
        assert not await a.acquire(False)  # a read finds its half full: refused
    now = asyncio.get_running_loop().time()
    assert adm.wait_s(now) == 5  # but the loop keeps up: a lock's queue, not an overload
    for a in (adm, fixed):
        for _ in range(20):
            a.note_lag(5 * LAG_HIGH_S)  # the loop runs late too
    started = time.monotonic()
    later = asyncio.create_task(adm.acquire(True))
    assert not await later
    assert time.monotonic() - started < STANDING_WAIT_S + 0.3
    assert adm.wait_s(asyncio.get_running_loop().time()) == STANDING_WAIT_S
    assert fixed.wait_s(asyncio.get_running_loop().time()) == 5
    for _ in range(30):  # fewer at work, the loop half caught up: still the same overload
        adm.note_lag((LAG_LOW_S + LAG_HIGH_S) / 2)
    assert adm.wait_s(asyncio.get_running_loop().time()) == STANDING_WAIT_S
    for _ in range(30):  # caught up
        adm.note_lag(0.0)
    assert adm.wait_s(asyncio.get_running_loop().time()) == 5
    for a in (adm, fixed):
        a.release()  # the first waiter, queued while the queue was fresh, still gets in
    assert all(await asyncio.gather(*first))
    for a in (adm, fixed):
        a.release()
        assert a.active == 0 and a.waiting == 0
    # Emptied: a new wait is the full one again.
    assert adm.wait_s(asyncio.get_running_loop().time()) == 5


async def test_the_watch_reads_how_late_the_loop_runs() -> None:
    adm = Admission(limit=8)
    watch = asyncio.create_task(adm.watch())
    await asyncio.sleep(0.06)
    time.sleep(0.3)  # noqa: ASYNC251 - a request holding the loop
    await asyncio.sleep(0.06)
    watch.cancel()
    assert adm.lag_s > 0.02


def test_retry_after_is_spread_between_the_base_and_twice_it() -> None:
    adm = Admission(retry_after_s=10)
    seen = {adm.retry_after() for _ in range(200)}
    assert min(seen) >= 10 and max(seen) <= 20 and len(seen) > 3


class _Slow:
    """An ASGI app whose answer waits for `gate`; text/event-stream for /events."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        stream = scope["path"] == "/events"
        ctype = b"text/event-stream" if stream else b"text/plain"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]}
        )
        if stream:
            await send(
                {"type": "http.response.body", "body": b"event: ready\n\n", "more_body": True}
            )
        await self.gate.wait()
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


def _wrapped(adm: Admission, inner: Any) -> Any:
    # The middleware's own handler, without Litestar's route lookup around it.
    mw = AdmissionMiddleware(adm)
    return lambda scope, receive, send: mw.handle(scope, receive, send, inner)


async def _call(
    app: Any,
    path: str,
    method: str = "GET",
    chunks: tuple[bytes, ...] = (b"",),
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": list(headers),
        "raw_path": path.encode(),
    }
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_the_middleware_answers_503_problem_with_retry_after_when_full() -> None:
    adm = Admission(limit=1, queue=0, retry_after_s=3)
    inner = _Slow()
    app = _wrapped(adm, inner)
    first = asyncio.create_task(_call(app, "/api/v1/tasks"))
    await asyncio.sleep(0.01)
    refused = await asyncio.wait_for(_call(app, "/api/v1/tasks"), 1)
    start, body = refused
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert 3 <= int(headers[b"retry-after"]) <= 6
    problem = json.loads(body["body"])
    assert problem["code"] == "overloaded" and problem["status"] == 503
    inner.gate.set()
    assert (await first)[0]["status"] == 200
    assert adm.active == 0


async def test_the_503_reads_in_the_language_the_request_asks_for() -> None:
    adm = Admission(limit=1, queue=0, retry_after_s=3)
    inner = _Slow()
    app = _wrapped(adm, inner)
    first = asyncio.create_task(_call(app, "/api/v1/tasks"))
    await asyncio.sleep(0.01)
    zh = ((b"accept-language", b"zh-CN,zh;q=0.9"),)
    start, body = await asyncio.wait_for(_call(app, "/api/v1/tasks", headers=zh), 1)
    problem = json.loads(body["body"])
    retry = dict(start["headers"])[b"retry-after"].decode()
    assert (problem["title"], problem["detail"]) == (
        "服务不可用",
        f"服务器繁忙，请在 {retry} 秒后重试",  # noqa: RUF001
    )
    assert problem["code"] == "overloaded"  # machine-readable parts stay as they are
    assert dict(start["headers"])[b"content-language"] == b"zh-CN"
    _, plain = await asyncio.wait_for(_call(app, "/api/v1/tasks"), 1)
    assert json.loads(plain["body"])["title"] == "Service unavailable"
    inner.gate.set()
    await first


async def test_an_open_stream_gives_its_slot_back_and_the_body_is_passed_on_whole() -> None:
    adm = Admission(limit=1, queue=0)
    inner = _Slow()
    app = _wrapped(adm, inner)
    stream = asyncio.create_task(_call(app, "/events"))
    await asyncio.sleep(0.01)
    assert adm.active == 0  # the stream has started: it holds no slot
    write = asyncio.create_task(_call(app, "/api/v1/sync/push", "POST", (b"ab", b"cd", b"")))
    await asyncio.sleep(0.01)
    assert adm.active == 1
    inner.gate.set()
    assert (await write)[0]["status"] == 200
    await stream
    assert inner.bodies[-1] == b"abcd"
    assert adm.active == 0
