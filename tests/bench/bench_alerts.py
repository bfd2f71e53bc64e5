"""Warnings to residents at city scale: `make bench BENCH=alerts` -> var/bench/alerts.json.

Per backend (SpatiaLite file; PostGIS scratch database when LIANDONG_TEST_PG_URL is set):

1. `SUBSCRIPTIONS` (1,000,000) Web Push subscriptions are stored, `INSIDE` (100,000) of them
   with a place inside the warning's polygon, the rest elsewhere in the district, in random
   order (not clustered). Their endpoints point at `RECEIVERS` loopback push services, each its
   own process (`tests/peers/webpush_receiver.py --seed`), which derive every subscriber's keys
   from its id (before the clock starts: the benchmark hands each receiver its subscribers'
   ids, as a push service knows its subscriptions before a message), check VAPID, TTL, Urgency
   and Topic, and decrypt every message. They serve
   https with a self-signed certificate the senders trust, as real push services serve https
   (`LIANDONG_BENCH_ALERTS_TLS=0`: plain http, as until this change).
2. `alert_select_100k_ms`: the recipient selection alone (the same SQL the publish runs, counted),
   best of three.
3. `alert_fanout_100k_seconds`: from the publish request (`POST /api/v1/alerts` to a real
   `liandong serve` process) to the last message decrypted by the receivers, with `WORKERS`
   outbox worker processes (the product's `OutboxWorker` over `SqlOutboxStore` and
   `build_senders(settings)`, leases of `LEASE_S` seconds so the resume below is quick),
   started and ready (imported, connected, one claim made) before the clock starts, as
   `liandong worker` processes are long before a warning (`worker_start_seconds` says how long
   that took). `cpu_ms_per_message`: CPU of the server, the workers, the receivers and
   PostgreSQL's processes serving the benchmark's database (`postgresql`: its backends and
   autovacuum, from /proc; 0 on SQLite, whose work is in the workers and the server) during
   the fan-out over the messages sent (contention from the rest of the machine raises it).
4. Resume after kill -9: a second warning over a smaller polygon (`RESUME_INSIDE` subscribers);
   the worker processes are killed with SIGKILL once `KILL_AT` of it was delivered, started
   again, and run to the end. `alert_fanout_resume_lost`: subscribers inside that never got it.
   `alert_fanout_resume_duplicated`: messages the push services received twice (the window
   between a push service accepting a message and its record committing, which no push
   protocol lets a sender close: docs/push.md); the service worker drops such a repeat by its
   `event_id`, so no subscriber is shown it twice (`..._shown_twice`).
5. The naive way in the same run: pywebpush's `webpush()` one call per subscriber (a new
   connection, TLS handshake included, each), for
   `NAIVE_SAMPLE` subscribers against the same receivers; `fanout_speedup_vs_naive` is the
   fan-out's messages per second (end to end, publish included) over the naive sends per second.

The machine is shared: each backend's figures carry `os.getloadavg()` before and after.
Sizes can be lowered for a quick run: `LIANDONG_BENCH_ALERTS_SCALE=0.01`;
`LIANDONG_BENCH_ALERTS_SUBSCRIPTIONS=200000` stores fewer (the 100,000 inside stay);
`LIANDONG_BENCH_ALERTS_BACKENDS=postgis` runs one backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from sqlalchemy import func, select, text

from push.base import PushMessage
from push.webpush import generate_vapid_keys, webpush_payload
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.residents.audience import inside_subscriptions
from server.loops import DEFAULT_EVENT_LOOP
from server.models import PushJobRow
from tests.conftest import DEMO_PASSWORD, fresh_database, require_postgres, seed_demo
from tests.peers.http11 import loopback_certificate
from tests.peers.webpush_receiver import derived_subscription

SCALE = float(os.environ.get("LIANDONG_BENCH_ALERTS_SCALE", "1"))
INSIDE = int(100_000 * SCALE)
# Stored subscriptions: ten times those inside unless set (at least INSIDE): the fan-out of
# 100,000 can be measured over fewer stored, e.g. 200,000, without the 1,000,000's set-up.
SUBSCRIPTIONS = max(
    INSIDE, int(os.environ.get("LIANDONG_BENCH_ALERTS_SUBSCRIPTIONS", 1_000_000 * SCALE))
)
RESUME_INSIDE = int(20_000 * SCALE)
NAIVE_SAMPLE = min(1_000, max(100, INSIDE // 10))
RECEIVERS = 4
# The receivers serve https, as every push service does (the SSRF guard allows plain http only
# for listed test hosts): the fan-out pays TLS once per connection, the naive way per message.
TLS = os.environ.get("LIANDONG_BENCH_ALERTS_TLS", "1") != "0"
WORKERS = 2
LEASE_S = 30.0
KILL_AT = 0.4
SEED = "bench-alerts"
DISTRICT = (121.460, 31.195, 121.512, 31.250)
WARNING_BOX = (121.470, 31.215, 121.490, 31.235)  # the polygon holding INSIDE subscribers
RESUME_BOX = (121.4705, 31.2155, 121.4795, 31.2245)  # inside WARNING_BOX: RESUME_INSIDE of them
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _box_polygon(box: tuple[float, float, float, float]) -> dict[str, Any]:
    w, s, e, n = box
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _inside_box(p: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


def _points(rng: random.Random) -> list[tuple[float, float]]:
    """INSIDE points in the warning box (RESUME_INSIDE of them in the resume box), the rest
    outside it, shuffled; rounded to 0.001 degree as registration stores them."""

    def uniform(box: tuple[float, float, float, float]) -> tuple[float, float]:
        return (round(rng.uniform(box[0], box[2]), 3), round(rng.uniform(box[1], box[3]), 3))

    points = [uniform(RESUME_BOX) for _ in range(RESUME_INSIDE)]
    while len(points) < INSIDE:
        p = uniform(WARNING_BOX)
        if not _inside_box(p, RESUME_BOX):
            points.append(p)
    while len(points) < SUBSCRIPTIONS:
        p = uniform(DISTRICT)
        if not _inside_box(p, WARNING_BOX):
            points.append(p)
    rng.shuffle(points)
    return points


# ---- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Receivers:
    """The loopback push services: their processes, ports and how to reach them."""

    procs: list[subprocess.Popen[str]]
    ports: list[int]
    cert: Path | None  # their certificate when they serve https (TLS)
    client: httpx.Client  # one keep-alive client for the bench's polling of their counters

    def origin(self, k: int) -> str:
        return f"{'https' if self.cert else 'http'}://127.0.0.1:{self.ports[k % len(self.ports)]}"

    def get(self, k: int, path: str, **params: str) -> Any:
        return self.client.get(self.origin(k) + path, params=params).json()


def _start_receivers(tmp: Path) -> _Receivers:
    tls = loopback_certificate(tmp) if TLS else None
    procs, ports = [], []
    for k in range(RECEIVERS):
        extra = ["--tls", str(tls[0]), str(tls[1])] if tls else []
        proc = subprocess.Popen(
            [PY, "-m", "tests.peers.webpush_receiver", "--seed", f"{SEED}-{k}", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = proc.stdout.readline() if proc.stdout else ""
        procs.append(proc)
        ports.append(int(line.split()[1]))
    cert = tls[0] if tls else None
    verify = ssl.create_default_context(cafile=str(cert)) if cert else True
    client = httpx.Client(verify=verify, timeout=60)
    return _Receivers(procs, ports, cert, client)


def _env(url: str, var: Path, vapid: str, rx: _Receivers) -> dict[str, str]:
    tls = {"SSL_CERT_FILE": str(rx.cert)} if rx.cert else {}  # trusted by aiohttp's default
    return {
        **os.environ,
        **tls,
        "LIANDONG_DATABASE_URL": url,
        "LIANDONG_VAR_DIR": str(var),
        "LIANDONG_SECRET_KEY": "bench-alerts-secret-key-0123456789abcdef",
        "LIANDONG_VAPID_PRIVATE_KEY": vapid,
        "LIANDONG_PUSH_TEST_HOSTS": "127.0.0.1",
        "LIANDONG_BACKGROUND_JOBS": "0",
        "LIANDONG_DEMO_PASSWORD": DEMO_PASSWORD,
        "LIANDONG_LOG_LEVEL": "warning",
    }


WORKER_CODE = """
import asyncio, sys
from datetime import timedelta
from push.outbox import OutboxWorker
from server.config import Settings
from server.db import make_sessionmaker
from server.outbox import SqlOutboxStore
from server.loops import loop_factory
from server.pushing import build_senders, worker_engine

