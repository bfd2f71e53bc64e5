"""The Web Push sender's CPU per message on each event loop (server/loops.py), in isolation.

The alerts benchmark's 2,000-message runs move by ±15 % with the shared machine's load, more
than an event loop changes. This takes the database out and repeats: one sender process (the
product's `OutboxWorker` with its defaults over the in-memory store, and `WebPushSender`: RFC
8291 encryption, aiohttp, TLS) sends `MESSAGES` warnings to `RECEIVERS` loopback push services
serving https (tests/peers/webpush_receiver.py, asyncio's loop, keys derived before the clock),
once per loop per round, the loops alternating (`ROUNDS` rounds, the order swapped each round).
Per run: the sender process's CPU per message (`time.process_time`, all its threads, connections
opened by a warm-up first), the receivers' CPU per message, messages per second and the load.
Not a test and not part of `make bench`; run it under the machine lock:

    flock /tmp/liandong-bench.lock .venv/bin/python -m tests.bench.sender_loop
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from push.webpush import generate_vapid_keys
from server.loops import EVENT_LOOPS
from tests.bench.bench_alerts import PY, ROOT, _start_receivers, _stats, _stop
from tests.peers.webpush_receiver import derived_subscription

MESSAGES = int(os.environ.get("LIANDONG_SENDER_LOOP_MESSAGES", "4000"))
ROUNDS = int(os.environ.get("LIANDONG_SENDER_LOOP_ROUNDS", "3"))
WARMUP = 200

SENDER_CODE = """
import asyncio, json, sys, time
from push.base import Channel, PushMessage
from push.outbox import InMemoryOutboxStore, OutboxWorker
from push.webpush import WebPushSender
from server.loops import loop_factory, running_loop_name

loop, vapid, tag, WARMUP = *sys.argv[1:4], int(sys.argv[4])
subs = json.loads(sys.stdin.read())

async def drain(store, worker, event, subs):
    message = PushMessage(
        title="暴雨红色预警", body="预计未来6小时内降雨量将达100毫米以上。注意防范城市内涝。",
        data={"event_id": event, "kind": "warning.alert", "colour": "red"},
        collapse_key="0" * 32, ttl_seconds=7200,
    )
    for i, sub in enumerate(subs):
        store.enqueue(event_id=event, device_id=f"r:{i}", channel=Channel.WEBPUSH, address=sub,
                      message=message)
    while (await worker.run_once()).claimed:
        pass

async def main():
    sender = WebPushSender(vapid, "mailto:bench@liandong.invalid", allow_hosts=("127.0.0.1",))
    store = InMemoryOutboxStore()
    worker = OutboxWorker(store, {Channel.WEBPUSH: sender})
    await drain(store, worker, f"warmup-{tag}", subs[:WARMUP])
    cpu, t = time.process_time(), time.perf_counter()
    await drain(store, worker, f"ev-{tag}", subs)
    cpu, t = time.process_time() - cpu, time.perf_counter() - t
    await sender.aclose()
    print(json.dumps({"loop": running_loop_name(), "cpu_s": cpu, "seconds": t}))

with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
    runner.run(main())
"""


def _run(loop: str, vapid: str, tag: str, subs: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-c", SENDER_CODE, loop, vapid, tag, str(WARMUP)],
        input=json.dumps(subs),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    keys = generate_vapid_keys()
    report: dict[str, Any] = {"messages": MESSAGES, "rounds": ROUNDS, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        rx = _start_receivers(Path(tmp))
        try:
            n = len(rx.ports)
            ids = [f"sub{i}" for i in range(MESSAGES)]
            for k in range(n):
                rx.client.post(rx.origin(k) + "/_derive", json=ids[k::n]).raise_for_status()
            seeds = [f"bench-alerts-{k}" for k in range(n)]  # as _start_receivers seeds them
            subs = [derived_subscription(seeds[i % n], rx.origin(i), s) for i, s in enumerate(ids)]
            env = {**os.environ, "SSL_CERT_FILE": str(rx.cert)} if rx.cert else dict(os.environ)
            for r in range(ROUNDS):
                for loop in EVENT_LOOPS if r % 2 == 0 else EVENT_LOOPS[::-1]:
                    rx_cpu = sum(s["process_cpu_s"] for s in _stats(rx))
                    load = os.getloadavg()
                    got = _run(loop, keys.private_key, f"{loop}-{r}", subs, env)
                    rx_cpu = sum(s["process_cpu_s"] for s in _stats(rx)) - rx_cpu
                    run = {
                        "loop": loop,
                        "running": got["loop"],
                        "sender_cpu_ms_per_message": round(got["cpu_s"] * 1000 / MESSAGES, 3),
                        # warm-up included: the receivers' counters cover the whole process
                        "receivers_cpu_ms_per_message": round(
                            rx_cpu * 1000 / (MESSAGES + WARMUP), 3
                        ),
                        "messages_per_s": round(MESSAGES / got["seconds"], 1),
                        "load": [round(x, 2) for x in load],
                    }
                    report["runs"].append(run)
                    print(json.dumps(run), flush=True)
        finally:
            _stop(rx.procs)
            rx.client.close()
    for loop in EVENT_LOOPS:
        cpu = sorted(r["sender_cpu_ms_per_message"] for r in report["runs"] if r["loop"] == loop)
        report[f"{loop}_sender_cpu_ms_per_message"] = cpu
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
