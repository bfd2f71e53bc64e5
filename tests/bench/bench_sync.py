"""Sync engine benchmark: wire bytes per changed field, initial pull, apply rates.

Engine level: the in-memory server (`sync.memory.MemoryStorage`) is called in-process through
the real msgpack encoding, and the device side is the real SQLite `ClientStore` on disk. HTTP
headers are not produced here, so a stated estimate is added per request/answer exchange
(`http_header_bytes_per_exchange`); the figures that need the Litestar server and PostGIS
(`server_apply_changes_per_s`) are measured later by the server's benchmark: this one reports
the in-memory figure under `server_apply_changes_per_s_memory`.

Workload (issue 3): hazards of about 190 bytes of JSON each (title, severity, status, lat/lon,
reporter, timestamps).

Through the real HTTP server (`_http_figures`, last section): the Litestar app under uvicorn
on loopback, SQLite, `sync.client` + `mobile.core.transport.HttpTransport` (msgpack, gzip),
socket bytes counted by the transport, headers included. Those figures own the unsuffixed keys
`initial_pull_10k_*`, `initial_pull_100k_*`, `push_bytes_per_field`, `pull_bytes_per_field`;
the in-process ones above are kept with an `_inprocess` suffix.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from schemas.sync import (
    SCHEMA_VERSION,
    Mutation,
    Op,
    PullReply,
    PullRequest,
    PullResponse,
    PushReply,
    PushRequest,
    PushResponse,
    msgpack_encoder,
    pull_reply_msgpack,
    pull_request_msgpack,
    push_reply_msgpack,
    push_request_msgpack,
)
from sync.client import SyncClient
from sync.hlc import HLC, SystemClock
from sync.memory import MemoryStorage
from sync.server import SyncServer
from sync.store import ClientStore

# HTTP/1.1 POST with Host, Authorization (a ~300-byte bearer JWT), Content-Type,
# Content-Length, Accept-Encoding, User-Agent; the answer with status line, Content-Type,
# Content-Length, Date, Server. Measured on comparable Litestar exchanges: 420 + 140 bytes.
REQUEST_HEADER_BYTES = 420
RESPONSE_HEADER_BYTES = 140
HEADER_BYTES = REQUEST_HEADER_BYTES + RESPONSE_HEADER_BYTES

SCOPE = "all"


def hazard(i: int) -> dict[str, Any]:
    """One hazard of the benchmark workload (~190 bytes as JSON)."""
    return {
        "description": f"Exit blocked #{i}",
        "severity": "high",
        "status": "reported",
        "location": {"type": "Point", "coordinates": [116.30 + i * 1e-5, 39.90 + i * 1e-5]},
        "reporter_id": str(uuid.UUID(int=i + 1)),
        "created_at": "2024-05-01T08:00:00Z",
    }


class CountingTransport:
    """In-process transport through msgpack; counts bytes (body + stated headers) and requests."""

    def __init__(self, server: SyncServer, *, gzip_bodies: bool = False) -> None:
        self.server = server
        self.gzip_bodies = gzip_bodies
        self.body_bytes = 0
        self.gzip_bytes = 0
        self.requests = 0

    def _count(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.gzip_bodies:
            self.gzip_bytes += len(gzip.compress(body, 6))

    @property
    def wire_bytes(self) -> int:
        return self.body_bytes + self.requests * HEADER_BYTES

    async def push(self, req: PushRequest) -> PushReply:
        body = msgpack_encoder.encode(req)
        self._count(body)
        self.requests += 1
        reply = await self.server.push("bench", push_request_msgpack.decode(body))
        out = msgpack_encoder.encode(reply)
        self._count(out)
        return push_reply_msgpack.decode(out)

    async def pull(self, req: PullRequest) -> PullReply:
        body = msgpack_encoder.encode(req)
        self._count(body)
        self.requests += 1
        reply = await self.server.pull("bench", pull_request_msgpack.decode(body))
        out = msgpack_encoder.encode(reply)
        self._count(out)
        return pull_reply_msgpack.decode(out)


async def seed(n: int) -> tuple[SyncServer, list[uuid.UUID]]:
    """A server holding `n` hazards written by the server itself."""
    server = SyncServer(MemoryStorage(), hlc=HLC(SystemClock()))
    ids = [uuid.uuid4() for _ in range(n)]
    async with server.storage.transaction() as tx:
        for i, rid in enumerate(ids):
            await server.server_write(tx, "hazard", rid, hazard(i), op=Op.CREATE)
    return server, ids


async def initial_pull(server: SyncServer, db: Path, limit: int = 5000) -> dict[str, float]:
    store = ClientStore(db)
    transport = CountingTransport(server, gzip_bodies=True)
    client = SyncClient(store, transport, pull_limit=limit)
    t0 = time.perf_counter()
    await client.pull()
    seconds = time.perf_counter() - t0
    held = len(store.all("hazard"))
    store.close()
    return {
        "seconds": seconds,
        "bytes": transport.wire_bytes,
        "bytes_gzip": transport.gzip_bytes + transport.requests * HEADER_BYTES,
        "requests": transport.requests,
        "records": held,
    }


def naive_json_pull_bytes(server_records: list[dict[str, Any]], ids: list[uuid.UUID]) -> int:
    """Baseline: one JSON document per record with long keys and metadata, 100 per request."""
    total = 0
    per_request = 100
    for start in range(0, len(ids), per_request):
        docs = [
            {
                "entity": "hazard",
                "id": str(rid),
                "version": start + k + 1,
                "deleted": False,
                "doc": server_records[start + k],
            }
            for k, rid in enumerate(ids[start : start + per_request])
        ]
        total += len(json.dumps({"changes": docs, "last_seq": start + per_request}))
        total += HEADER_BYTES + 60  # + the request body with the cursor
    return total


async def steady_state(n_mut: int, fields_per_mut: int) -> dict[str, float]:
    """Two devices hold 1,000 hazards; A edits `n_mut` of them and pushes; B pulls."""
    server, ids = await seed(1000)
    with tempfile.TemporaryDirectory() as tmp:
        stores = [ClientStore(Path(tmp) / f"{d}.db") for d in ("a", "b")]
        transports = [CountingTransport(server) for _ in stores]
        clients = [SyncClient(s, t) for s, t in zip(stores, transports, strict=True)]
        for c in clients:
            await c.sync_once()
        a, b = clients
        ta, tb = transports
        # First push after the initial pull: the very next exchange of device A.
        ta.body_bytes, ta.requests = 0, 0
        statuses = ["verified", "rectification_assigned"]
        for k in range(n_mut):
            fields: dict[str, Any] = {"status": "verified", "description": f"Checked {k}"}
            if fields_per_mut == 1:
                fields = {"status": statuses[0]}
            a.store.write("hazard", ids[k], fields)
        await a.push()
        push_bytes, push_requests = ta.body_bytes, ta.requests
        await a.pull()
        tb.body_bytes, tb.requests = 0, 0
        await b.pull()
        pull_bytes, pull_requests = tb.body_bytes, tb.requests
        for s in stores:
            s.close()
    n_fields = n_mut * fields_per_mut
    return {
        "push_bytes_per_field": (push_bytes + push_requests * HEADER_BYTES) / n_fields,
        "pull_bytes_per_field": (pull_bytes + pull_requests * HEADER_BYTES) / n_fields,
        "push_body_bytes_per_field": push_bytes / n_fields,
        "pull_body_bytes_per_field": pull_bytes / n_fields,
    }


async def client_apply_rate(server: SyncServer, db: Path) -> dict[str, float]:
    """Apply already-decoded pull answers into the SQLite store: field changes per second."""
    responses: list[PullResponse] = []
    cursors: dict[str, int] = {}
    while True:
        resp = await server.pull(
            "bench", PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=2000)
        )
        assert isinstance(resp, PullResponse)
        responses.append(resp)
        for page in resp.scopes:
            cursors[page.scope] = page.cursor
        if not resp.has_more:
            break
    fields = sum(len(c.fields) for r in responses for p in r.scopes for c in p.changes)
    records = sum(len(p.changes) for r in responses for p in r.scopes)
    store = ClientStore(db)
    t0 = time.perf_counter()
    for resp in responses:
        store.apply_pull(resp)
    seconds = time.perf_counter() - t0
    store.close()
    return {"changes_per_s": fields / seconds, "records_per_s": records / seconds}


async def server_apply_rate(server: SyncServer, ids: list[uuid.UUID]) -> float:
    """Field changes per second through push (dedup, merge, conflict check, change log)."""
    hlc = HLC(SystemClock())
    muts = [
        Mutation(
            seq=k + 1,
            entity="hazard",
            id=rid,
            hlc=hlc.now(),
            op=Op.UPDATE,
            base=0,
            fields={"description": f"t{k}", "severity": "low"},
        )
        for k, rid in enumerate(ids)
    ]
    t0 = time.perf_counter()
    for start in range(0, len(muts), 500):
        await server.push(
            "bench",
            PushRequest(
                schema_version=SCHEMA_VERSION, device_id="d1", mutations=muts[start : start + 500]
            ),
        )
    return 2 * len(muts) / (time.perf_counter() - t0)


async def main() -> dict[str, Any]:
    out: dict[str, Any] = {
        "http_header_bytes_per_exchange": HEADER_BYTES,
        "http_header_note": "estimate added per request/answer exchange; bodies are measured",
        "encoding": "msgpack (uncompressed unless the key says gzip)",
    }
    steady = await steady_state(20, 2)
    out["push_bytes_per_field_inprocess"] = round(steady["push_bytes_per_field"], 1)
    out["pull_bytes_per_field_inprocess"] = round(steady["pull_bytes_per_field"], 1)
    out["push_body_bytes_per_field"] = round(steady["push_body_bytes_per_field"], 1)
    out["pull_body_bytes_per_field"] = round(steady["pull_body_bytes_per_field"], 1)
    out["steady_state_workload"] = "20 hazards x 2 fields (status, title), one push, one pull"
    single = await steady_state(1, 1)
    out["single_field_sync_push_bytes"] = round(single["push_bytes_per_field"], 1)
    out["single_field_sync_pull_bytes"] = round(single["pull_bytes_per_field"], 1)
    first = await steady_state(5, 2)
    out["first_push_bytes_per_field_inprocess"] = round(first["push_bytes_per_field"], 1)
    out["first_push_workload_inprocess"] = (
        "engine, in process: first push after a 1,000-record initial pull: 5 edits x 2 fields"
    )

    server, ids = await seed(10_000)
    sample = [hazard(i) for i in range(200)]
    out["record_json_bytes_avg"] = round(sum(len(json.dumps(h)) for h in sample) / 200, 1)
    with tempfile.TemporaryDirectory() as tmp:
        pull10 = await initial_pull(server, Path(tmp) / "p10.db")
        assert pull10["records"] == 10_000
        out["initial_pull_10k_seconds_inprocess"] = round(pull10["seconds"], 3)
        out["initial_pull_10k_bytes_inprocess"] = int(pull10["bytes"])
        out["initial_pull_10k_bytes_gzip_inprocess"] = int(pull10["bytes_gzip"])
        out["initial_pull_10k_requests_inprocess"] = int(pull10["requests"])
        baseline = naive_json_pull_bytes([hazard(i) for i in range(10_000)], ids)
        out["baseline_naive_json_pull_10k_bytes"] = baseline
        out["initial_pull_10k_bytes_ratio_to_baseline"] = round(pull10["bytes"] / baseline, 3)
        rates = await client_apply_rate(server, Path(tmp) / "apply.db")
        out["client_apply_changes_per_s"] = int(rates["changes_per_s"])
        out["client_apply_records_per_s"] = int(rates["records_per_s"])
        out["server_apply_changes_per_s_memory"] = int(await server_apply_rate(server, ids))
        out["server_apply_changes_per_s"] = None  # needs the server on PostGIS (server bench)

        big, _ = await seed(100_000)
        pull100 = await initial_pull(big, Path(tmp) / "p100.db")
        assert pull100["records"] == 100_000
        out["initial_pull_100k_seconds_inprocess"] = round(pull100["seconds"], 3)
        out["initial_pull_100k_bytes_inprocess"] = int(pull100["bytes"])
        out["initial_pull_100k_requests_inprocess"] = int(pull100["requests"])
    out["targets"] = {
        "push_bytes_per_field": "<= 120",
        "pull_bytes_per_field": "<= 120",
        "first_push_bytes_per_field": "<= 200",
        "initial_pull_10k_seconds": "<= 1.0",
        "initial_pull_10k_bytes": "<= 2,500,000",
        "initial_pull_10k_requests": "<= 10",
        "initial_pull_100k_seconds": "<= 10",
        "client_apply_changes_per_s": ">= 20,000",
        "server_apply_changes_per_s": ">= 5,000 (PostGIS)",
    }
    return out


def engine_figures() -> dict[str, Any]:
    """The engine's figures (in-memory server, in process)."""
    return asyncio.run(main())


