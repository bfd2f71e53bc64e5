"""Real parts for the app tests, screenshots and benchmark: the server (uvicorn, as `liandong
serve` runs it, on a thread of the test process) on a fresh SQLite file with the demo data, a
loopback proxy in front of it that the test steers (offline: connections are cut and refused;
hold: sync pulls wait until released), one Xvfb display, and the app itself
(`python -m mobile.app --scenario NAME`) as a separate process.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "liandong-demo"


# -- the server ---------------------------------------------------------------------------
@contextmanager
def demo_server(var: Path) -> Iterator[str]:
    """A fresh var dir with the demo data (`liandong migrate` and `seed-demo`, run as the CLI
    runs them), served by uvicorn with the app and options `liandong serve` uses, on a thread
    of this process (its imports are paid already: a cold `serve` process took ~30 s to
    answer on a loaded machine). Yields the base URL."""
    import uvicorn

    from server.app import create_app
    from server.config import Settings
    from server.serving import uvicorn_options

    port = free_port()
    env = {"LIANDONG_VAR_DIR": str(var), "LIANDONG_PORT": str(port)}
    cli_in_process(env, "migrate")
    cli_in_process(env, "seed-demo")
    with liandong_environment(env):
        settings = Settings.from_env()
    options = uvicorn_options(settings, host="127.0.0.1", port=port, workers=1, log_level="warning")
    # open "pull now" streams must not hold the shutdown
    options.update(factory=False, log_config=None, timeout_graceful_shutdown=2)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    thread = threading.Thread(target=server.run, name="liandong-serve", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a shared, loaded machine can be slow
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.05)
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        yield base
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def liandong_environment(env: dict[str, str]) -> Iterator[None]:
    """This process's environment with exactly `env`'s LIANDONG_* variables, for a while."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LIANDONG_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def cli_in_process(env: dict[str, str], *args: str) -> None:
    """Run a `liandong` command as the CLI would, in this process, with exactly `env`'s
    LIANDONG_* settings (click's runner swaps the environment during the call)."""
    from click.testing import CliRunner

    from server.cli import main

    with liandong_environment(env):
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"liandong {' '.join(args)}: {result.output}")


@functools.cache
def login(base: str, user: str) -> dict[str, str]:
    """Bearer headers for a demo user (REST, the way dispatch's console would act); one
    sign-in per user and server (argon2 makes each one slow on purpose)."""
    r = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"username": user, "password": PASSWORD, "device_id": f"console-{user}"},
        timeout=10,
    )
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# -- the proxy ----------------------------------------------------------------------------
@dataclass
class Proxy:
    """A TCP proxy that understands HTTP/1.1 request boundaries (Content-Length bodies).

    `offline`: open connections are cut and new requests get their connection closed without
    an answer (the phone sees the network fail); control requests are still answered.
    `hold`: requests whose path starts with `hold_path` wait until `release`.
    `POST /__proxy/<offline|online|hold|release>` steers it from the app's own process;
    `GET /__proxy/held` counts requests waiting."""

    upstream: str
    hold_path: str = "/api/v1/sync/pull"
    port: int = field(default_factory=free_port)
    offline: bool = False
    holding: bool = False
    held: int = 0
    passed: int = 0

    def __post_init__(self) -> None:
        host, _, port = self.upstream.removeprefix("http://").partition(":")
        self._up = (host, int(port))
        self.loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._conns: set[asyncio.StreamWriter] = set()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        started.set()
        self.loop.run_forever()
        server.close()

    # steering (any thread)
    def set(self, action: str) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._set(action), self.loop)
        fut.result(5)

    async def _set(self, action: str, keep: asyncio.StreamWriter | None = None) -> None:
        if action == "offline":
            self.offline = True
            for w in list(self._conns):
                if w is not keep:
                    w.transport.abort()
        elif action == "online":
            self.offline = False
        elif action == "hold":
            self.holding = True
            self._release.clear()
        elif action == "release":
            self.holding = False
            self._release.set()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        up_w: asyncio.StreamWriter | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                method, path = line.split(" ")[:2]
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    name, _, value = h.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                if path.startswith("/__proxy/"):
                    await self._control(method, path, writer)
                    continue
                if self.holding and path.startswith(self.hold_path):
                    self.held += 1
                    await self._release.wait()
                    self.held -= 1
                if self.offline:
                    break
                if up_w is None or up_w.is_closing():  # the server closes idle keep-alives
                    up_r, up_w = await asyncio.open_connection(*self._up)
                    self._conns.add(up_w)
                    self.loop.create_task(self._pipe(up_r, writer, up_w))
                up_w.write(head + body)
                await up_w.drain()
                self.passed += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    self._conns.discard(w)
                    w.transport.abort()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: asyncio.StreamWriter
    ) -> None:
        """Answers back to the phone; the upstream closing its idle keep-alive connection
        leaves the phone's connection open (the next request opens a new upstream one)."""
        with suppress(ConnectionError, OSError):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        upstream.close()

    async def _control(self, method: str, path: str, writer: asyncio.StreamWriter) -> None:
        action = path.removeprefix("/__proxy/")
        if method == "POST":
            await self._set(action, keep=writer)
        body = json.dumps({"held": self.held, "offline": self.offline}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()


# -- Xvfb and the app ---------------------------------------------------------------------
@contextmanager
def xvfb() -> Iterator[str]:
    """An X display (Xvfb) for the app; yields DISPLAY."""
    if os.environ.get("LIANDONG_TEST_DISPLAY"):
        yield os.environ["LIANDONG_TEST_DISPLAY"]
        return
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x900x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    with os.fdopen(r) as fh:
        number = fh.readline().strip()
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


def app_env(display: str, **extra: str) -> dict[str, str]:
    """The app process's environment: Kivy quiet, its own KIVY_HOME, software GL. Its
    modules' bytecode is the one `make setup` compiled, as an installed app's (an APK carries
    compiled modules)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANDONG_")}
    env.update(
        DISPLAY=display,
        KIVY_NO_ARGS="1",
        KIVY_HOME=tempfile.mkdtemp(prefix="kivy-home-"),
        KIVY_NO_CONSOLELOG="1",
        LIBGL_ALWAYS_SOFTWARE="1",
        PYTHONPATH=str(ROOT),
        # the phone is set to China's zone (times on screen are the device's wall clock)
        TZ=os.environ.get("LIANDONG_APP_TZ", "Asia/Shanghai"),
        **extra,
    )
    return env


def run_app(
    display: str,
    scenario: str,
    *,
    server: str,
    data_dir: Path,
    args: tuple[str, ...] = (),
    timeout: float = 120,
    **env: str,
) -> dict[str, Any]:
    """Run the app with `scenario` until it stops; returns the scenario's results."""
    result = data_dir.parent / f"{data_dir.name}-{scenario}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        "-m",
        "mobile.app",
        "--server",
        server,
        "--data-dir",
        str(data_dir),
        "--scenario",
        scenario,
        *args,
    ]
    e = app_env(display, LIANDONG_APP_RESULT=str(result), LIANDONG_APP_T0=repr(time.time()), **env)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=e, capture_output=True, timeout=timeout, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if not result.exists():
        tail = done.stderr.decode(errors="replace")[-4000:]
        raise AssertionError(f"app gave no result (exit {done.returncode}):\n{tail}")
    out: dict[str, Any] = json.loads(result.read_text("utf-8"))
    out["wall_s"] = wall
    return out
