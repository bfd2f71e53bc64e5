"""Shared fixtures: every database test runs on real SpatiaLite and on real PostGIS.

PostGIS comes from LIANDONG_TEST_PG_URL (`make test` starts a local cluster when it can); each
session works in databases of its own created beside that one. Outside CI a missing server skips
the PostGIS half; in CI (CI=true) it fails, because there the PostGIS suites must run.

The shared database of each backend is seeded once; every test that uses it (through
`database_url`, `settings`, `client` or `auth`) starts from the same captured state, and the
state is put back after the test (tests/snapshots.py), so no test depends on another's leftovers
or on the order tests run in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import make_url, text

from server.app import create_app
from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.demo import DEMO_USERS, seed
from server.loops import EVENT_LOOPS
from server.migrate import upgrade
from tests.snapshots import DatabaseState

PG_URL = os.environ.get("LIANDONG_TEST_PG_URL")
# The event loop every test's asyncio.run, TestClient and anyio test runs on: `uvloop`, what
# `liandong serve` and `liandong worker` run by default (server/loops.py), or `asyncio`.
# Anything else stops the session before it starts (a typo must not quietly test asyncio).
TEST_EVENT_LOOP = os.environ.get("LIANDONG_TEST_EVENT_LOOP", "asyncio")
IN_CI = os.environ.get("CI", "").lower() == "true"
DEMO_PASSWORD = "liandong-demo"

BACKENDS = [
    pytest.param("sqlite", id="spatialite"),
    pytest.param("postgis", id="postgis", marks=pytest.mark.postgis),
]


def pytest_configure(config: pytest.Config) -> None:
    """Set the tests' event loop (`LIANDONG_TEST_EVENT_LOOP`), refusing an unknown one."""
    if TEST_EVENT_LOOP not in EVENT_LOOPS:
        raise pytest.UsageError(
            f"LIANDONG_TEST_EVENT_LOOP={TEST_EVENT_LOOP!r} is not an event loop: "
            f"one of {', '.join(EVENT_LOOPS)} (default asyncio)"
        )
    if TEST_EVENT_LOOP == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


_created_databases: list[tuple[str, str]] = []