async def sql_server_apply_rate(url: str, n: int = 5000) -> float:
    """Field changes per second through push on the real SQL storage (server/domain/sync):
    dedup, merge, conflict check, change log, memberships, checksums; 500 mutations per
    transaction, 2 fields each. The policy is open: this measures the engine on the database,
    not the domain write-through (measured by the API tests)."""
    from server.db import make_engine, make_sessionmaker
    from server.domain.sync.storage import SqlStorage, drive
    from sync.server import OpenPolicy

    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    hlc = HLC(SystemClock())
    ids = [uuid.uuid4() for _ in range(n)]
    try:
        async with sm() as session, session.begin():

            def seed_all(s: Any) -> None:
                server = SyncServer(SqlStorage(s), OpenPolicy(), hlc=hlc)
                for start in range(0, n, 500):
                    muts = [
                        Mutation(
                            seq=start + k + 1,
                            entity="hazard",
                            id=rid,
                            hlc=hlc.now(),
                            op=Op.CREATE,
                            fields=hazard(start + k),
                        )
                        for k, rid in enumerate(ids[start : start + 500])
                    ]
                    drive(
                        server.push(
                            "bench",
                            PushRequest(
                                schema_version=SCHEMA_VERSION, device_id="seed", mutations=muts
                            ),
                        )
                    )

            await session.run_sync(seed_all)
        muts = [
            Mutation(
                seq=k + 1,
                entity="hazard",
                id=rid,
                hlc=hlc.now(),
                fields={"description": f"t{k}", "severity": "low"},
            )
            for k, rid in enumerate(ids)
        ]
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            async with sm() as session, session.begin():
                batch = muts[start : start + 500]
                await session.run_sync(
                    lambda s, b=batch: drive(
                        SyncServer(SqlStorage(s), OpenPolicy(), hlc=hlc).push(
                            "bench",
                            PushRequest(schema_version=SCHEMA_VERSION, device_id="d1", mutations=b),
                        )
                    )
                )
        return 2 * n / (time.perf_counter() - t0)
    finally:
        await engine.dispose()


