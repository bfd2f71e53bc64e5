"""Delivery of published warnings is attached explicitly by every process that can publish,
not by whichever module happened to import the residents' audience first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.app import create_app
from server.cli import main
from server.domain.alerts.services import PUBLISHED_HOOKS
from server.domain.residents.audience import deliver, install
from tests.conftest import make_settings


@pytest.fixture
def no_hooks() -> Iterator[None]:
    """The seam as a fresh process that has imported everything but set nothing up."""
    saved = list(PUBLISHED_HOOKS)
    PUBLISHED_HOOKS.clear()
    try:
        yield
    finally:
        PUBLISHED_HOOKS[:] = saved


@pytest.mark.usefixtures("no_hooks")
def test_the_app_attaches_delivery_once(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path)
    create_app(settings)
    install()  # as a second app in the same process would
    assert PUBLISHED_HOOKS == [deliver]


@pytest.mark.usefixtures("no_hooks")
def test_the_command_line_attaches_delivery() -> None:
    # `liandong jobs --help` runs the group's set-up (as seed-demo and worker do) and nothing else.
    result = CliRunner().invoke(main, ["jobs", "--help"])
    assert result.exit_code == 0, result.output
    assert PUBLISHED_HOOKS == [deliver]
