"""Where a surge hold's time goes: one hold of polling phones on PostGIS with the evidence.

    LIANDONG_TEST_PG_URL=... python -m tests.bench.surge_probe    # PHONES=1000 HOLD_S=120

The surge benchmark's phones (tests/bench/surge_load.py) against `liandong serve --workers 2`
on a scratch database, one hold of `PHONES` (their first syncs first, then `WARM_S`, then
`HOLD_S` measured) or the holds of `STAGES` one after the other (see there), while it samples,
into `OUT` (default var/bench/surge-probe/):

- `activity.jsonl`: `pg_stat_activity` of the database (state, wait event, transaction age,
  query) and `pg_locks` waits with their blockers, every 200 ms;
- `bgwriter.jsonl`: `pg_stat_bgwriter` every 5 s (checkpoints);
- `sched.jsonl`: each worker's CPU and run-queue wait (Linux schedstat) every second;
- `lag.jsonl`: `GET /healthz` on 8 kept-alive connections every 100 ms (the probe skips
  admission and the database: its time is the worker's event loop and scheduling);
- `PYSPY=/path/to/py-spy`: `py-spy record` of each worker (raw stacks, `rec-PID.txt`).

It prints the hold's figures and a summary of the samples (`summary.json`). Written for the
hold that failed on 29 November (docs/capacity.md): PostgreSQL sat idle (no lock waits, no
I/O waits, no checkpoint) while the workers waited for a CPU as long as they ran.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import make_url

from tests.bench import bench_surge as b
from tests.bench.surge_fixture import populate

PHONES = int(os.environ.get("PHONES", "1000"))
HOLD_S = float(os.environ.get("HOLD_S", "120"))
STAGES = [
    (int(users), float(hold), float(first[0]) if first else 600.0)
    for users, hold, *first in (
        part.split(":") for part in os.environ.get("STAGES", f"{PHONES}:{HOLD_S}").split(",")
    )
]
"""Holds one after the other on the same server and database, `users:seconds` each, or
`users:seconds:first_sync_max_s` (e.g. `STAGES=5000:300,4000:300`, the benchmark's step-down;
`STAGES=4000:300,8000:60:60`, its overload after a hold); PHONES and HOLD_S make one. `KEEP=1`
keeps the scratch database (its URL is printed; drop it by hand). `FIXTURE=27000` makes that
many phones' users and sessions (the benchmark's fixture is sized for all its stages)."""
WARM_S = float(os.environ.get("WARM_S", "20"))
OUT = Path(os.environ.get("OUT", "var/bench/surge-probe"))
PYSPY = os.environ.get("PYSPY", "")

ACTIVITY = """SELECT pid, state, wait_event_type, wait_event,
 extract(epoch FROM now() - xact_start) * 1000, left(regexp_replace(query, '\\s+', ' ', 'g'), 160),
 backend_type FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"""
LOCKS = """SELECT l.pid, l.locktype, l.mode, pg_blocking_pids(l.pid),
 left(regexp_replace(a.query, '\\s+', ' ', 'g'), 120)
 FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted"""
BGWRITER = "SELECT row_to_json(b)::text FROM pg_stat_bgwriter b"
TABLES = """SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd,
 autovacuum_count, pg_total_relation_size(relid) FROM pg_stat_user_tables
 ORDER BY n_dead_tup DESC LIMIT 8"""


def sample_database(url: str, stop: threading.Event) -> None:
    """pg_stat_activity and pg_locks every 200 ms, pg_stat_bgwriter every 5 s."""
    import asyncpg  # type: ignore[import-untyped]

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    database = make_url(url).database

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        with (OUT / "activity.jsonl").open("w") as act, (OUT / "bgwriter.jsonl").open("w") as bg:
            n = 0
            while not stop.is_set():
                t = time.time()
                rows = [list(r) for r in await conn.fetch(ACTIVITY, database)]
                locks = [[*r[:3], list(r[3] or []), r[4]] for r in await conn.fetch(LOCKS)]
                act.write(json.dumps({"t": t, "rows": rows, "locks": locks}, default=str) + "\n")
                if n % 25 == 0:
                    bgw = json.loads(await conn.fetchval(BGWRITER))
                    tables = [list(r) for r in await conn.fetch(TABLES)]
                    bg.write(json.dumps({"t": t, "bgw": bgw, "tables": tables}) + "\n")
                n += 1
                await asyncio.sleep(max(0.0, 0.2 - (time.time() - t)))
        await conn.close()

    asyncio.run(run())


def sample_workers(master: psutil.Process, stop: threading.Event) -> None:
    """Each worker's CPU and run-queue wait (nanoseconds, schedstat) every second."""
    with (OUT / "sched.jsonl").open("w") as fh:
        while not stop.is_set():
            row: dict[str, Any] = {"t": time.time(), "load": os.getloadavg()}
            for w in b._workers(master):
                try:
                    cpu, wait, _ = Path(f"/proc/{w.pid}/schedstat").read_text().split()
                except (OSError, ValueError):
                    continue
                row[str(w.pid)] = [int(cpu), int(wait)]
            fh.write(json.dumps(row) + "\n")
            stop.wait(1.0)