def _server_figures(out: dict[str, Any]) -> None:
    """`server_apply_changes_per_s` on PostGIS (scratch database) and on SpatiaLite."""
    import os

    from server.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        out["server_apply_changes_per_s_spatialite"] = int(asyncio.run(sql_server_apply_rate(url)))
    pg = os.environ.get("LIANDONG_TEST_PG_URL")
    if pg:
        from tests.conftest import scratch_postgres

        url = scratch_postgres(pg, "liandong_bench_sync")
        upgrade(url)
        out["server_apply_changes_per_s"] = int(asyncio.run(sql_server_apply_rate(url)))
        out["server_apply_note"] = "PostGIS scratch database, 500 mutations x 2 fields per push"
    else:
        out["server_apply_note"] = "LIANDONG_TEST_PG_URL unset: PostGIS figure not measured"


# -- Through the real HTTP server ----------------------------------------------------------
# The Litestar app served by uvicorn on loopback (tests.servers), on the embedded SQLite
# default, with the demo data set; the phone is `sync.client` + `HttpTransport` (msgpack, gzip)
# into its SQLite store. Bytes are HttpTransport's counters: request line, headers and body as
# sent, status line, headers and (compressed) body as received.

HTTP_PULL_LIMIT = 5000  # the server's `max_pull_limit`
SEED_BATCH = 2000  # mutations per seeding push
SEED_TX = 20_000  # records per seeding transaction


