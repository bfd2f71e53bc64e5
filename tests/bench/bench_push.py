"""Push throughput and latency: outbox worker -> real firebase-admin SDK -> loopback FCM stand-in.

Figures:
- `fcm_messages_per_s`: jobs drained per second by `OutboxWorker` (in-memory store) through
  `FcmSender` (threads over one pooled session) to the stand-in, best of a few concurrency levels;
- `baseline_sequential_send_per_s`: naive one-by-one `messaging.send` with the SDK's defaults
  (only the URL repointed), in the same run; `speedup` is the ratio;
- `outbox_to_first_push_ms`: from committing 5 jobs (a plan dispatching 5 units) and
  `notify()` to the first request arriving at the stand-in, median of repeated runs. The
  incident -> plan -> outbox path belongs to the server and is not measured here.

The stand-in for the throughput runs is a separate process, as FCM is: in one process the stand-in
and the code under test would share one GIL and the figure would measure neither.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import anyio
import firebase_admin
from firebase_admin import messaging

from push.base import Channel, PushMessage
from push.fcm import FcmSender, fcm_send_url, firebase_app
from push.outbox import InMemoryOutboxStore, JobState, OutboxWorker
from tests.peers.fcm_standin import FcmStandIn

PROJECT = "liandong-bench"
MESSAGES = int(os.environ.get("LIANDONG_BENCH_PUSH_MESSAGES", "4000"))
BASELINE_MESSAGES = 600


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


def _accepted(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/_stats", timeout=5) as response:  # noqa: S310
        return int(json.load(response)["accepted_count"])


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


def _through_outbox(base_url: str, concurrency: int) -> dict[str, float]:
    app = firebase_app(PROJECT, name=f"bench-{concurrency}-{uuid.uuid4().hex[:6]}")
    sender = FcmSender(app, endpoint=base_url, max_concurrency=concurrency)
    store = InMemoryOutboxStore()
    for i in range(MESSAGES):
        store.enqueue(
            event_id=f"ev-{i}",
            device_id=f"dev-{i}",
            channel=Channel.FCM,
            address=f"tok-{i}",
            message=_message(i),
        )
    worker = OutboxWorker(store, {Channel.FCM: sender}, batch_size=1000, concurrency=concurrency)
    before = _accepted(base_url)

    async def drain() -> float:
        start = time.perf_counter()
        while (await worker.run_once()).claimed:
            pass
        return time.perf_counter() - start

    elapsed = anyio.run(drain)
    delivered = store.count(JobState.DELIVERED)
    assert delivered == MESSAGES, f"only {delivered}/{MESSAGES} delivered"
    assert _accepted(base_url) - before == MESSAGES
    firebase_admin.delete_app(app)
    return {"concurrency": concurrency, "messages_per_s": round(MESSAGES / elapsed, 1)}


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


def run() -> dict[str, Any]:
    process, base_url = _start_standin()
    try:
        baseline = _baseline(base_url)
        levels = [_through_outbox(base_url, c) for c in (4, 8, 16, 32)]
    finally:
        process.terminate()
        process.wait(timeout=10)
    best = max(levels, key=lambda level: level["messages_per_s"])
    figures: dict[str, Any] = {
        "fcm_messages_per_s": best["messages_per_s"],
        "fcm_best_concurrency": best["concurrency"],
        "fcm_by_concurrency": {str(lv["concurrency"]): lv["messages_per_s"] for lv in levels},
        "baseline_sequential_send_per_s": round(baseline, 1),
        "speedup_vs_baseline": round(best["messages_per_s"] / baseline, 2),
        "messages": MESSAGES,
        "cpus": os.cpu_count(),
        "target_fcm_messages_per_s": 1000,
        "note": "stand-in in a separate process; incident_to_first_push_ms awaits the server path",
    }
    figures.update(_latency())
    # The server path (issue 5): incident POST -> plan -> SQL outbox -> worker -> stand-in.
    from tests.bench import dispatch_latency

    figures.update(dispatch_latency.measure("sqlite"))
    if os.environ.get("LIANDONG_TEST_PG_URL"):
        pg = dispatch_latency.measure("postgis")
        figures["incident_to_first_push_ms_postgis"] = pg["incident_to_first_push_ms"]
        figures["incident_to_first_push_ms_postgis_max"] = pg["incident_to_first_push_ms_max"]
    figures["note"] = "stand-in in a separate process for throughput; in-process for latency"
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
