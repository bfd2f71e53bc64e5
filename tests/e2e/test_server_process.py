"""The real `liandong` command in real processes, as `make run` starts it (embedded default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.e2e
LIANDONG = str(Path(sys.executable).parent / "liandong")


def _env(var: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANDONG_")}
    env.update({"LIANDONG_VAR_DIR": str(var), "LIANDONG_PORT": str(port)})
    return env


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not become ready")


def test_migrate_seed_serve_login_and_restart_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, port)
    for cmd in (["migrate"], ["seed-demo"], ["seed-demo"]):
        out = subprocess.run([LIANDONG, *cmd], env=env, capture_output=True, text=True, check=True)
        assert out.returncode == 0
    assert "already present" in out.stdout
    assert (tmp_path / "liandong.db").exists()

    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [LIANDONG, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait_ready(base, proc)
        login = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "dispatcher", "password": "liandong-demo", "device_id": "e2e"},
        )
        assert login.status_code == 200
        h = {"Authorization": f"Bearer {login.json()['access_token']}"}
        body = {
            "type": "gas_leak",
            "level": 3,
            "title": "燃气泄漏 e2e",
            "location": {"type": "Point", "coordinates": [121.4855, 31.2375]},
        }
        created = httpx.post(f"{base}/api/v1/incidents", headers=h, json=body)
        assert created.status_code == 201
        assert httpx.get(f"{base}/schema/openapi.json").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)

    # A restarted server still has the incident and still honours the issued token.
    proc = subprocess.Popen(
        [LIANDONG, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait_ready(base, proc)
        got = httpx.get(f"{base}/api/v1/incidents/{created.json()['id']}", headers=h)
        assert got.status_code == 200
        assert got.json()["title"] == "燃气泄漏 e2e"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_cli_user_commands(tmp_path: Path) -> None:
    env = _env(tmp_path, free_port())
    subprocess.run([LIANDONG, "migrate"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [
            LIANDONG,
            "user",
            "create",
            "ops1",
            "--role",
            "dispatcher",
            "--password",
            "a-long-password",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    bad = subprocess.run(
        [
            LIANDONG,
            "user",
            "create",
            "ops 2",
            "--role",
            "dispatcher",
            "--password",
            "a-long-password",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "username" in bad.stderr
    listed = subprocess.run(
        [LIANDONG, "user", "list"], check=False, env=env, capture_output=True, text=True
    )
    assert "ops1" in listed.stdout and "active" in listed.stdout
    subprocess.run([LIANDONG, "user", "disable", "ops1"], env=env, check=True, capture_output=True)
    listed = subprocess.run(
        [LIANDONG, "user", "list"], check=False, env=env, capture_output=True, text=True
    )
    assert "disabled" in listed.stdout