def http_hazard(i: int, area_id: str) -> dict[str, Any]:
    """A workload hazard placed in a demo area, so the admin and dispatch read it."""
    return {**hazard(i), "area_id": area_id}


SERVER_OWNED = ("reporter_id", "area_id", "created_at")


def _seed_policy(session: Any, owned: dict[uuid.UUID, dict[str, Any]]) -> Any:
    """The server's scopes (`ServerPolicy.record_scopes`) without its write rules; the
    server-owned values (reporter, area, creation time) come from `owned` as the server's own
    stamps. Seeding writes sync records only, like rows already in the change log."""
    from server.domain.sync.policy import ServerPolicy

    class SeedPolicy(ServerPolicy):
        async def authorize(self, tx: Any, ctx: Any) -> None:
            return None

        async def server_fields(self, tx: Any, ctx: Any) -> dict[str, Any]:
            return owned.pop(ctx.record_id, {})

        async def on_applied(self, tx: Any, ctx: Any, record: Any, changed: set[str]) -> None:
            return None

    return SeedPolicy(session)


async def seed_sync_records(url: str, n: int, area_id: str, *, grid_id: str | None = None) -> float:
    """Enter `n` hazards into the change log on the SQL storage through `SyncServer.push` in
    batches of `SEED_BATCH` (`SEED_TX` per transaction); not part of any pull figure. Returns
    the seeding time. `grid_id` places them in a grid (its inspector's scope)."""
    from server.db import make_engine, make_sessionmaker
    from server.domain.sync.storage import SqlStorage, drive

    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    hlc = HLC(SystemClock())
    owned: dict[uuid.UUID, dict[str, Any]] = {}
    t0 = time.perf_counter()
    try:
        for lo in range(0, n, SEED_TX):
            hi = min(lo + SEED_TX, n)

            def seed_part(s: Any, lo: int = lo, hi: int = hi) -> None:
                server = SyncServer(SqlStorage(s), _seed_policy(s, owned), hlc=hlc)
                for start in range(lo, hi, SEED_BATCH):
                    muts = []
                    for i in range(start, min(start + SEED_BATCH, hi)):
                        rid, values = uuid.uuid4(), http_hazard(i, area_id)
                        owned[rid] = {k: values.pop(k) for k in SERVER_OWNED}
                        if grid_id is not None:
                            owned[rid]["grid_id"] = grid_id
                        muts.append(
                            Mutation(
                                seq=i + 1,
                                entity="hazard",
                                id=rid,
                                hlc=hlc.now(),
                                op=Op.CREATE,
                                fields=values,
                            )
                        )
                    req = PushRequest(
                        schema_version=SCHEMA_VERSION, device_id="bench-seed", mutations=muts
                    )
                    reply = drive(server.push(None, req))
                    assert isinstance(reply, PushResponse)
                    refused = [a.refusal for a in reply.acks if a.refusal is not None]
                    assert not refused, refused[:3]

            async with sm() as session, session.begin():
                await session.run_sync(seed_part)
    finally:
        await engine.dispose()
    return time.perf_counter() - t0


