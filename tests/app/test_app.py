"""The field app, driven under Xvfb against a real `liandong serve` process.

Each test starts the app as its own process (one Kivy window per process) with a scenario
from tests/app/scenarios.py. Touches are Kivy motion events dispatched through the real
window's input path (`UnitTestTouch`), and in the held-sync test real X pointer events
(xdotool). Nothing is mocked: the server, the proxy in front of it and the app are real.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app import content
from tests.app.harness import Proxy, demo_server, run_app, xvfb

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("app-server")) as base:
        yield base


@pytest.fixture(scope="module")
def proxy(server: str) -> Iterator[Proxy]:
    p = Proxy(server)
    yield p
    p.close()


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb() as d:
        yield d


@pytest.fixture(scope="module")
def fire(server: str) -> dict[str, object]:
    return content.dispatch_fire(server)


def no_a11y_violations(result: dict[str, Any]) -> None:
    audits: dict[str, Any] = result.get("a11y") or {}
    assert audits, "the scenario audited no screen"
    for where, audit in audits.items():
        assert audit["violations"] == [], where
        assert audit["texts"] > 3 and audit["targets"] > 2, where
        assert audit["min_contrast"] >= 7.0, where


def test_responder_signs_in_by_touch_and_sees_their_tasks(
    display: str, proxy: Proxy, fire: dict[str, object], tmp_path: Path
) -> None:
    r = run_app(display, "signin_responder", server=proxy.url, data_dir=tmp_path / "phone")
    assert r["ok"], r["error"]
    assert r["refused_message"] == "用户名或密码错误。"  # Chinese by default
    titles = r["rows"]
    assert titles[0].startswith("我的任务")
    assert "灭火救援：九江路仓库" in titles and "疏散周边商铺人员" in titles
    no_a11y_violations(r)
