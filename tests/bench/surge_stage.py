"""One stage of the surge benchmark, alone, for A/B experiments (not part of `make bench`).

    python -m tests.bench.surge_stage overload   # USERS polling phones (4,000) from a cold
                                                 # start on `liandong serve --workers 2`,
                                                 # PostGIS (LIANDONG_TEST_PG_URL); one minute
                                                 # measured after every first sync (or after
                                                 # FIRST_SYNC_MAX seconds)
    python -m tests.bench.surge_stage sqlite     # the SQLite part: the search from START
                                                 # (1,000) phones to MAX (2,000), then a
                                                 # 2-minute hold

It prints each stage's record (served p99, shed, per kind p50/p99/n) and the server's CPU. For
an A/B, run it once per arm from trees that differ only in the change (`PYTHONPATH=<tree>`
makes the served processes import that tree); run under the machine lock with nothing else
running. The figures of docs/capacity.md, "Where the overload waited", come from it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench import bench_surge as bench
from tests.bench.surge_fixture import populate


def _report(records: list[dict[str, Any]]) -> None:
    for r in records:
        kinds = {k: (v["p50_ms"], v["p99_ms"], v["n"]) for k, v in r["stats"].items()}
        head = {k: r[k] for k in ("stage", "served_p99_ms", "failures", "shed", "first_sync_s")}
        print(json.dumps(head), json.dumps(kinds), flush=True)


def overload(work: Path, photo: Path, users: int) -> None:
    """`users` polling phones from a cold start against two workers on PostGIS."""
    from server.migrate import upgrade
    from tests.conftest import PG_URL, scratch_postgres, seed_demo

    if not PG_URL:
        raise SystemExit("set LIANDONG_TEST_PG_URL (infra/pg_test_env.sh)")
    url = scratch_postgres(PG_URL, "liandong_bench_stage")
    upgrade(url)
    seed_demo(url)
    populate(url, bench.SECRET, users, bench.UNITS, work / "s.jsonl")
    with bench._sampled_server(url, work / "var") as (base, _master, rss):
        stage = {
            "kind": "hold",
            "name": "over",
            "users": users,
            "warm_s": 15,
            "hold_s": 60,
            "first_sync_max_s": float(os.environ.get("FIRST_SYNC_MAX", "600")),
        }
        plan = bench._plan(
            base, work / "s.jsonl", photo, [stage], dispatcher_token=bench._dispatcher_token(base)
        )
        records = bench._load(plan, work)
        _report(records)
        for r in records:
            server_s, postgres_s = rss.cpu_between(r["t_start"], r["t_end"])
            print(f"cpu seconds: server {server_s:.1f}, PostgreSQL {postgres_s:.1f}")


def sqlite(work: Path, photo: Path) -> None:
    """The benchmark's SQLite part with a 2-minute hold."""
    from server.migrate import upgrade
    from tests.conftest import seed_demo

    url = f"sqlite+aiosqlite:///{work / 'surge.db'}"
    upgrade(url)
    seed_demo(url)
    start, top = int(os.environ.get("START", "1000")), int(os.environ.get("MAX", "2000"))
    populate(url, bench.SECRET, top + 1000, bench.UNITS, work / "s.jsonl")
    search = {"kind": "search", "start": start, "step": 1000, "max": top, "warm_s": 15}
    hold = {"kind": "hold", "name": "hold", "warm_s": 15, "hold_s": 120, "fallback": 500}
    with bench._server(url, work / "var", 1) as (base, master), bench.RssSampler(master) as rss:
        plan = bench._plan(
            base, work / "s.jsonl", photo, [{**search, "hold_s": 30, "first_sync_max_s": 60}, hold]
        )
        records = bench._load(plan, work)
        _report(records)
        held = next((r for r in records if r["stage"] == "hold-0"), None)
        if held:
            print(bench._cpu_per_request(rss, held, "sqlite"))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("overload", "sqlite"):
        print(__doc__)
        return 2
    work = Path(tempfile.mkdtemp(prefix="surge-stage-"))
    photo = work / "photo.jpg"
    bench._photo(photo)
    if argv[1] == "overload":
        overload(work, photo, int(os.environ.get("USERS", "4000")))
    else:
        sqlite(work, photo)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
