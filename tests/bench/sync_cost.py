"""What one idle pull and one hazard push cost in-process: SQL statements and milliseconds.

The two requests the surge benchmark's 5-minute hold pays for most (docs/capacity.md): a
responder's pull that finds nothing new, and a sync push of one hazard report, exactly as
`tests/bench/surge_load.py` sends them, against the real app (`TestClient`, no network) on the
demo data plus the surge fixture's units and responders. Statements are counted with an
engine `before_cursor_execute` listener (SAVEPOINTs and BEGIN/COMMIT included, as the database
sees them). Not a test and not part of `make bench`; a quick look before and after a change:

    .venv/bin/python -m tests.bench.sync_cost            # SpatiaLite, and PostGIS when
    LIANDONG_TEST_PG_URL=... .venv/bin/python -m tests.bench.sync_cost   # the URL is set

`-v` prints the statements of one request of each kind. `*_ms` is the whole request through
the in-process client; `*_database_ms` the part of it between each statement's start and its
result (driver and database); the rest is Python: the app, the engine, the domain action.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from schemas.sync import (
    SCHEMA_VERSION,
    Mutation,
    Op,
    PullRequest,
    PullResponse,
    PushRequest,
    msgpack_encoder,
    pull_reply_msgpack,
)
from server.app import create_app
from tests.integration.sync_helpers import statements

MSGPACK = "application/msgpack"
ROUNDS = int(os.environ.get("LIANDONG_SYNC_COST_ROUNDS", "40"))


@contextmanager
def database_ms() -> Iterator[list[float]]:
    """Milliseconds spent between each statement's start and its result (driver and
    database, round trip included), summed into the one-item list."""
    total = [0.0]
    started: list[float] = []

    def before(*_a: Any) -> None:
        started.append(time.perf_counter())

    def after(*_a: Any) -> None:
        if started:
            total[0] += (time.perf_counter() - started.pop()) * 1000

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield total
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)


def _hazard_push(device: str, seq: int) -> bytes:
    fields = {
        "category": "flood",
        "severity": "high",
        "description": "Water over the road, 40 cm",
        "location": {"type": "Point", "coordinates": [121.48, 31.23]},
        "accuracy_m": 9.0,
    }
    push = PushRequest(
        schema_version=SCHEMA_VERSION,
        device_id=device,
        mutations=[
            Mutation(
                seq=seq,
                entity="hazard",
                id=uuid.uuid4(),
                hlc=int(time.time() * 1000) << 16,
                op=Op.CREATE,
                fields=fields,
            )
        ],
    )
    return msgpack_encoder.encode(push)


def _pull(client: TestClient[Any], headers: dict[str, str], cursors: dict[str, int]) -> bool:
    """One pull page; True when more is waiting."""
    req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=500)
    r = client.post("/api/v1/sync/pull", content=msgpack_encoder.encode(req), headers=headers)
    assert r.status_code == 200, r.text
    reply = pull_reply_msgpack.decode(r.content)
    assert isinstance(reply, PullResponse)
    cursors.update({p.scope: p.cursor for p in reply.scopes})
    return reply.has_more


def measure(url: str, work: Path, verbose: bool = False) -> dict[str, Any]:
    """Statements and ms per idle pull and per hazard push of one surge responder."""
    from tests.bench.surge_fixture import populate
    from tests.conftest import make_settings

    secret = "sync-cost-secret-key-not-for-production-0123456789"
    populate(url, secret, 10, 5, work / "sessions.jsonl")
    phone = json.loads((work / "sessions.jsonl").read_text().splitlines()[0])
    settings = make_settings(url, work, secret_key=secret)
    headers = {
        "Authorization": f"Bearer {phone['access_token']}",
        "Content-Type": MSGPACK,
        "Accept": MSGPACK,
    }
    out: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        cursors: dict[str, int] = {}
        while _pull(client, headers, cursors):
            pass
        out["scopes"] = len(cursors)

        def timed(call: Any) -> tuple[list[int], list[float], list[float], list[str]]:
            counts: list[int] = []
            ms: list[float] = []
            db: list[float] = []
            first: list[str] = []
            for i in range(ROUNDS):
                with statements() as seen, database_ms() as in_db:
                    t0 = time.perf_counter()
                    call(i)
                    ms.append((time.perf_counter() - t0) * 1000)
                counts.append(len(seen))
                db.append(in_db[0])
                if not first:
                    first = list(seen)
            return counts, ms, db, first

        def idle(_i: int) -> None:
            assert not _pull(client, headers, cursors)

        def hazard(i: int) -> None:
            body = _hazard_push(phone["device_id"], i + 1)
            r = client.post("/api/v1/sync/push", content=body, headers=headers)
            assert r.status_code == 200, r.text

        for name, call in (("idle_pull", idle), ("hazard_push", hazard)):
            call_counts, ms, db, first = timed(call)
            out[f"{name}_statements"] = statistics.median(call_counts)
            out[f"{name}_ms_median"] = round(statistics.median(ms), 2)
            out[f"{name}_database_ms_median"] = round(statistics.median(db), 2)
            out[f"{name}_ms_p90"] = round(statistics.quantiles(ms, n=10)[-1], 2)
            if verbose:
                print(f"-- {name}: {len(first)} statements")
                for s in first:
                    print("   ", s[:300])
            # The pushes made changes: catch up so the next idle pull is idle again.
            while _pull(client, headers, cursors):
                pass
    return out


def main(argv: list[str]) -> int:
    from server.migrate import upgrade
    from tests.conftest import PG_URL, drop_scratch_databases, scratch_postgres, seed_demo

    verbose = "-v" in argv
    report: dict[str, Any] = {"rounds": ROUNDS, "loadavg_start": os.getloadavg()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lite = Path(tmp) / "lite"
            lite.mkdir()
            url = f"sqlite+aiosqlite:///{lite / 'liandong.db'}"
            upgrade(url)
            seed_demo(url)
            report["spatialite"] = measure(url, lite, verbose)
            if PG_URL:
                pg = Path(tmp) / "pg"
                pg.mkdir()
                url = scratch_postgres(PG_URL, "liandong_sync_cost")
                upgrade(url)
                seed_demo(url)
                report["postgis"] = measure(url, pg, verbose)
    finally:
        drop_scratch_databases()
    report["loadavg_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
