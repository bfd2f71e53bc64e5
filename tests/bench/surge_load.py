"""The surge benchmark's phones: locust, headless, as a library, in a process of its own.

`python -m tests.bench.surge_load PLAN.json` runs the stages of the plan against a running
`liandong serve` and prints one JSON line per finished stage (tests/bench/bench_surge.py reads
them). Locust monkey-patches the process for gevent when imported, which is why this is not
imported by the benchmark itself.

Phones (one locust user each, one device session each from the fixture's sessions file):

- **polling**: syncs at start (its first sync, to the end, retried after a shed; not measured:
  a stage's warm-up starts once no phone is still in its first sync; a phone a smaller stage
  stopped comes back in a later one with its cursors and tokens, and only catches up; a new
  phone starts from its unit's cursors, as one that synced before the surge, and snapshots
  only its own scopes: `Shared.unit_cursors`), then
  every `POLL_S` (30 s, at a random phase): refreshes its token when due (every 14 minutes, a
  minute before it expires as the app does, at a random first time), pulls (msgpack + gzip,
  its own cursors, every page), and with probability `POLL_S / WRITE_EVERY_S`
  writes: a position report (REST), or now and then a hazard by sync push, half of those with a
  photo sent by tus (creation-with-upload of a unique JPEG).
- **streaming**: a phone already in sync: holds `GET /api/v1/sync/events` (a plain socket, read
  line by line), and on a `pull` event pulls beside the stream (a greenlet of its own, as the
  app's stream only wakes its sync loop); it does not poll. A stage with streaming phones
  starts once they all hold their streams (`connect_max_s` at most).
- A 503 (or 429) is honoured as the phone does: wait `Retry-After`, then go on. Shed requests
  are reported under their own name, `shed`, so the served requests' percentiles stay theirs.

A dispatcher greenlet creates a task for one surge unit every `trigger_every_s` (round robin);
every streaming phone of that unit that holds its stream at that moment is "affected", and the
time from the task's POST to the phone reading its `pull` event is recorded (the POST's own
time apart, as `task POST`). Each stage's record gives the CPU the load generator used
(`loadgen_cpu_cores`) and how late its own clock ran (`loadgen_clock`: a 50-ms timer's
lateness, the collector's pauses): a request in flight during such a pause is timed late by it.
"""

from __future__ import annotations

import base64
import gc
import gzip
import hashlib
import json
import os
import random
import socket
import sys
import time
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment

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

POLL_S = 30.0
WRITE_EVERY_S = 180.0
HAZARD_SHARE = 0.05  # of writes; the rest are position reports
PHOTO_SHARE = 0.5  # of hazards
REFRESH_EVERY_S = 900.0  # the access token's lifetime (server.config, access_ttl_s)
REFRESH_MARGIN_S = 60.0  # the app refreshes this long before (mobile/core/session.py)
TIMEOUT_S = 30.0
FIRST_SYNC_MAX_S = 600.0
RECOVER_PHONES = 50  # phones left polling while a step-down lets the server drain
LOADGEN_YOUNG_COLLECTION_AFTER = 50_000
PULL_NOW_WITHIN_S = 2.0  # issue 13: a pull-now reaches 99 % of the affected phones within it
MSGPACK = "application/msgpack"
PERSONAL_SCOPES = ("user:", "reporter:")
"""Scopes of one user (server/domain/sync/policy.py); a responder's others are its unit's."""
DISTRICT = (121.462, 31.197, 121.510, 31.248)