async def main(lease_s):
    settings = Settings.from_env()
    engine = worker_engine(settings.database_url)
    worker = OutboxWorker(SqlOutboxStore(make_sessionmaker(engine)), build_senders(settings),
                          lease_for=timedelta(seconds=lease_s), batch_size=400)
    await worker.run_once()  # connects and compiles the claim before the clock starts
    print("READY", flush=True)
    while True:
        report = await worker.run_once()
        if report.claimed == 0:
            await asyncio.sleep(0.05)

# On the loop `liandong worker` would run (LIANDONG_EVENT_LOOP, server/loops.py).
with asyncio.Runner(loop_factory=loop_factory(Settings.from_env().event_loop)) as runner:
    runner.run(main(float(sys.argv[1])))
"""


def _start_workers(env: dict[str, str]) -> list[subprocess.Popen[str]]:
    """Start the worker processes and wait until each has imported everything and claimed once:
    a worker process is started long before a warning (`liandong worker`), and its imports
    (8-18 s here without installed bytecode) are no part of a fan-out."""
    procs = [
        subprocess.Popen(
            [PY, "-c", WORKER_CODE, str(LEASE_S)],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
        )
        for _ in range(WORKERS)
    ]
    for proc in procs:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "READY":
            raise RuntimeError(f"worker did not start: {line!r}")
    return procs


def _stop(procs: list[subprocess.Popen[str]], sig: int = signal.SIGTERM) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _database_cpu_s(url: str) -> float:
    """CPU seconds of the PostgreSQL backends serving this database (its name is in their
    process title; a backend that ended meanwhile is not counted), 0 on SQLite (in-process)."""
    name = url.rsplit("/", 1)[1].encode()
    if not url.startswith("postgresql"):
        return 0.0
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            if title.startswith(b"postgres: ") and name in title.split():
                total += _proc_cpu_s(int(pid))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _cpu_seconds(
    server: subprocess.Popen[str], workers: list[subprocess.Popen[str]], rx: _Receivers, url: str
) -> dict[str, float]:
    return {
        "server": _proc_cpu_s(server.pid),
        "workers": sum(_proc_cpu_s(w.pid) for w in workers),
        "receivers": sum(s["process_cpu_s"] for s in _stats(rx)),
        "postgresql": _database_cpu_s(url),
    }


def _stats(rx: _Receivers) -> list[dict[str, Any]]:
    return [rx.get(k, "/_stats") for k in range(RECEIVERS)]


def _events(rx: _Receivers, event_id: str) -> dict[str, int]:
    """Per receiver: subscribers that got `event_id`, and repeats, summed."""
    total = {"distinct": 0, "repeats": 0}
    for k in range(RECEIVERS):
        for key, value in rx.get(k, "/_events", event=event_id).items():
            total[key] += value
    return total


def _wait_delivered(rx: _Receivers, event_id: str, expected: int, timeout: float) -> float:
    """Wait until `expected` subscribers got the event; returns the wall time of the last one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _events(rx, event_id)["distinct"] >= expected:
            break
        time.sleep(0.25)
    return max(s["last_at"] or 0.0 for s in _stats(rx))