def sample_loop_lag(base: str, master: psutil.Process, stop: threading.Event) -> None:
    """`GET /healthz` on 8 kept-alive connections every 100 ms, each noted with its worker."""
    host, port = base.removeprefix("http://").split(":")
    conns = []
    for _ in range(8):
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("GET", "/healthz")
        c.getresponse().read()
        conns.append(c)
    owner: dict[int, int] = {}
    for w in b._workers(master):
        for sc in w.net_connections(kind="tcp"):
            if sc.laddr and sc.laddr.port == int(port) and sc.raddr:
                owner[sc.raddr.port] = w.pid
    workers = [owner.get(c.sock.getsockname()[1]) if c.sock else None for c in conns]
    with (OUT / "lag.jsonl").open("w") as fh:
        while not stop.is_set():
            t = time.time()
            for worker, c in zip(workers, conns, strict=True):
                started = time.perf_counter()
                c.request("GET", "/healthz")
                c.getresponse().read()
                ms = round((time.perf_counter() - started) * 1000, 2)
                fh.write(json.dumps([t, worker, ms]) + "\n")
            time.sleep(max(0.0, 0.1 - (time.time() - t)))


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def summarise(t0: float, t1: float) -> dict[str, Any]:
    """What the samples say about the measured hold (t0..t1)."""
    samples = 0
    states: collections.Counter[str] = collections.Counter()
    waits: collections.Counter[str] = collections.Counter()
    lock_waits: collections.Counter[str] = collections.Counter()
    for line in (OUT / "activity.jsonl").open():
        d = json.loads(line)
        if not t0 <= d["t"] <= t1:
            continue
        samples += 1
        for _pid, state, wtype, wevent, _age, _q, btype in d["rows"]:
            if btype == "client backend":
                states[str(state)] += 1
                if state == "active" and wtype:
                    waits[f"{wtype}:{wevent}"] += 1
        for _pid, locktype, mode, _blockers, query in d["locks"]:
            lock_waits[f"{locktype} {mode}: {query[:80]}"] += 1
    per = max(1, samples)
    sched = [json.loads(x) for x in (OUT / "sched.jsonl").open()]
    sched = [s for s in sched if t0 <= s["t"] <= t1]
    workers: dict[str, Any] = {}
    if len(sched) >= 2:
        first, last = sched[0], sched[-1]
        wall = last["t"] - first["t"]
        for pid in (k for k in last if k not in ("t", "load") and k in first):
            workers[pid] = {
                "cpu_cores": round((last[pid][0] - first[pid][0]) / 1e9 / wall, 2),
                "runqueue_wait_s_per_s": round((last[pid][1] - first[pid][1]) / 1e9 / wall, 2),
            }
    lag = [ms for t, _w, ms in (json.loads(x) for x in (OUT / "lag.jsonl").open()) if t0 <= t <= t1]
    bgw = [json.loads(x) for x in (OUT / "bgwriter.jsonl").open()]
    before = [x["bgw"] for x in bgw if x["t"] <= t0]
    end = next((x for x in bgw if x["t"] >= t1), bgw[-1] if bgw else {})
    after = [end["bgw"]] if end else []
    checkpoints = (
        {
            k: after[0][k] - before[-1][k]
            for k in ("checkpoints_timed", "checkpoints_req", "buffers_checkpoint")
        }
        if before and after
        else {}
    )
    return {
        "samples": samples,
        "dead_tuples_at_end": {r[0]: r[2] for r in end.get("tables", [])},
        "client_backends_per_sample": {k: round(v / per, 2) for k, v in states.items()},
        "active_wait_events_per_sample": {k: round(v / per, 3) for k, v in waits.most_common(8)},
        "lock_waits_per_sample": {k: round(v / per, 3) for k, v in lock_waits.most_common(8)},
        "checkpoints_during_hold": checkpoints,
        "workers": workers,
        "healthz_ms": {q: _pct(lag, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
    }


def main() -> None:
    from server.migrate import upgrade
    from tests.conftest import PG_URL, drop_scratch_databases, scratch_postgres, seed_demo

    if not PG_URL:
        raise SystemExit("LIANDONG_TEST_PG_URL is unset")
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="surge-probe-"))
    photo = work / "photo.jpg"
    b._photo(photo)
    url = scratch_postgres(PG_URL, "liandong_surge_probe")
    upgrade(url)
    seed_demo(url)
    phones = int(os.environ.get("FIXTURE", "0")) or max(u for u, _, _ in STAGES)
    populate(url, b.SECRET, phones, b.UNITS, work / "sessions.jsonl")
    try:
        with (
            b._server(url, work / "var", 2) as (base, master),
            b.RssSampler(master, postgres=b.postmaster(url)) as rss,
        ):
            stop = threading.Event()
            threads = [
                threading.Thread(target=sample_database, args=(url, stop), daemon=True),
                threading.Thread(target=sample_workers, args=(master, stop), daemon=True),
                threading.Thread(target=sample_loop_lag, args=(base, master, stop), daemon=True),
            ]
            for t in threads:
                t.start()
            record = [PYSPY, "record", "--nonblocking", "-r", "50", "-f", "raw"]
            spies = [
                subprocess.Popen(
                    [*record, "-o", str(OUT / f"rec-{w.pid}.txt"), "--pid", str(w.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for w in (b._workers(master) if PYSPY else [])
            ]
            load_start = os.getloadavg()
            holds = [
                {
                    "kind": "hold",
                    "name": f"hold{i}",
                    "users": u,
                    "warm_s": WARM_S,
                    "hold_s": h,
                    "first_sync_max_s": f,
                }
                for i, (u, h, f) in enumerate(STAGES)
            ]
            plan = b._plan(base, work / "sessions.jsonl", photo, holds, dispatcher_token="")
            recs = b._load(plan, work)
            stop.set()
            for spy in spies:
                spy.send_signal(2)
                spy.wait()
            for t in threads:
                t.join()
            for rec in recs:
                rec["cpu"] = b._cpu_per_request(rss, rec, "postgis")
                rec["event_loop"] = os.environ.get("LIANDONG_EVENT_LOOP", "uvloop")
                rec["summary"] = summarise(rec["t_start"], rec["t_end"])
            recs[0]["load_average_start"], recs[-1]["load_average_end"] = (
                load_start,
                os.getloadavg(),
            )
    finally:
        if os.environ.get("KEEP"):
            print(f"kept: {url}", flush=True)  # for a look at the database after the surge
        else:
            drop_scratch_databases()
    (OUT / "record.json").write_text(json.dumps(recs, indent=1))
    for rec in recs:
        print(rec["stage"], rec["users"])
        print(json.dumps({k: [v["n"], v["p50_ms"], v["p99_ms"]] for k, v in rec["stats"].items()}))
        print(json.dumps({k: rec[k] for k in ("served_p99_ms", "shed", "failures", "cpu")}))
        print(json.dumps(rec["summary"], indent=1))


if __name__ == "__main__":
    main()