class Shared:
    """State the phones of this process share (greenlets: no locks needed)."""

    sessions: list[dict[str, str]] = []
    next_session = 0
    want_streaming = 0
    streaming = 0
    polling = 0
    first_syncs = 0  # phones still in their first sync
    connected: dict[str, set[int]] = defaultdict(set)  # unit -> phones holding the stream
    triggers: dict[str, tuple[int, float]] = {}  # unit -> (trigger id, time of the POST)
    reached: list[float] = []  # seconds from a trigger to a phone's event
    arrivals: list[tuple[int, float]] = []  # (trigger id, time a phone read its event)
    answered: dict[int, float] = {}  # trigger id -> time the task's POST was answered
    measuring = True  # triggers count as affecting phones (not after a stage's end)
    affected = 0
    missed_phones: dict[int, set[int]] = {}  # trigger id -> phones still to hear of it
    photo: bytes = b""
    parked: list[dict[str, Any]] = []  # polling phones a smaller stage stopped, in sync
    unit_cursors: dict[str, dict[str, int]] = {}
    """unit -> the cursors of its scopes shared by the whole unit, from the last of its phones
    to finish a first sync. A new phone starts from them, as a phone that synced before the
    surge (at the start of its shift) would: only its own scopes (`PERSONAL_SCOPES`) come from
    nothing, the rest is the news since. A snapshot of every scope per phone made each step's
    set-up, and the overload's, a cold start of thousands of phones (7 minutes for 2,000 at
    twice the capacity on 29 November): a restart's load, not a surge's."""

    @classmethod
    def holding(cls) -> int:
        """Streaming phones holding their stream now."""
        return sum(len(phones) for phones in cls.connected.values())


def _unique_jpeg() -> tuple[bytes, str]:
    """The base photo with a unique JPEG comment segment (so the server cannot de-duplicate)."""
    note = uuid.uuid4().bytes * 4
    segment = b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note
    data = Shared.photo[:2] + segment + Shared.photo[2:]
    return data, hashlib.sha256(data).hexdigest()


def _point() -> dict[str, Any]:
    w, s, e, n = DISTRICT
    return {"type": "Point", "coordinates": [random.uniform(w, e), random.uniform(s, n)]}


def _retry_after(headers: Any) -> float:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value else 10.0
    except ValueError:
        return 10.0