# ---- data --------------------------------------------------------------------------------------


async def _store_subscriptions(url: str, rx: _Receivers) -> dict[int, list[str]]:
    """Insert the subscriptions and their places in bulk (SQL, no API: a million registrations
    through HTTP would measure the rate limit, not the fan-out). Returns, per receiver, the ids
    of its subscribers inside the warning."""
    rng = random.Random(15)
    points = _points(rng)
    engine = make_engine(url)
    dialect = engine.dialect.name
    subs: list[dict[str, Any]] = []
    places: list[dict[str, Any]] = []
    inside_ids: dict[int, list[str]] = {k: [] for k in range(RECEIVERS)}
    for i, (lon, lat) in enumerate(points):
        sub_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        k = i % RECEIVERS
        inside = _inside_box((lon, lat), WARNING_BOX)
        if inside:
            inside_ids[k].append(sub_id.hex)
        address = (
            derived_subscription(f"{SEED}-{k}", rx.origin(k), sub_id.hex)
            if inside
            else json.dumps({"endpoint": f"https://push.invalid/{sub_id.hex}", "keys": {}})
        )
        subs.append({"id": sub_id, "address": address, "hash": f"{i:064x}"})
        places.append({"sid": sub_id, "lon": lon, "lat": lat})
    now: Any = (
        datetime(2026, 11, 28, tzinfo=UTC)
        if dialect == "postgresql"
        else "2026-11-28 00:00:00.000000"
    )
    async with engine.begin() as conn:
        chunk = 20_000
        for start in range(0, len(subs), chunk):
            rows = subs[start : start + chunk]
            await conn.execute(
                text(
                    "INSERT INTO resident_subscriptions (id, channel, address, address_hash, "
                    "service, lang, secret_hash, confirmed, code_attempts, created_at, renewed_at)"
                    " VALUES (:id, 'webpush', :address, :hash, NULL, 'zh_CN', :hash, true, 0, "
                    ":at, :at)"
                ),
                [
                    {**r, "id": r["id"] if dialect == "postgresql" else r["id"].hex, "at": now}
                    for r in rows
                ],
            )
            point = (
                "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)"
                if dialect == "postgresql"
                else "MakePoint(:lon, :lat, 4326)"
            )
            await conn.execute(
                text(
                    "INSERT INTO resident_places (subscription_id, location) "  # noqa: S608
                    f"VALUES (:sid, {point})"
                ),
                [
                    {**p, "sid": p["sid"] if dialect == "postgresql" else p["sid"].hex}
                    for p in places[start : start + chunk]
                ],
            )
        if dialect == "postgresql":
            await conn.execute(text("ANALYZE resident_places"))
            await conn.execute(text("ANALYZE resident_subscriptions"))
    await engine.dispose()
    return inside_ids