async def seed_domain_hazards(url: str, n: int, area_id: uuid.UUID, reporter: uuid.UUID) -> None:
    """Insert `n` hazard rows in a plain session (like the CLI seed): the server's start-up
    backfill enters them into the change log."""
    from schemas.common import Point
    from server import geo
    from server.db import make_engine, make_sessionmaker
    from server.models import Hazard

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            for i in range(n):
                session.add(
                    Hazard(
                        id=uuid.uuid4(),
                        category="fire_exit",
                        severity="high",
                        description=f"Exit blocked #{i}",
                        location=geo.point_to_db(
                            Point(coordinates=(121.475 + i * 1e-6, 31.24 + i * 1e-6))
                        ),
                        status="reported",
                        reporter_id=reporter,
                        area_id=area_id,
                    )
                )
    finally:
        await engine.dispose()


def login(base: str, username: str, device_id: str) -> str:
    """A bearer token for a demo user."""
    import httpx

    from tests.conftest import DEMO_PASSWORD

    r = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"username": username, "password": DEMO_PASSWORD, "device_id": device_id},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def _serve(url: str, tmp: Path) -> Any:
    """`serve_in_thread` for the app on `url` (no background jobs)."""
    from server.app import create_app
    from tests.conftest import make_settings
    from tests.servers import serve_in_thread

    settings = make_settings(url, tmp, background_jobs=False)
    return serve_in_thread(create_app(settings))