def scratch_postgres(url: str, name: str) -> str:
    """A brand-new database beside the test database, private to this test process.

    The name gets the process id, so concurrent test sessions (developers, CI, benchmarks)
    sharing one PostgreSQL server never drop each other's tables. Dropped at session end.
    """
    base = make_url(url)
    name = f"{name}_p{os.getpid()}"
    if (url, name) not in _created_databases:
        _created_databases.append((url, name))

    async def run() -> None:
        engine = make_engine(url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await engine.dispose()
        scratch = make_engine(base.set(database=name).render_as_string(hide_password=False))
        async with scratch.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        await scratch.dispose()

    asyncio.run(run())
    return base.set(database=name).render_as_string(hide_password=False)


def require_postgres() -> str:
    """The PostGIS URL, or skip (outside CI) / fail (in CI)."""
    if PG_URL:
        return PG_URL
    if IN_CI:
        pytest.fail("CI=true but LIANDONG_TEST_PG_URL is unset: PostGIS suites must run in CI")
    pytest.skip("LIANDONG_TEST_PG_URL unset: PostGIS half skipped outside CI")


def fresh_database(backend: str, tmp: Path, scratch: str | None = None) -> str:
    """An empty, migrated database URL for `backend` (PostGIS: the test database, or a
    separate scratch database when `scratch` names one)."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'liandong.db'}"
    else:
        pg = require_postgres()
        url = scratch_postgres(pg, scratch or f"{make_url(pg).database}_session")
    upgrade(url)
    return url


def seed_demo(url: str) -> None:
    """Load the demo data set into the database."""

    async def run() -> None:
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as session, session.begin():
            await seed(session, DEMO_PASSWORD)
        await engine.dispose()

    asyncio.run(run())


# A fixed VAPID key for test apps (generate_vapid_keys(); a test key, not a secret).
TEST_VAPID_PRIVATE_KEY = "kCPdAZQ4NXRvr1Iv1IwNhAvS1QvaJdr6W5uOjXDmoeQ"


def make_settings(url: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test app."""
    base: dict[str, Any] = {
        "database_url": url,
        "secret_key": "test-secret-key-not-for-production-0123456789",
        "var_dir": tmp,
        "media_dir": tmp / "media",
        "demo_password": DEMO_PASSWORD,
        # The shared app's users sign in once per session: their tokens must outlive a whole
        # run on a loaded machine (a 15-minute token expired mid-run and failed later tests).
        "access_ttl_s": 6 * 3600,
        # The loopback Web Push receivers are listed as an operator lists test hosts.
        "push_test_hosts": ("127.0.0.1",),
        # So are the loopback "other authorities" whose CAP feeds are polled.
        "alert_feed_test_hosts": ("127.0.0.1",),
        "vapid_private_key": TEST_VAPID_PRIVATE_KEY,
    }
    base.update(overrides)
    return Settings(**base)


def drop_scratch_databases() -> None:
    """Drop the databases `scratch_postgres` made in this process (tests and benchmarks)."""

    async def run(url: str, name: str) -> None:
        engine = make_engine(url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await engine.dispose()

    while _created_databases:
        asyncio.run(run(*_created_databases.pop()))


@pytest.fixture(scope="session", autouse=True)
def _drop_scratch_databases() -> Iterator[None]:
    """Remove this session's PostgreSQL databases when the session ends."""
    yield
    drop_scratch_databases()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' or 'postgis'."""
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database with the demo data, one per backend per test session; every test
    that uses it finds it as the shared app left it after start-up (see `shared_app`)."""
    url = fresh_database(backend, tmp_path_factory.mktemp(f"db-{backend}"))
    seed_demo(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the shared test app."""
    return make_settings(database_url, tmp_path_factory.mktemp("var"))


class Sessions:
    """Logs users in once and hands out their Authorization headers.

    The demo users log in before the shared database's state is captured, so their headers
    stay valid all session; anyone else's are forgotten when the state is restored.
    """

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self._headers: dict[str, dict[str, str]] = {}

    def __call__(self, username: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
        if username not in self._headers:
            r = self.client.post(
                "/api/v1/auth/login",
                json={"username": username, "password": password, "device_id": f"t-{username}"},
            )
            assert r.status_code == 200, r.text
            self._headers[username] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        return self._headers[username]

    def cached(self) -> frozenset[str]:
        return frozenset(self._headers)

    def forget_all_but(self, keep: frozenset[str]) -> None:
        for username in set(self._headers) - keep:
            del self._headers[username]


@dataclass(frozen=True)
class SharedApp:
    """The shared app on the session's database, its logged-in users and captured states."""

    client: TestClient[Any]
    sessions: Sessions
    state: DatabaseState


@pytest.fixture(scope="session")
def shared_app(settings: Settings) -> Iterator[SharedApp]:
    """Start the app, log every demo user in, then capture the state each test restores."""
    with TestClient(app=create_app(settings)) as c:
        sessions = Sessions(c)
        for username, *_ in DEMO_USERS:
            sessions(username)
        state = DatabaseState(settings.database_url, settings.var_dir, sessions)
        try:
            state.capture()
            yield SharedApp(c, sessions, state)
        finally:
            state.close()


@pytest.fixture(scope="session")
def client(shared_app: SharedApp) -> TestClient[Any]:
    """The real app (real database) behind Litestar's test client."""
    return shared_app.client


@pytest.fixture(scope="session")
def auth(shared_app: SharedApp) -> Sessions:
    """`auth("dispatcher")` -> headers for that user (demo users: logged in at start-up)."""
    return shared_app.sessions


@pytest.fixture(scope="session")
def database_state(shared_app: SharedApp) -> DatabaseState:
    """The shared database's captured states (`with database_state.kept():` in a module-scoped
    fixture keeps the data it built for that module's tests)."""
    return shared_app.state


@pytest.fixture(autouse=True)
def _restore_shared_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the shared database leaves it as it found it: after the test, every table
    (and the app's var directory) goes back to the captured state."""
    if "database_url" not in request.fixturenames:
        yield
        return
    state: DatabaseState = request.getfixturevalue("database_state")
    yield
    state.restore()