class Phone(FastHttpUser):
    """One phone: polling or streaming, decided when it starts (see `Shared.want_streaming`)."""

    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    insecure = True

    def on_start(self) -> None:
        """Take a role, and a device session: a polling phone that a smaller stage stopped
        (in sync: it comes back with its cursors and tokens, as a phone back in coverage
        does), else a new one."""
        self.streaming = Shared.streaming < Shared.want_streaming
        self.in_sync = False
        self.puller: gevent.Greenlet | None = None
        self.pull_again = False
        if self.streaming:
            Shared.streaming += 1
        else:
            Shared.polling += 1
            if Shared.parked:
                self.__dict__.update(Shared.parked.pop())
                return
        self.index = Shared.next_session
        Shared.next_session += 1
        s = Shared.sessions[self.index % len(Shared.sessions)]
        self.access, self.refresh_token = s["access_token"], s["refresh_token"]
        self.device, self.unit = s["device_id"], s["unit_id"]
        self.cursors: dict[str, int] = {}
        self.bases: dict[str, int] = {}
        self.seq = 0
        self.next_refresh = time.monotonic() + random.uniform(0, REFRESH_EVERY_S)

    def on_stop(self) -> None:
        """Give the role back; a polling phone in sync is parked for a later stage."""
        if self.streaming:
            Shared.streaming -= 1
            if self.puller is not None:
                self.puller.kill(block=False)
            return
        Shared.polling -= 1
        if self.in_sync:
            keep = ("index", "access", "refresh_token", "device", "unit", "cursors", "bases")
            Shared.parked.append(
                {
                    **{k: getattr(self, k) for k in keep},
                    "seq": self.seq,
                    "next_refresh": self.next_refresh,
                    "in_sync": True,
                }
            )

    # -- requests -------------------------------------------------------------------------

    def _headers(self, ctype: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.access}", "Accept-Encoding": "gzip"}
        if ctype:
            h["Content-Type"] = ctype
            h["Accept"] = ctype
        return h

    def _call(
        self, method: str, path: str, name: str, *, retried: bool = False, **kw: Any
    ) -> Any | None:
        """One request; a 503/429 waits Retry-After and returns None; other failures too. A
        401 (the access token ran out: the sessions were minted before the run) is what the
        app answers with a refresh and the same request again: so here, once, reported apart
        as `expired token`."""
        with self.client.request(method, path, name=name, catch_response=True, **kw) as r:
            if r.status_code in (429, 503):
                r.request_meta["name"] = "shed"
                r.success()
                gevent.sleep(_retry_after(r.headers))
                return None
            if r.status_code == 401 and name != "refresh" and not retried:
                r.request_meta["name"] = "expired token"
                r.success()
            elif r.status_code >= 400 or r.status_code == 0:
                r.failure(f"HTTP {r.status_code}")
                return None
            else:
                r.success()
                return r
        self.next_refresh = 0.0
        if not self.refresh_if_due():
            return None  # the refresh was shed: the app's sync backs off, as on any failure
        headers = kw.get("headers")
        if headers and "Authorization" in headers:
            kw["headers"] = {**headers, "Authorization": f"Bearer {self.access}"}
        return self._call(method, path, name, retried=True, **kw)

    def refresh_if_due(self) -> bool:
        """Rotate the token pair `REFRESH_MARGIN_S` before it expires, as the app does (a shed
        refresh leaves the old token a minute to live; the phones refreshed at the expiry
        until 30 November, so a shed refresh in an overload left a request only its expired
        token and a 401). False: the refresh was due and did not go through."""
        if time.monotonic() < self.next_refresh:
            return True
        r = self._call(
            "POST",
            "/api/v1/auth/refresh",
            "refresh",
            json={"refresh_token": self.refresh_token, "device_id": self.device},
        )
        if r is not None:
            body = r.json()
            self.access, self.refresh_token = body["access_token"], body["refresh_token"]
            self.next_refresh = time.monotonic() + REFRESH_EVERY_S - REFRESH_MARGIN_S
        return r is not None

    def pull(self, name: str = "pull") -> bool:
        """Pull every page after the phone's cursors; False when a page was shed or failed."""
        for _ in range(20):
            req = PullRequest(
                schema_version=SCHEMA_VERSION,
                device_id=self.device,
                cursors=self.cursors,
                bases=self.bases,
            )
            r = self._call(
                "POST",
                "/api/v1/sync/pull",
                name,
                data=msgpack_encoder.encode(req),
                headers=self._headers(MSGPACK),
            )
            if r is None:
                return False
            body = r.content
            if r.headers.get("content-encoding") == "gzip" and body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)  # geventhttpclient may have left it compressed
            reply = pull_reply_msgpack.decode(body)
            if not isinstance(reply, PullResponse):
                return False
            more = False
            for page in reply.scopes:
                self.cursors[page.scope] = page.cursor
                if page.has_more:
                    more = True
                    self.bases.setdefault(page.scope, page.cursor)
                else:
                    self.bases.pop(page.scope, None)
            for scope in reply.dropped:
                self.cursors.pop(scope, None)
            if not more:
                return True
        return True

    def write(self) -> None:
        """A position report, or now and then a hazard (half of them with a photo)."""
        if random.random() >= HAZARD_SHARE:
            self._call(
                "POST",
                "/api/v1/positions",
                "position",
                json={"location": _point(), "accuracy_m": 12.0, "device_id": self.device},
                headers=self._headers(),
            )
            return
        fields: dict[str, Any] = {
            "category": "flood",
            "severity": "high",
            "description": "Water over the road, 40 cm",
            "location": _point(),
            "accuracy_m": 9.0,
        }
        photo = _unique_jpeg() if random.random() < PHOTO_SHARE else None
        if photo is not None:
            fields["photo_sha256"] = [photo[1]]
        self.seq += 1
        push = PushRequest(
            schema_version=SCHEMA_VERSION,
            device_id=self.device,
            mutations=[
                Mutation(
                    seq=self.seq,
                    entity="hazard",
                    id=uuid.uuid4(),
                    hlc=int(time.time() * 1000) << 16,
                    op=Op.CREATE,
                    fields=fields,
                )
            ],
        )
        pushed = self._call(
            "POST",
            "/api/v1/sync/push",
            "push",
            data=msgpack_encoder.encode(push),
            headers=self._headers(MSGPACK),
        )
        if pushed is None or photo is None:
            return
        data, digest = photo
        meta = ",".join(
            f"{k} {base64.b64encode(v.encode()).decode()}"
            for k, v in (("filename", "p.jpg"), ("filetype", "image/jpeg"), ("sha256", digest))
        )
        self._call(
            "POST",
            "/api/v1/uploads/",
            "photo",
            data=data,
            headers={
                **self._headers(),
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(data)),
                "Upload-Metadata": meta,
                "Content-Type": "application/offset+octet-stream",
            },
        )

    # -- lives ----------------------------------------------------------------------------

    @task
    def live(self) -> None:
        """Poll or stream until stopped."""
        if self.streaming:
            self.hold_stream()
        else:
            self.poll()

    def poll(self) -> None:
        # The phone's first sync, to the end (a shed page waits Retry-After and is asked
        # again, as the app does): a stage measures phones that are in sync and polling, so
        # it starts only when no phone is still in its first sync (`Shared.first_syncs`).
        if not self.in_sync:
            Shared.first_syncs += 1
            try:
                if not self.cursors:  # synced before the surge: see `Shared.unit_cursors`
                    self.cursors = dict(Shared.unit_cursors.get(self.unit, {}))
                while not self.pull("initial pull"):
                    gevent.sleep(1.0)
            finally:
                Shared.first_syncs -= 1
            self.in_sync = True
            Shared.unit_cursors[self.unit] = {
                s: c for s, c in self.cursors.items() if not s.startswith(PERSONAL_SCOPES)
            }
        gevent.sleep(random.uniform(0, POLL_S))
        while True:
            started = time.monotonic()
            self.refresh_if_due()
            self.pull()
            if random.random() < POLL_S / WRITE_EVERY_S:
                self.write()
            gevent.sleep(max(0.0, POLL_S - (time.monotonic() - started)))

    def hold_stream(self) -> None:
        # A phone already in sync opens its stream first (an initial pull from ten thousand
        # phones at once would measure a cold start, not phones holding their streams).
        url = urlsplit(self.host)
        while True:
            retry = self._stream_once(url.hostname or "127.0.0.1", url.port or 80)
            gevent.sleep(retry)

    def _stream_once(self, host: str, port: int) -> float:
        """Hold one stream until it ends; returns how long to wait before reconnecting."""
        started = time.perf_counter()
        try:
            sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
        except OSError as exc:
            _fire("stream connect", started, exc)
            return 5.0
        try:
            sock.sendall(
                (
                    "GET /api/v1/sync/events HTTP/1.1\r\n"
                    f"Host: {host}:{port}\r\n"
                    f"Authorization: Bearer {self.access}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
            )
            reader = sock.makefile("rb", buffering=2048)
            status = reader.readline().split(b" ")
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            code = int(status[1]) if len(status) > 1 else 0
            if code in (429, 503):
                _fire("shed", started, None)
                return _retry_after(headers)
            if code == 401:  # the access token ran out: the app refreshes and reconnects
                _fire("expired token", started, None)
                self.next_refresh = 0.0
                self.refresh_if_due()
                return 0.1
            if code != 200:
                _fire("stream connect", started, RuntimeError(f"HTTP {code}"))
                return 5.0
            sock.settimeout(None)  # keepalive comments every 15 s; the stream may be quiet
            event = ""
            while line := reader.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    event = text[6:].strip()
                elif text == "" and event:
                    if event == "ready":
                        _fire("stream connect", started, None)
                        Shared.connected[self.unit].add(self.index)
                    elif event == "pull":
                        self._heard()
                        self._told()
                    event = ""
            return 1.0
        except OSError as exc:
            _fire("stream cut", started, exc)
            return 1.0
        finally:
            Shared.connected[self.unit].discard(self.index)
            sock.close()

    def _told(self) -> None:
        """Pull beside the stream, as the app does (its stream only wakes its sync loop): a
        reader busy pulling, or waiting out a shed pull's Retry-After, would read the next
        event late. An event during a pull asks for one more."""
        if self.puller is not None and not self.puller.dead:
            self.pull_again = True
            return

        def run() -> None:
            self.pull_again = True
            while self.pull_again:
                self.pull_again = False
                self.refresh_if_due()
                self.pull("pull (told)")

        self.puller = gevent.spawn(run)

    def _heard(self) -> None:
        mark = Shared.triggers.get(self.unit)
        if mark is None:
            return
        trigger, at = mark
        waiting = Shared.missed_phones.get(trigger)
        if waiting is not None and self.index in waiting:
            waiting.discard(self.index)
            now = time.time()
            lag = now - at
            Shared.reached.append(lag)
            Shared.arrivals.append((trigger, now))
            events.request.fire(
                request_type="SSE",
                name="pull-now reached",
                response_time=lag * 1000,
                response_length=0,
                exception=None,
                context={},
            )


def _fire(name: str, started: float, exc: Exception | None) -> None:
    events.request.fire(
        request_type="SSE",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=exc,
        context={},
    )


def _dispatcher(host: str, token: str, units: list[str], every_s: float) -> None:
    """Create a task for one unit after another; note when and who holds a stream."""
    import httpx  # blocking client under gevent's patched sockets

    client = httpx.Client(base_url=host, timeout=TIMEOUT_S)
    n = 0
    while True:
        gevent.sleep(every_s)
        unit = units[n % len(units)]
        n += 1
        holders = set(Shared.connected[unit]) if Shared.measuring else set()
        Shared.missed_phones[n] = holders
        Shared.affected += len(holders)
        Shared.triggers[unit] = (n, time.time())
        body = {
            "title": f"Levee breach check {n}",
            "location": _point(),
            "priority": "urgent",
            "assignee_unit_id": unit,
        }
        started = time.perf_counter()
        try:
            r = client.post(
                "/api/v1/tasks", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            _fire("task POST", started, None if r.is_success else RuntimeError(r.status_code))
            Shared.answered[n] = time.time()
        except httpx.HTTPError as exc:
            _fire("task POST", started, exc)


def _pct_ms(sorted_s: list[float], q: float) -> float | None:
    """The q-quantile of sorted seconds, in milliseconds (None for none)."""
    if not sorted_s:
        return None
    return round(sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000, 1)


def _cpu_s() -> float:
    """CPU seconds this process (the load generator) has used."""
    t = os.times()
    return t.user + t.system


def _summary(env: Environment) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (name, _method), entry in env.stats.entries.items():
        if entry.num_requests == 0:
            continue
        out[name] = {
            "n": entry.num_requests,
            "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": round(entry.max_response_time, 1),
        }
    return out


class OwnClock:
    """The load generator's own lateness over a stage: a greenlet due every `LATE_PROBE_S`
    notes how late it ran (a response that arrived while the hub was busy is timed that much
    late too), and each of the collector's pauses (`gc.callbacks`)."""

    LATE_PROBE_S = 0.05

    def __init__(self) -> None:
        self.late: list[float] = []
        self.pauses: list[float] = []
        self._paused_at = 0.0

    def start(self) -> None:
        gevent.spawn(self._watch)
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.late.clear()
        self.pauses.clear()

    def figures(self) -> dict[str, Any]:
        late = sorted(self.late)
        return {
            "late_ms": {q: _pct_ms(late, p) for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1))},
            "gc_pauses": len(self.pauses),
            "gc_paused_s": round(sum(self.pauses), 3),
            "gc_pause_max_ms": round(max(self.pauses, default=0.0) * 1000, 1),
        }

    def _watch(self) -> None:
        while True:
            due = time.perf_counter() + self.LATE_PROBE_S
            gevent.sleep(self.LATE_PROBE_S)
            self.late.append(max(0.0, time.perf_counter() - due))

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._paused_at = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._paused_at)


