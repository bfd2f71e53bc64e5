"""The event loop of `liandong serve` and `liandong worker` is an explicit, configurable choice
(server/loops.py): uvloop by default, asyncio as the operator's fall-back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop
from click.testing import CliRunner

from server.cli import _with_loop, main
from server.config import Settings
from server.loops import EventLoopUnavailable, loop_factory, running_loop_name
from server.serving import uvicorn_options


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("LIANDONG_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("LIANDONG_SECRET_KEY", "k" * 48)
    monkeypatch.delenv("LIANDONG_EVENT_LOOP", raising=False)
    return monkeypatch


def test_uvloop_by_default_asyncio_by_setting_and_nothing_else(env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().event_loop == "uvloop"
    env.setenv("LIANDONG_EVENT_LOOP", " AsyncIO ")
    assert Settings.from_env().event_loop == "asyncio"
    env.setenv("LIANDONG_EVENT_LOOP", "auto")  # uvicorn's silent pick is not a choice here
    with pytest.raises(ValueError, match="LIANDONG_EVENT_LOOP"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "factory", "kind"),
    [
        ("uvloop", uvloop.new_event_loop, uvloop.Loop),
        ("asyncio", asyncio.SelectorEventLoop, asyncio.SelectorEventLoop),
    ],
)
def test_serve_hands_uvicorn_the_configured_loop(
    name: str, factory: object, kind: type, tmp_path: Path
) -> None:
    settings = Settings(
        database_url="sqlite+aiosqlite:///x.db", secret_key="k", var_dir=tmp_path, event_loop=name
    )
    opts = uvicorn_options(settings, host="127.0.0.1", port=8000, workers=1, log_level="info")
    # uvicorn's own "auto" would take uvloop whenever it is installed, whatever we configured;
    # on uvloop, serving runs its batch-accepting subclass (server/serving.py).
    served = uvicorn.Config("server.serving:create_served_app", **opts).get_loop_factory()
    assert served is not None
    loop = served()
    try:
        assert isinstance(loop, kind)
        assert isinstance(loop, uvloop.Loop) == (name == "uvloop")
    finally:
        loop.close()
    assert loop_factory(name) is factory


def test_the_loop_option_overrides_the_setting(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///x.db", secret_key="k", var_dir=tmp_path)
    assert _with_loop(settings, None) == (settings, uvloop.new_event_loop)
    chosen, factory = _with_loop(settings, "asyncio")
    assert (chosen.event_loop, factory) == ("asyncio", asyncio.SelectorEventLoop)


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_the_worker_looks_its_loop_up_once(env: pytest.MonkeyPatch, name: str) -> None:
    """`liandong worker` resolves the loop once, checks it is available, and runs on that
    factory's loop (here it stops at once on it: no push sender is configured)."""
    made: list[str] = []

    def counted(loop: str) -> Any:
        made.append(loop)
        return loop_factory(loop)

    env.setattr("server.cli.loop_factory", counted)
    for key in ("LIANDONG_FCM_PROJECT_ID", "LIANDONG_VAPID_PRIVATE_KEY"):
        env.delenv(key, raising=False)
    result = CliRunner().invoke(main, ["worker", "--loop", name])
    assert "no push sender configured" in result.output, result.output
    assert made == [name]


def test_without_uvloop_the_commands_say_how_to_fall_back(env: pytest.MonkeyPatch) -> None:
    env.setitem(sys.modules, "uvloop", None)  # as on a platform uvloop has no build for
    with pytest.raises(EventLoopUnavailable, match="LIANDONG_EVENT_LOOP=asyncio"):
        loop_factory("uvloop")
    with pytest.raises(ValueError, match="unknown event loop"):
        loop_factory("trio")
    for command in (["worker"], ["serve", "--loop", "uvloop"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, result.output
        assert "LIANDONG_EVENT_LOOP=asyncio" in result.output
    assert loop_factory("asyncio") is asyncio.SelectorEventLoop


def test_the_suite_runs_on_the_loop_its_setting_names() -> None:
    from tests.conftest import TEST_EVENT_LOOP

    async def name() -> str:
        return running_loop_name()

    assert ("uvloop" in asyncio.run(name())) == (TEST_EVENT_LOOP == "uvloop")


def test_an_unknown_test_event_loop_stops_the_session_at_its_start(tmp_path: Path) -> None:
    env = {**os.environ, "LIANDONG_TEST_EVENT_LOOP": "uv-loop"}
    collect = ["--collect-only", "-q", "-p", "no:cacheprovider", __file__]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *collect],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "LIANDONG_TEST_EVENT_LOOP='uv-loop' is not an event loop" in run.stderr
