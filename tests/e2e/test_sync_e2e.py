"""Real processes: `liandong serve` on the embedded default and the real HTTP client.

A phone goes offline (the server is killed), edits, the server comes back, the phone syncs;
then a scope change (the task reassigned to another unit) evicts the task from the phone.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from mobile.core.transport import HttpTransport
from schemas.sync import Op
from sync.client import SyncClient, TransportError
from sync.store import ClientStore
from tests.e2e.test_server_process import LIANDONG, _env, _wait_ready
from tests.factories import did, point
from tests.servers import free_port

pytestmark = pytest.mark.e2e


def _login(base: str, user: str) -> str:
    r = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"username": user, "password": "liandong-demo", "device_id": f"e2e-{user}"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [LIANDONG, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=15)


def test_offline_edit_survives_server_restart_and_reassignment_evicts(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, port)
    for cmd in (["migrate"], ["seed-demo"]):
        subprocess.run([LIANDONG, *cmd], env=env, capture_output=True, check=True)
    base = f"http://127.0.0.1:{port}"
    store = ClientStore(tmp_path / "phone.db", device_id="e2e-phone")
    proc = _serve(env)
    try:
        _wait_ready(base, proc)
        d = {"Authorization": f"Bearer {_login(base, 'dispatcher')}"}
        token = _login(base, "fire1")
        task = httpx.post(
            f"{base}/api/v1/tasks",
            headers=d,
            json={
                "title": "e2e task",
                "location": point(121.4855, 31.2375),
                "assignee_unit_id": str(did("org:fire")),
            },
        ).json()
        tid = uuid.UUID(task["id"])

        async def sync() -> None:
            transport = HttpTransport(base, token)
            try:
                await SyncClient(store, transport).sync_once()
            finally:
                await transport.aclose()

        asyncio.run(sync())
        assert store.get("task", tid)["status"] == "assigned"  # type: ignore[index]

        # Offline: the server dies; the phone accepts the task anyway and cannot sync.
        _stop(proc, signal.SIGKILL)
        store.write(
            "task_step",
            uuid.uuid4(),
            {"task_id": str(tid), "to_status": "accepted", "at": "2026-11-20T08:30:00Z"},
            op=Op.CREATE,
        )
        with pytest.raises(TransportError):
            asyncio.run(sync())
        assert store.pending_count() == 1

        proc = _serve(env)
        _wait_ready(base, proc)
        asyncio.run(sync())
        assert store.pending_count() == 0
        assert store.log_entries("refused") == []
        got = httpx.get(f"{base}/api/v1/tasks/{tid}", headers=d).json()
        assert got["status"] == "accepted"

        # Scope change: reassigned to police, the task leaves the fire phone.
        r = httpx.patch(
            f"{base}/api/v1/tasks/{tid}",
            headers=d,
            json={"assignee_unit_id": str(did("org:police"))},
        )
        assert r.status_code == 200, r.text
        asyncio.run(sync())
        assert store.get("task", tid) is None
    finally:
        store.close()
        if proc.poll() is None:
            _stop(proc)