def _served_p99(stats: dict[str, Any]) -> tuple[float, int, int]:
    """p99 over the measured served requests (the worst of their kinds), failures, shed."""
    kinds = ("pull", "push", "position", "photo", "refresh", "pull (told)")
    p99 = max((stats[k]["p99_ms"] for k in kinds if k in stats), default=0.0)
    failures = sum(v["failures"] for k, v in stats.items())
    shed = stats.get("shed", {}).get("n", 0)
    return p99, failures, shed


def main(plan_path: str) -> int:
    plan = json.loads(open(plan_path).read())
    with open(plan["sessions"]) as fh:
        Shared.sessions = [json.loads(line) for line in fh]
    Shared.photo = open(plan["photo"], "rb").read()
    # Ten thousand phones in one process are a heap Python's collector walks whole, again
    # and again: in a measured overload minute, 6,587 collections stopped every phone for
    # 11.6 s in all, up to 0.8 s at a time, and every request in flight was timed that much
    # late (a phone is a device of its own, with no such pause). What start-up and each
    # stage's new phones built is moved out of its way (`gc.freeze`), as the server does
    # (server/app.py, `frozen_heap`), and young collections come less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(LOADGEN_YOUNG_COLLECTION_AFTER, 10, 10)
    Phone.host = plan["host"]
    # A probe may speed the phones up (e.g. to find a leak sooner); the benchmark does not.
    global POLL_S, WRITE_EVERY_S, HAZARD_SHARE, PHOTO_SHARE  # noqa: PLW0603
    POLL_S = plan.get("poll_s", POLL_S)
    WRITE_EVERY_S = plan.get("write_every_s", WRITE_EVERY_S)
    HAZARD_SHARE = plan.get("hazard_share", HAZARD_SHARE)
    PHOTO_SHARE = plan.get("photo_share", PHOTO_SHARE)
    env = Environment(user_classes=[Phone], events=events)
    runner = env.create_local_runner()
    spawn_rate = plan.get("spawn_rate", 200)
    best = 0

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    first_sync_s: dict[int, float] = {}
    clock = OwnClock()
    clock.start()

    streams_open_s: dict[int, float] = {}

    def reach(
        users: int,
        streaming: int,
        connect_max_s: float = 0.0,
        first_sync_max_s: float = FIRST_SYNC_MAX_S,
    ) -> None:
        Shared.want_streaming = streaming
        t0 = time.monotonic()
        runner.start(users, spawn_rate=spawn_rate)
        while runner.user_count != users:
            gevent.sleep(0.5)
        # New phones first sync their scopes (a cold start, not a surge's steady polling):
        # the warm-up starts once they all have, or after `first_sync_max_s` at most (a
        # search step whose phones cannot all sync within it is past the knee: it is
        # measured as it is, and fails on its shed requests).
        while Shared.first_syncs and time.monotonic() - t0 < first_sync_max_s:
            gevent.sleep(0.5)
        first_sync_s[users] = round(time.monotonic() - t0, 1)
        gc.freeze()  # the new phones' state lives as long as they do
        # Streaming phones: a stage measures phones that hold their streams, so it starts once
        # every one does (connect_max_s at most; shed connects wait Retry-After and try again).
        while Shared.holding() < streaming and time.monotonic() - t0 < connect_max_s:
            gevent.sleep(0.5)
        if streaming:
            streams_open_s[users] = round(time.monotonic() - t0, 1)

    def measure(name: str, warm_s: float, hold_s: float, **extra: Any) -> dict[str, Any]:
        gevent.sleep(warm_s)
        env.stats.reset_all()
        Shared.reached.clear()
        Shared.arrivals.clear()
        Shared.affected = 0
        Shared.missed_phones.clear()
        t0, cpu0, holding0 = time.time(), _cpu_s(), Shared.holding()
        clock.reset()
        Shared.measuring = True
        gevent.sleep(hold_s)
        t1 = time.time()
        loadgen_cpu = (_cpu_s() - cpu0) / (t1 - t0)
        own_clock = clock.figures()
        stats = _summary(env)
        if Shared.affected:
            # A task made just before the end has its 2 s to reach its phones too; tasks made
            # after the end count for nobody.
            Shared.measuring = False
            gevent.sleep(PULL_NOW_WITHIN_S + 0.5)
            Shared.measuring = True
        p99, failures, shed = _served_p99(stats)
        errors = sorted(env.stats.errors.values(), key=lambda e: -e.occurrences)[:5]
        record = {
            "stage": name,
            "errors": {f"{e.name}: {e.error}"[:200]: e.occurrences for e in errors},
            "t_start": t0,
            "t_end": t1,
            "polling": Shared.polling,
            "streaming": Shared.streaming,
            "served_p99_ms": p99,
            "failures": failures,
            "shed": shed,
            "stats": stats,
            "first_sync_s": first_sync_s.get(Shared.polling + Shared.streaming),
            "still_in_first_sync": Shared.first_syncs,
            "streams_open_s": streams_open_s.get(Shared.polling + Shared.streaming),
            "sessions_used": Shared.next_session,  # phones started so far; parked ones return
            "holding_at_start": holding0,
            "holding_at_end": Shared.holding(),
            "loadgen_cpu_cores": round(loadgen_cpu, 2),
            "loadgen_clock": own_clock,
            **extra,
        }
        if Shared.affected:
            within = sum(1 for lag in Shared.reached if lag <= PULL_NOW_WITHIN_S)
            # The same arrivals from the POST's answer (the commit, just before it): the
            # fan-out itself, apart from the time the task's request took.
            after = sorted(
                max(0.0, t - Shared.answered[n]) for n, t in Shared.arrivals if n in Shared.answered
            )
            record["pull_now"] = {
                "affected": Shared.affected,
                "reached": len(Shared.reached),
                "reached_within_2s": within,
                "after_answer_p50_ms": _pct_ms(after, 0.5),
                "after_answer_p99_ms": _pct_ms(after, 0.99),
                "share_within_2s": round(within / Shared.affected, 4),
            }
        emit(record)
        return record

    for stage in plan["stages"]:
        kind = stage["kind"]
        if kind == "search":
            users = stage["start"]
            while users <= stage["max"]:
                reach(users, 0, first_sync_max_s=stage.get("first_sync_max_s", FIRST_SYNC_MAX_S))
                rec = measure(f"search-{users}", stage["warm_s"], stage["hold_s"], users=users)
                if rec["served_p99_ms"] > 1000 or rec["failures"] or rec["shed"]:
                    break
                best = users
                users += stage["step"]
        elif kind == "hold":
            # No step passed (a machine busy with other work): hold the plan's fallback (one
            # step below the first), so the soak and the overload still measure something.
            fallback = stage.get("fallback", 0)
            if "below_best" in stage:
                # The hold that decides starts `below_best` under the search's last passing
                # step, and no lower than the fallback: the 20-s steps screen optimistically
                # (docs/capacity.md, "The knee held, and the overload served within 2 s").
                best = max(best - stage["below_best"], fallback) if best else fallback
            base = best or fallback
            users = int(stage.get("users", round(base * stage.get("times_best", 1))))
            reach(
                users + stage.get("streaming", 0),
                stage.get("streaming", 0),
                stage.get("connect_max_s", 0.0),
                first_sync_max_s=stage.get("first_sync_max_s", FIRST_SYNC_MAX_S),
            )
            dispatcher = None
            if stage.get("trigger_every_s"):
                dispatcher = gevent.spawn(
                    _dispatcher,
                    plan["host"],
                    plan["dispatcher_token"],
                    plan["units"],
                    stage["trigger_every_s"],
                )
            parts = stage.get("parts") or [stage["hold_s"]]
            stepped = False
            for i, part in enumerate(parts):
                warm_s = stage["warm_s"] if i == 0 or (i == 1 and stepped) else 0
                rec = measure(f"{stage['name']}-{i}", warm_s, part, users=users, best=best)
                down = stage.get("step_down", 0)
                failed = rec["served_p99_ms"] > 1000 or rec["failures"] or rec["shed"]
                # Once, after the first part, and only with a part to come.
                if i == 0 and len(parts) > 1 and failed and down and users == best > down:
                    # The 5-minute hold decides, and the search's short steps can pass a count
                    # that five minutes of bursts do not: the next part holds one step less,
                    # and the overload is taken at twice what was held.
                    # The smaller count starts from a drained server: at 5,000 phones the
                    # surge_probe held p99 450 ms with none shed on a fresh server, but after
                    # a minute at 7,000 it shed 1,760 and 22,957 in two runs, and 2 when all
                    # but 50 phones first parked for 30 s (docs/capacity.md, "A server that
                    # stays behind"). Parked phones come back with their cursors and a new
                    # phase in their 30 s.
                    users = best = users - down
                    pause = stage.get("recover_s", 0.0)
                    if pause:
                        reach(min(users, RECOVER_PHONES), 0)
                        gevent.sleep(pause)
                    reach(users, 0)
                    stepped = True
            if dispatcher is not None:
                dispatcher.kill()
    runner.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
