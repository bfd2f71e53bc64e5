"""Fixtures for the sync engine tests."""

from __future__ import annotations

import pytest

from sync import client
from tests.unit.sync.helpers import Rig


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def rig() -> Rig:
    return Rig()


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time a sync enters the collector pause (`sync.client.collector_paused`),
    holding how many syncs ran then (the real pause, counted)."""
    entered: list[int] = []
    enter = client._collector.enter

    def counted() -> None:
        enter()
        entered.append(client._collector.running)

    monkeypatch.setattr(client._collector, "enter", counted)
    return entered
