"""`liandong worker` as a real process on each event loop (server/loops.py): a published warning
goes through its SQL outbox (aiosqlite or asyncpg) and its aiohttp Web Push sender to a
loopback push service that verifies and decrypts it, and the worker stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from litestar.testing import TestClient

from server.config import Settings
from tests.conftest import TEST_VAPID_PRIVATE_KEY
from tests.integration.residents.fanout_helpers import CENTRE, at, publish, subscribe
from tests.peers.webpush_receiver import WebPushReceiver

pytestmark = pytest.mark.e2e
LIANDONG = str(Path(sys.executable).parent / "liandong")
# Ctrl-C (SIGINT) as a terminal gives it: a test run started in the background of a script
# inherits SIGINT ignored, and Python then leaves it ignored (the worker never stopped).
WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]

# uvloop is the default (no setting); asyncio is the operator's fall-back, chosen by setting.
ASYNCIO_LOOP = "asyncio.unix_events._UnixSelectorEventLoop"
LOOPS = [
    pytest.param({}, "uvloop.Loop", id="uvloop-default"),
    pytest.param({"LIANDONG_EVENT_LOOP": "asyncio"}, ASYNCIO_LOOP, id="asyncio"),
]
STARTUP_S = 60.0  # a worker that has not said it runs by then never will


def first_lines(stream: IO[str], count: int, timeout_s: float) -> str:
    """The first `count` lines a process prints (fewer if it ends first); AssertionError if
    they take longer than `timeout_s`, where a bare `readline` would hang the suite."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:  # ends when the process prints or closes its output (killed)
        for _ in range(count):
            line = stream.readline()
            lines.put(line)
            if not line:
                return

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    got: list[str] = []
    while len(got) < count and (not got or got[-1]):
        try:
            got.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(
                f"no start-up line {len(got) + 1} of {count} within {timeout_s:g} s; "
                f"printed so far: {''.join(got)!r}"
            ) from None
    return "".join(got)


@pytest.mark.parametrize(("env_loop", "loop_class"), LOOPS)
def test_worker_delivers_a_warning_on_the_configured_event_loop(
    env_loop: dict[str, str],
    loop_class: str,
    client: TestClient[Any],
    auth: Any,
    settings: Settings,
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANDONG_")}
    env.update(
        LIANDONG_DATABASE_URL=settings.database_url,
        LIANDONG_VAR_DIR=str(tmp_path),
        LIANDONG_SECRET_KEY=settings.secret_key,
        LIANDONG_VAPID_PRIVATE_KEY=TEST_VAPID_PRIVATE_KEY,
        LIANDONG_PUSH_TEST_HOSTS="127.0.0.1",
        **env_loop,
    )
    err = tmp_path / "worker.err"  # a file, not a pipe nobody reads until the end
    with WebPushReceiver() as receiver, err.open("w") as err_file:
        inside = subscribe(client, receiver, at(*CENTRE))
        alert = publish(client, auth)
        proc = subprocess.Popen(
            [*WITH_CTRL_C, LIANDONG, "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
        try:
            assert proc.stdout is not None
            started = first_lines(proc.stdout, 2, STARTUP_S)
            assert f"running on {loop_class}" in started, started
            assert receiver.wait_for(1, timeout=60), "the worker delivered nothing"
            assert [p.sub_id for p in receiver.pushes()] == [inside]
            assert receiver.rejections == []
            # The delivery's record committed on this loop's database driver too.
            deadline = time.monotonic() + 30
            while True:
                report = client.get(
                    f"/api/v1/alerts/{alert['id']}/delivery", headers=auth("dispatcher")
                ).json()
                if report["channels"]["webpush"]["delivered"] == 1:
                    break
                assert time.monotonic() < deadline, report
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker stderr:\n{err.read_text()[-4000:]}") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert code == 0, err.read_text()[-4000:]


def test_a_silent_process_fails_the_start_up_wait_instead_of_hanging() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "print('one', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        with pytest.raises(AssertionError, match=r"no start-up line 2 of 2 within 2 s.*'one\\n'"):
            first_lines(proc.stdout, 2, 2.0)
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
        proc.wait(timeout=30)