@contextlib.contextmanager
def _serve_process(url: str, tmp: Path) -> Iterator[str]:
    """The real `liandong serve` in its own process, as in production: the phone and the server
    must not share one interpreter lock, or the figure adds their CPU time together."""
    from tests.servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANDONG_")}
    env.update(
        {
            "LIANDONG_DATABASE_URL": url,
            "LIANDONG_VAR_DIR": str(tmp),
            "LIANDONG_PORT": str(port),
            "LIANDONG_BACKGROUND_JOBS": "0",
            "LIANDONG_LOG_LEVEL": "warning",
        }
    )
    exe = str(Path(sys.executable).parent / "liandong")
    proc = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # start-up takes far longer on a loaded machine
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("bench server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _demo_database(tmp: Path, backend: str = "sqlite") -> str:
    from tests.conftest import fresh_database, seed_demo

    url = fresh_database(backend, tmp, scratch="liandong_bench_pull")
    seed_demo(url)
    return url


async def _http_initial_pull(
    base: str, token: str, db: Path, *, fetch_ahead: bool = True
) -> dict[str, float]:
    from mobile.core.transport import HttpTransport

    store = ClientStore(db, device_id="bench-phone")
    transport = HttpTransport(base, token)
    client = SyncClient(store, transport, pull_limit=HTTP_PULL_LIMIT, fetch_ahead=fetch_ahead)
    try:
        t0 = time.perf_counter()
        await client.pull()
        seconds = time.perf_counter() - t0
        return {
            "seconds": seconds,
            "bytes": transport.bytes_sent + transport.bytes_received,
            "bytes_received": transport.bytes_received,
            "requests": transport.requests,
            "hazards": len(store.all("hazard")),
        }
    finally:
        await transport.aclose()
        store.close()


def http_initial_pull(n: int, runs: int = 3, backend: str = "sqlite") -> dict[str, float]:
    """A fresh admin phone pulls everything (`n` seeded hazards plus the demo data set) from
    the real server over loopback HTTP; only the pull is timed. `runs` fresh phones with the
    fetch-ahead client alternate with as many one-request-at-a-time baseline phones; medians."""
    from server.demo import did

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        url = _demo_database(tmp, backend)
        seed_s = asyncio.run(seed_sync_records(url, n, str(did("area:huangpu"))))
        ahead: list[dict[str, float]] = []
        baseline: list[float] = []
        with _serve_process(url, tmp) as base:
            token = login(base, "admin", "bench-phone")
            for k in range(runs):
                phone = tmp / f"phone{k}.db"
                ahead.append(asyncio.run(_http_initial_pull(base, token, phone)))
                one = tmp / f"phone{k}-baseline.db"
                seq = asyncio.run(_http_initial_pull(base, token, one, fetch_ahead=False))
                baseline.append(seq["seconds"])
    res = dict(ahead[-1])
    res["seconds"] = statistics.median(r["seconds"] for r in ahead)
    res["seconds_runs"] = [round(r["seconds"], 3) for r in ahead]  # type: ignore[assignment]
    res["baseline_seconds"] = statistics.median(baseline)
    res["seed_seconds"] = seed_s
    return res


async def _http_steady(base: str, tokens: list[str], tmp: Path, n_mut: int) -> dict[str, Any]:
    from mobile.core.transport import HttpTransport

    stores = [ClientStore(tmp / f"{d}.db", device_id=f"bench-{d}") for d in ("a", "b")]
    transports = [HttpTransport(base, t) for t in tokens]
    try:
        clients = [
            SyncClient(s, t, pull_limit=HTTP_PULL_LIMIT)
            for s, t in zip(stores, transports, strict=True)
        ]
        for c in clients:
            await c.sync_once()
        a, b = clients
        ta, tb = transports
        held = stores[0].all("hazard")
        mine = [r for r, v in held.items() if str(v.get("description", "")).startswith("Exit")]
        targets = sorted(mine, key=str)[: 2 * n_mut]
        rounds: list[dict[str, float]] = []
        # Round 1 is A's first push after its initial pull; round 2 the steady state.
        for batch in (targets[:n_mut], targets[n_mut:]):
            for rid in batch:
                # Fields a phone may change through sync (a status step would be refused:
                # hazard steps need the transitions endpoint's evidence checks).
                a.store.write("hazard", rid, {"severity": "low", "description": f"Checked {rid}"})
            ta.bytes_sent = ta.bytes_received = ta.requests = 0
            pushed = await a.push()
            push_bytes, push_requests = ta.bytes_sent + ta.bytes_received, ta.requests
            tb.bytes_sent = tb.bytes_received = tb.requests = 0
            await b.pull()
            seen = sum(
                1
                for rid in batch
                if (rec := stores[1].get("hazard", rid))
                and rec.get("description") == f"Checked {rid}"
            )
            rounds.append(
                {
                    "push_bytes": push_bytes,
                    "push_requests": push_requests,
                    "pull_bytes": tb.bytes_sent + tb.bytes_received,
                    "pull_requests": tb.requests,
                    "accepted": pushed.accepted,
                    "seen_by_b": seen,
                }
            )
    finally:
        for t in transports:
            await t.aclose()
        for s in stores:
            s.close()
    first, steady = rounds
    return {**steady, "first_push_bytes": first["push_bytes"], "first": first}


def http_steady_state(n_hazards: int = 1000, n_mut: int = 20) -> dict[str, Any]:
    """Two admin phones hold `n_hazards` hazards (domain rows, entered by the start-up
    backfill); twice, A changes `n_mut` hazards x 2 fields (severity, description) and pushes,
    B pulls: the first round is A's first push after its initial pull, the second the steady
    state."""
    from server.demo import did

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        url = _demo_database(tmp)
        asyncio.run(
            seed_domain_hazards(url, n_hazards, did("area:guizhoulu"), did("user:inspector1"))
        )
        with _serve(url, tmp) as base:
            tokens = [login(base, "admin", f"bench-{d}") for d in ("a", "b")]
            return asyncio.run(_http_steady(base, tokens, tmp, n_mut))


def _http_figures(out: dict[str, Any]) -> None:
    """The initial pull and the steady state through the real HTTP server."""
    p10 = http_initial_pull(10_000, runs=5)
    assert p10["hazards"] >= 10_000, p10
    out["initial_pull_10k_seconds"] = round(p10["seconds"], 3)
    out["initial_pull_10k_seconds_runs"] = p10["seconds_runs"]
    out["initial_pull_10k_seconds_one_request_at_a_time"] = round(p10["baseline_seconds"], 3)
    out["initial_pull_10k_speedup_vs_one_at_a_time"] = round(
        p10["baseline_seconds"] / p10["seconds"], 2
    )
    out["initial_pull_10k_bytes"] = int(p10["bytes"])
    out["initial_pull_10k_requests"] = int(p10["requests"])
    out["initial_pull_10k_hazards_held"] = int(p10["hazards"])
    out["initial_pull_10k_seed_seconds"] = round(p10["seed_seconds"], 1)
    if os.environ.get("LIANDONG_TEST_PG_URL"):
        pg = http_initial_pull(10_000, runs=3, backend="postgis")
        out["initial_pull_10k_seconds_postgis"] = round(pg["seconds"], 3)
        out["initial_pull_10k_seconds_postgis_one_request_at_a_time"] = round(
            pg["baseline_seconds"], 3
        )
    p100 = http_initial_pull(100_000, runs=1)
    assert p100["hazards"] >= 100_000, p100
    out["initial_pull_100k_seconds"] = round(p100["seconds"], 3)
    out["initial_pull_100k_seconds_one_request_at_a_time"] = round(p100["baseline_seconds"], 3)
    out["initial_pull_100k_bytes"] = int(p100["bytes"])
    out["initial_pull_100k_requests"] = int(p100["requests"])
    out["initial_pull_100k_seed_seconds"] = round(p100["seed_seconds"], 1)
    sample = [http_hazard(i, str(uuid.UUID(int=7))) for i in range(200)]
    out["initial_pull_http_record_json_bytes_avg"] = round(
        sum(len(json.dumps(h)) for h in sample) / 200, 1
    )
    out["initial_pull_http_note"] = (
        "uvicorn on loopback, SQLite, demo data set + N hazards in the admin's scope; "
        "fresh admin phone, HttpTransport msgpack+gzip, pull_limit 5000, the next page fetched "
        "while one is applied; 10k: median of 5 phones, 100k: one; baseline: the same client "
        "with one request at a time (fetch_ahead=False), alternating with it in the same run; "
        "bytes = socket bytes incl. request/status lines and headers; seeding not timed"
    )
    n_fields = 20 * 2
    st = http_steady_state(1000, 20)
    out["push_bytes_per_field"] = round(st["push_bytes"] / n_fields, 1)
    out["pull_bytes_per_field"] = round(st["pull_bytes"] / n_fields, 1)
    out["steady_state_http_requests"] = {"push": st["push_requests"], "pull": st["pull_requests"]}
    # The figures mean something only if the edits were accepted and reached the other phone.
    for r in (st, st["first"]):
        assert r["accepted"] == 20 and r["seen_by_b"] == 20, r
    out["first_push_bytes_per_field"] = round(st["first_push_bytes"] / n_fields, 1)
    out["steady_state_http_accepted"] = int(st["accepted"])
    out["steady_state_http_seen_by_b"] = st["seen_by_b"]
    out["steady_state_workload"] = (
        "HTTP: two admin phones hold 1,000 hazards + demo data; A edits 20 hazards x 2 fields "
        "(severity, description) and pushes once; B pulls and holds all 20; socket bytes incl. "
        "headers / 40 fields; first_push: the same, A's first push after its initial pull; "
        "push/pull: the next round"
    )


def run() -> dict[str, Any]:
    """Entry point for `python -m tests.bench sync`: engine figures, the SQL server's, and the
    initial pull and steady state through the real HTTP server."""
    out = engine_figures()
    _server_figures(out)
    _http_figures(out)
    return out
