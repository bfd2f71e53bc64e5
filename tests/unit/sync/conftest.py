"""Fixtures for the sync engine tests."""

from __future__ import annotations

import pytest

from tests.unit.sync.helpers import Rig


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def rig() -> Rig:
    return Rig()