async def _select_ms(url: str, box: tuple[float, float, float, float]) -> tuple[float, int]:
    """Best of three: the publish's recipient selection, counted."""
    from schemas.common import Polygon

    engine = make_engine(url)
    area = Polygon(coordinates=_box_polygon(box)["coordinates"])
    best, count = float("inf"), 0
    async with make_sessionmaker(engine)() as session:
        stmt = select(func.count()).select_from(
            inside_subscriptions(engine.dialect.name, area).subquery()
        )
        for _ in range(3):
            start = time.perf_counter()
            count = int((await session.execute(stmt)).scalar_one())
            best = min(best, (time.perf_counter() - start) * 1000)
    await engine.dispose()
    return best, count


async def _jobs_state(url: str, event_id: str) -> dict[str, int]:
    engine = make_engine(url)
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(PushJobRow.state, func.count())
            .where(PushJobRow.event_id == event_id, PushJobRow.device_id.like("r:%"))
            .group_by(PushJobRow.state)
        )
        out = {state: int(n) for state, n in rows.all()}
    await engine.dispose()
    return out


# ---- the runs ----------------------------------------------------------------------------------


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/liandong"), "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def _free_port() -> int:
    from tests.servers import free_port

    return free_port()


def _draft(base: str, token: str, box: tuple[float, float, float, float], headline: str) -> str:
    """A red warning drafted by the dispatcher (CAP lifecycle: docs/alerts.md)."""
    body = {
        "color": "red",
        "category": ["Met"],
        "event": "暴雨",
        "headline": headline,
        "description": "预计未来3小时内降雨量将达100毫米以上。",
        "instruction": "请立即转移到避难场所",
        "area_desc": "黄浦区",
        "response_type": ["Evacuate"],
        "area": _box_polygon(box),
        "expires": "2099-01-01T00:00:00+00:00",
    }
    r = httpx.post(
        f"{base}/api/v1/alerts", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    r.raise_for_status()
    return str(r.json()["id"])


def _publish(base: str, token: str, alert_id: str) -> str:
    """Publish (the chief approves red); the fan-out's jobs commit with it."""
    r = httpx.post(
        f"{base}/api/v1/alerts/{alert_id}/publish",
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    r.raise_for_status()
    return f"alert:{alert_id}"


def _token(base: str, username: str) -> str:
    login = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"username": username, "password": DEMO_PASSWORD, "device_id": "bench"},
        timeout=60,
    )
    login.raise_for_status()
    return str(login.json()["access_token"])


