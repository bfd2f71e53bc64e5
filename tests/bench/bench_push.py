"""Push throughput and latency: outbox worker -> real firebase-admin SDK -> loopback FCM stand-in.

Figures:
- `fcm_messages_per_s`: jobs delivered per second, best of the levels in `fcm_by_level`
  ("<processes>x<concurrency>"). Each level spawns that many worker processes, as
  `liandong worker --processes N` does; each runs the real `OutboxWorker` (in-memory store,
  `concurrency` lanes) over its share of `MESSAGES` jobs through `FcmSender` and the real
  `firebase_admin.messaging.send` over HTTP to the stand-in. Time runs from the first process
  starting to drain to the last one finishing. `fcm_single_process_messages_per_s` is the best
  one-process level;
- `fcm_messages_per_s_sql_outbox_sqlite` (and `..._postgis` when LIANDONG_TEST_PG_URL is set):
  the same levels through the real SQL outbox. `MESSAGES` pending jobs wait in a fresh migrated
  database (SpatiaLite file; PostGIS scratch database); every worker process runs
  `SqlOutboxStore` with the worker's default group commit, and the processes split the jobs by
  leased claims as production does. Each run checks that every job was closed and has exactly one
  delivery record. `fcm_sql_outbox_<backend>_by_level` / `_best` / `_runs` as for the in-memory
  figure; `messages_per_commit` is the mean group size of the delivery commits;
- per run (`fcm_runs`; each level is run `ROUNDS` times, interleaved, and keeps its best) and
  for the best level: CPU per message in the sender processes and in
  the stand-in, and how many cores other processes on the machine used meanwhile
  (`other_processes_cores`, from /proc/stat): on a 2-core machine a figure made while something
  else held a core is not the machine's capacity (for PostGIS this includes the database server);
- `baseline_sequential_send_per_s`: naive one-by-one `messaging.send` with the SDK's defaults
  (only the URL repointed), in the same run against the same stand-in; `speedup` is the ratio;
- `outbox_to_first_push_ms`: from committing 5 jobs (a plan dispatching 5 units) and
  `notify()` to the first request arriving at the stand-in, median of repeated runs;
- `incident_to_first_push_ms`: the server path, see `dispatch_latency.py`.

The stand-in for the throughput runs is a separate process, as FCM is: in one process the stand-in
and the code under test would share one GIL and the figure would measure neither. It still shares
the machine's cores; real FCM would not, so its CPU per message is reported separately.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import anyio
import firebase_admin
import msgspec
from firebase_admin import messaging
from sqlalchemy import delete, func, insert, select, text

from push.base import Channel, PushMessage
from push.fcm import FcmSender, fcm_send_url, firebase_app
from push.outbox import InMemoryOutboxStore, JobState, OutboxWorker
from server.db import make_engine, make_sessionmaker
from server.models import PushDelivery, PushJobRow
from server.outbox import SqlOutboxStore
from tests.peers.fcm_standin import FcmStandIn

PROJECT = "liandong-bench"
MESSAGES = int(os.environ.get("LIANDONG_BENCH_PUSH_MESSAGES", "4000"))
BASELINE_MESSAGES = 600
# Sender processes x lanes per process. The SDK's CPU work holds the GIL, so one process tops out
# near one core (~1,000 messages/s here); a few lanes hide the network wait, more only add GIL
# hand-offs. `liandong worker --processes N` is the production shape of PROCESSES > 1.
PROCESSES = (1, 2)
CONCURRENCY = (4, 8)
ROUNDS = 2  # every level twice, interleaved; each level keeps its best run


def _message(i: int) -> PushMessage:
    return PushMessage(
        data={"event_id": f"ev-{i}", "kind": "task.assigned", "task_id": str(uuid.uuid4())},
        collapse_key=f"ev-{i}",
        ttl_seconds=600,
    )


def _start_standin() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.fcm_standin", "--no-record"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    return process, f"http://127.0.0.1:{int(line[1])}"


def _stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_stats", timeout=5) as response:  # noqa: S310
        stats: dict[str, Any] = json.load(response)
        return stats


def _machine_busy_s() -> float | None:
    """CPU seconds every process on the machine has used (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _baseline(base_url: str) -> float:
    """Sequential messaging.send, SDK defaults (its adapter, env proxies lookup), URL repointed."""
    app = firebase_app(PROJECT, name=f"bench-baseline-{uuid.uuid4().hex[:6]}")
    service = messaging._get_messaging_service(app)
    FcmSender._point_at(service, fcm_send_url(base_url, PROJECT))
    msgs = [FcmSender.build_message(f"tok-{i}", _message(i)) for i in range(BASELINE_MESSAGES)]
    messaging.send(msgs[0], app=app)  # connect once, outside the timing
    start = time.perf_counter()
    for m in msgs:
        messaging.send(m, app=app)
    elapsed = time.perf_counter() - start
    firebase_admin.delete_app(app)
    return BASELINE_MESSAGES / elapsed


def _enqueue(store: InMemoryOutboxStore, first: int, count: int) -> None:
    for i in range(first, first + count):
        store.enqueue(
            event_id=f"ev-{i}",
            device_id=f"dev-{i}",
            channel=Channel.FCM,
            address=f"tok-{i}",
            message=_message(i),
        )


# What each worker process reports: (start, end, delivered, CPU seconds, delivery commits).
_Report = tuple[float, float, int, float, int]


def _worker_process(
    base_url: str,
    first: int,
    count: int,
    concurrency: int,
    go: Barrier,
    results: Queue[_Report],
    db_url: str | None = None,
) -> None:
    """One sender process: its OutboxWorker drains its share of the jobs through FcmSender.

    What one `liandong worker` process does, with the in-memory store: set up, wait for the
    others, drain, report (start, end, delivered, CPU seconds) on the shared monotonic clock.
    With `db_url` it is the SQL outbox instead (`_sql_worker_process`).
    """
    if db_url is not None:
        _sql_worker_process(base_url, db_url, concurrency, go, results)
        return
    app = firebase_app(PROJECT, name=f"bench-{os.getpid()}")
    sender = FcmSender(app, endpoint=base_url, max_concurrency=concurrency)
    store = InMemoryOutboxStore()
    _enqueue(store, first, count)
    worker = OutboxWorker(store, {Channel.FCM: sender}, batch_size=1000, concurrency=concurrency)

    async def drain() -> int:
        commits = 0
        while (report := await worker.run_once()).claimed:
            commits += report.commits
        return commits

    go.wait()
    start, cpu = time.monotonic(), _cpu_s()
    commits = anyio.run(drain)
    end, cpu = time.monotonic(), _cpu_s() - cpu
    results.put((start, end, store.count(JobState.DELIVERED), cpu, commits))
    firebase_admin.delete_app(app)


def _sql_worker_process(
    base_url: str,
    db_url: str,
    concurrency: int,
    go: Barrier,
    results: Queue[_Report],
) -> None:
    """One `liandong worker` process over the shared SQL outbox: claims leased batches until
    nothing is left, each message through FcmSender, results settled by `SqlOutboxStore`."""
    app = firebase_app(PROJECT, name=f"bench-sql-{os.getpid()}")
    sender = FcmSender(app, endpoint=base_url, max_concurrency=concurrency)

    async def main() -> _Report:
        engine = make_engine(db_url)
        sessions = make_sessionmaker(engine)
        async with sessions() as session:
            await session.execute(text("SELECT 1"))  # connect (and load SpatiaLite) untimed
        worker = OutboxWorker(
            SqlOutboxStore(sessions), {Channel.FCM: sender}, concurrency=concurrency
        )
        await anyio.to_thread.run_sync(go.wait)
        start, cpu = time.monotonic(), _cpu_s()
        delivered = commits = 0
        while (report := await worker.run_once()).claimed:
            delivered += report.delivered
            commits += report.commits
        end, cpu = time.monotonic(), _cpu_s() - cpu
        await engine.dispose()
        return start, end, delivered, cpu, commits

    results.put(anyio.run(main))
    firebase_admin.delete_app(app)


def _fill_sql_outbox(db_url: str) -> None:
    """Empty the outbox and queue `MESSAGES` due jobs, one per (event, device)."""

    async def run() -> None:
        engine = make_engine(db_url)
        tag = uuid.uuid4().hex[:8]
        now = datetime.now(UTC)
        rows = [
            {
                "id": uuid.uuid4(),
                "event_id": f"ev-{tag}-{i}",
                "device_id": f"dev-{i}",
                "channel": Channel.FCM.value,
                "address": f"tok-{i}",
                "message": msgspec.json.encode(_message(i)).decode(),
                "state": JobState.PENDING.value,
                "attempts": 0,
                "not_before": now,
                "created_at": now,
            }
            for i in range(MESSAGES)
        ]
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(delete(PushDelivery))
            await session.execute(delete(PushJobRow))
            for k in range(0, len(rows), 500):
                await session.execute(insert(PushJobRow).values(rows[k : k + 500]))
        await engine.dispose()

    anyio.run(run)


def _sql_outcome(db_url: str) -> tuple[int, int]:
    """(jobs delivered, delivery records) in the SQL outbox."""

    async def run() -> tuple[int, int]:
        engine = make_engine(db_url)
        async with make_sessionmaker(engine)() as session:
            jobs = await session.scalar(
                select(func.count())
                .select_from(PushJobRow)
                .where(PushJobRow.state == JobState.DELIVERED.value)
            )
            records = await session.scalar(select(func.count()).select_from(PushDelivery))
        await engine.dispose()
        return int(jobs or 0), int(records or 0)

    return anyio.run(run)


def _through_outbox(
    base_url: str, processes: int, concurrency: int, db_url: str | None = None
) -> dict[str, float]:
    """`MESSAGES` jobs split over `processes` worker processes; messages/s from the first start
    to the last finish, and CPU per message in the senders and in the stand-in. Every process
    is spawned fresh (its first sends open its connections), as `liandong worker` would be.

    Without `db_url` each process gets its own share in an in-memory store; with it, the jobs
    wait in that SQL outbox and the processes split them by leased claims, as in production."""
    if db_url is not None:
        _fill_sql_outbox(db_url)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Barrier(processes + 1)  # the children and this process
    results: Queue[_Report] = ctx.Queue()
    shares = [MESSAGES // processes + (k < MESSAGES % processes) for k in range(processes)]
    firsts = [sum(shares[:k]) for k in range(processes)]
    children = [
        ctx.Process(
            target=_worker_process,
            args=(base_url, firsts[k], shares[k], concurrency, go, results, db_url),
        )
        for k in range(processes)
    ]
    for child in children:
        child.start()
    try:
        before = _stats(base_url)
        go.wait(timeout=120)  # every child has imported and enqueued: go
        busy = _machine_busy_s()
        reports = [results.get(timeout=120) for _ in children]
        busy_after = _machine_busy_s()
    finally:
        for child in children:
            child.join(timeout=30)
    after = _stats(base_url)
    delivered = sum(r[2] for r in reports)
    assert delivered == MESSAGES, f"only {delivered}/{MESSAGES} delivered"
    if db_url is not None:
        assert _sql_outcome(db_url) == (MESSAGES, MESSAGES)  # every job closed, one record each
    assert after["accepted_count"] - before["accepted_count"] == MESSAGES
    elapsed = max(r[1] for r in reports) - min(r[0] for r in reports)
    senders_cpu = sum(r[3] for r in reports)
    commits = sum(r[4] for r in reports)
    standin_cpu = after["process_cpu_s"] - before["process_cpu_s"]
    others: float | None = None
    if busy is not None and busy_after is not None:
        # What the rest of the machine took meanwhile, in cores: with 2 cores, a figure made
        # while something else used one of them is not the machine's capacity.
        others = round(max(0.0, busy_after - busy - senders_cpu - standin_cpu) / elapsed, 2)
    return {
        "processes": processes,
        "concurrency": concurrency,
        "messages_per_s": round(MESSAGES / elapsed, 1),
        "sender_cpu_ms_per_msg": round(senders_cpu / MESSAGES * 1000, 3),
        "standin_cpu_ms_per_msg": round(standin_cpu / MESSAGES * 1000, 3),
        "messages_per_commit": round(MESSAGES / max(commits, 1), 1),
        "other_processes_cores": others,
    }


def _latency(runs: int = 15) -> dict[str, float]:
    samples: list[float] = []
    with FcmStandIn() as standin:
        app = firebase_app(PROJECT, name=f"bench-latency-{uuid.uuid4().hex[:6]}")
        sender = FcmSender(app, endpoint=standin.base_url, max_concurrency=8)
        store = InMemoryOutboxStore()
        worker = OutboxWorker(store, {Channel.FCM: sender})

        async def main() -> None:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: worker.run(stop=stop, poll_interval=5.0))
                for run in range(runs):
                    await anyio.sleep(0.05)  # worker idle, waiting on notify or poll
                    standin.reset()
                    for unit in range(5):  # a plan dispatching 5 units, one device each
                        store.enqueue(
                            event_id=f"incident-{run}-task-{unit}",
                            device_id=f"unit-{unit}",
                            channel=Channel.FCM,
                            address=f"tok-unit-{unit}",
                            message=_message(unit),
                        )
                    committed = time.perf_counter()
                    worker.notify()
                    await anyio.to_thread.run_sync(standin.wait_for, 5, 5.0)
                    assert standin.first_request_at is not None
                    samples.append((standin.first_request_at - committed) * 1000)
                stop.set()

        anyio.run(main)
        firebase_admin.delete_app(app)
    return {
        "outbox_to_first_push_ms": round(statistics.median(samples), 2),
        "outbox_to_first_push_ms_max": round(max(samples), 2),
    }


def _best_levels(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best run of each (processes, concurrency) level: noise only ever slows a run down."""
    return [
        max(
            (r for r in runs if (r["processes"], r["concurrency"]) == (p, c)),
            key=lambda r: r["messages_per_s"],
        )
        for p in PROCESSES
        for c in CONCURRENCY
    ]


def _sql_outbox(base_url: str, backend: str) -> dict[str, Any]:
    """The same runs through `SqlOutboxStore` on a fresh migrated database of `backend`."""
    from tests.conftest import drop_scratch_databases, fresh_database

    with tempfile.TemporaryDirectory(prefix="liandong-bench-push-") as tmp:
        db_url = fresh_database(backend, Path(tmp), scratch="liandong_bench_push")
        try:
            runs = [
                _through_outbox(base_url, p, c, db_url)
                for _ in range(ROUNDS)
                for p in PROCESSES
                for c in CONCURRENCY
            ]
        finally:
            if backend == "postgis":
                drop_scratch_databases()
    levels = _best_levels(runs)
    best = max(levels, key=lambda level: level["messages_per_s"])
    return {
        "messages_per_s": best["messages_per_s"],
        "best": best,
        "by_level": {
            f"{lv['processes']}x{lv['concurrency']}": lv["messages_per_s"] for lv in levels
        },
        "runs": runs,
    }


def run() -> dict[str, Any]:
    process, base_url = _start_standin()
    try:
        baseline = _baseline(base_url)
        runs = [
            _through_outbox(base_url, p, c)
            for _ in range(ROUNDS)
            for p in PROCESSES
            for c in CONCURRENCY
        ]
        sql = {"sqlite": _sql_outbox(base_url, "sqlite")}
        if os.environ.get("LIANDONG_TEST_PG_URL"):
            sql["postgis"] = _sql_outbox(base_url, "postgis")
    finally:
        process.terminate()
        process.wait(timeout=10)
    levels = _best_levels(runs)
    best = max(levels, key=lambda level: level["messages_per_s"])
    single = max(
        (level for level in levels if level["processes"] == 1),
        key=lambda level: level["messages_per_s"],
    )
    figures: dict[str, Any] = {
        "fcm_messages_per_s": best["messages_per_s"],
        "fcm_best_processes": best["processes"],
        "fcm_best_concurrency": best["concurrency"],
        "fcm_sender_cpu_ms_per_msg": best["sender_cpu_ms_per_msg"],
        "fcm_standin_cpu_ms_per_msg": best["standin_cpu_ms_per_msg"],
        "fcm_other_processes_cores": best["other_processes_cores"],
        "fcm_single_process_messages_per_s": single["messages_per_s"],
        "fcm_by_level": {
            f"{lv['processes']}x{lv['concurrency']}": lv["messages_per_s"] for lv in levels
        },
        "fcm_runs": runs,
        "baseline_sequential_send_per_s": round(baseline, 1),
        "speedup_vs_baseline": round(best["messages_per_s"] / baseline, 2),
        "messages": MESSAGES,
        "cpus": os.cpu_count(),
        "target_fcm_messages_per_s": 1000,
    }
    for backend, result in sql.items():
        figures[f"fcm_messages_per_s_sql_outbox_{backend}"] = result["messages_per_s"]
        figures[f"fcm_sql_outbox_{backend}_best"] = result["best"]
        figures[f"fcm_sql_outbox_{backend}_by_level"] = result["by_level"]
        figures[f"fcm_sql_outbox_{backend}_runs"] = result["runs"]
    figures.update(_latency())
    # The server path (issue 5): incident POST -> plan -> SQL outbox -> worker -> stand-in.
    from tests.bench import dispatch_latency

    figures.update(dispatch_latency.measure("sqlite"))
    if os.environ.get("LIANDONG_TEST_PG_URL"):
        pg = dispatch_latency.measure("postgis")
        figures["incident_to_first_push_ms_postgis"] = pg["incident_to_first_push_ms"]
        figures["incident_to_first_push_ms_postgis_max"] = pg["incident_to_first_push_ms_max"]
    figures["note"] = (
        f"fcm_messages_per_s: best of {len(levels)} levels (processes x concurrency, see "
        f"fcm_by_level; each the best of {ROUNDS} runs): {best['processes']} worker "
        f"process(es), each an OutboxWorker with "
        f"{best['concurrency']} lanes over its share of {MESSAGES} jobs (in-memory store) -> "
        "FcmSender -> firebase-admin messaging.send -> HTTP/1.1 to the stand-in, which runs "
        "in its own process on the same machine; fcm_messages_per_s_sql_outbox_*: the same "
        "levels with the jobs in a SQL outbox (SqlOutboxStore, default group commit); "
        "outbox_to_first_push_ms and incident_to_first_push_ms use an in-process stand-in"
    )
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