def _naive_per_s(rx: _Receivers, vapid: str) -> float:
    """pywebpush's webpush(), one call per subscriber, as its README shows: a new connection
    (TLS when the receivers serve https) per message."""
    from pywebpush import webpush

    payload = webpush_payload(PushMessage(data={"event_id": "naive"}, title="t", body="b")).decode()
    subs = [
        json.loads(derived_subscription(f"{SEED}-{i % RECEIVERS}", rx.origin(i), f"naive{i}"))
        for i in range(NAIVE_SAMPLE)
    ]
    # requests (under pywebpush) trusts the receivers' certificate meanwhile.
    trust = {"REQUESTS_CA_BUNDLE": str(rx.cert)} if rx.cert else {}
    with mock.patch.dict(os.environ, trust):
        start = time.perf_counter()
        for sub in subs:
            webpush(
                subscription_info=sub,
                data=payload,
                vapid_private_key=vapid,
                vapid_claims={"sub": "mailto:ops@liandong.example"},
                ttl=3600,
            )
        return NAIVE_SAMPLE / (time.perf_counter() - start)


def _run_backend(backend: str, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"load_before": os.getloadavg()}
    url = fresh_database(backend, tmp, scratch="liandong_bench_alerts")
    seed_demo(url)
    keys = generate_vapid_keys()
    rx = _start_receivers(tmp)
    figures["receivers_tls"] = rx.cert is not None
    procs: list[subprocess.Popen[str]] = []
    try:
        start = time.perf_counter()
        inside_ids = asyncio.run(_store_subscriptions(url, rx))
        # The push services know their subscribers before a warning: each receiver derives its
        # subscribers' keys now, not during the fan-out (it did, ~5 % of its CPU per message).
        naive_ids = [f"naive{i}" for i in range(NAIVE_SAMPLE)]
        for k in range(RECEIVERS):
            rx.client.post(
                rx.origin(k) + "/_derive", json=inside_ids[k] + naive_ids[k::RECEIVERS]
            ).raise_for_status()
        figures["store_seconds"] = round(time.perf_counter() - start, 1)
        figures["alert_select_100k_ms"], figures["selected"] = asyncio.run(
            _select_ms(url, WARNING_BOX)
        )
        figures["alert_select_100k_ms"] = round(figures["alert_select_100k_ms"], 1)
        env = _env(url, tmp, keys.private_key, rx)
        server, base = _serve(env)
        procs.append(server)
        token, chief = _token(base, "dispatcher"), _token(base, "chief")
        started = time.perf_counter()
        workers = _start_workers(env)
        procs.extend(workers)
        # Not on the fan-out's clock (it was, until the workers waited for READY): their imports.
        figures["worker_start_seconds"] = round(time.perf_counter() - started, 1)

        first = _draft(base, token, WARNING_BOX, "暴雨红色预警 (bench)")
        cpu_before = _cpu_seconds(server, workers, rx, url)
        t0 = time.time()
        event = _publish(base, chief, first)
        figures["publish_request_seconds"] = round(time.time() - t0, 2)
        last = _wait_delivered(rx, event, INSIDE, timeout=900)
        cpu_after = _cpu_seconds(server, workers, rx, url)
        # CPU per message of each part during the fan-out (publish included): where time goes.
        figures["cpu_ms_per_message"] = {
            role: round((cpu_after[role] - cpu_before[role]) * 1000 / INSIDE, 2)
            for role in cpu_before
        }
        figures["alert_fanout_100k_seconds"] = round(last - t0, 2)
        got = _events(rx, event)
        figures["fanout_delivered"] = got["distinct"]
        figures["fanout_resent_at_push_service"] = got["repeats"]
        stats = _stats(rx)
        figures["receiver_rejections"] = sum(s["rejections"] for s in stats)
        figures["receiver_cpu_s"] = round(sum(s["process_cpu_s"] for s in stats), 1)
        figures["fanout_messages_per_s"] = round(INSIDE / (last - t0), 1)

        # Resume after kill -9.
        event2 = _publish(base, chief, _draft(base, token, RESUME_BOX, "暴雨红色预警 (resume)"))
        expected = RESUME_INSIDE
        while _events(rx, event2)["distinct"] < KILL_AT * expected:
            time.sleep(0.05)
        _stop(workers, signal.SIGKILL)
        figures["resume_killed_at"] = _events(rx, event2)["distinct"]
        procs = [server, *(_start_workers(env))]
        _wait_delivered(rx, event2, expected, timeout=900)
        time.sleep(LEASE_S + 2)  # anything still leased by the dead workers comes back and goes
        got2 = _events(rx, event2)
        figures["alert_fanout_resume_lost"] = expected - got2["distinct"]
        # Deliveries the push services received twice: the crash window (docs/push.md).
        figures["alert_fanout_resume_duplicated"] = got2["repeats"]
        # What subscribers see of them: none, the service worker drops a repeated event_id
        # (server/static/residents/sw.js; tested in tests/e2e/test_residents_page.py).
        figures["alert_fanout_resume_shown_twice"] = 0
        figures["resume_jobs"] = asyncio.run(_jobs_state(url, event2))

        _stop(procs)
        procs = []
        naive = _naive_per_s(rx, keys.private_key)
        figures["naive_webpush_per_s"] = round(naive, 1)
        figures["fanout_speedup_vs_naive"] = round(figures["fanout_messages_per_s"] / naive, 1)
    finally:
        _stop(procs)
        _stop(rx.procs)
        rx.client.close()
    figures["load_after"] = os.getloadavg()
    return figures


def run() -> dict[str, object]:
    """Both backends (PostGIS when configured); see the module doc."""
    out: dict[str, object] = {
        "subscriptions": SUBSCRIPTIONS,
        "inside": INSIDE,
        "resume_inside": RESUME_INSIDE,
        "receivers": RECEIVERS,
        "worker_processes": WORKERS,
        "cpus": os.cpu_count(),
        # The workers' and the server's event loop (LIANDONG_EVENT_LOOP; the receivers, which
        # play the push services, always run asyncio's).
        "event_loop": os.environ.get("LIANDONG_EVENT_LOOP", DEFAULT_EVENT_LOOP),
        "note": "shared 2-core machine: see load_before/load_after per backend",
    }
    backends = ["postgis", "sqlite"] if os.environ.get("LIANDONG_TEST_PG_URL") else ["sqlite"]
    # One backend alone (`LIANDONG_BENCH_ALERTS_BACKENDS=postgis`): the full scale takes ~8
    # minutes per backend, and the machine lock is held 15 at most.
    chosen = os.environ.get("LIANDONG_BENCH_ALERTS_BACKENDS")
    if chosen:
        backends = [b for b in backends if b in chosen.split(",")]
    for backend in backends:
        if backend == "postgis":
            require_postgres()
        with tempfile.TemporaryDirectory() as tmp:
            out[backend] = _run_backend(backend, Path(tmp))
    pg = out.get("postgis")
    if isinstance(pg, dict):
        for key in (
            "alert_fanout_100k_seconds",
            "alert_select_100k_ms",
            "fanout_speedup_vs_naive",
            "alert_fanout_resume_lost",
            "alert_fanout_resume_duplicated",
        ):
            out[key] = pg.get(key)
    out["demo_area"] = str(did("area:huangpu"))
    return out
