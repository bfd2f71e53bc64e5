"""Property-based fuzzing of the whole API from its own OpenAPI document: no input makes a 500.

Runs on the embedded backend with its own database (so its random logins cannot throttle the
other suites), as the administrator, who reaches every route. Bounded to fit CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.checks import not_a_server_error

from server.app import create_app
from tests.conftest import fresh_database, make_settings, seed_demo
from tests.servers import serve_in_thread


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = fresh_database("sqlite", tmp)
    seed_demo(url)
    return create_app(make_settings(url, tmp, login_max_failures=10_000))


@pytest.fixture(scope="module")
def fuzz_url(fuzz_app: Litestar) -> Iterator[str]:
    # Real HTTP on loopback: closer to production than an in-process ASGI call.
    with serve_in_thread(fuzz_app) as base:
        yield base


@pytest.fixture(scope="module")
def admin_headers(fuzz_url: str) -> dict[str, str]:
    r = httpx.post(
        f"{fuzz_url}/api/v1/auth/login",
        json={"username": "admin", "password": "liandong-demo", "device_id": "fuzz"},
    )
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def api_schema(fuzz_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_url}/schema/openapi.json")


# The sync event stream never ends by design (tests/integration/test_sync_api.py covers it);
# logout and disable would end the sessions the other examples rely on (test_auth.py).
schema = (
    schemathesis.pytest.from_fixture("api_schema")
    .exclude(path="/api/v1/sync/events")
    .exclude(path="/api/v1/auth/logout")
    .exclude(path_regex=r"/disable$")
)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_a_server_error(case: Any, admin_headers: dict[str, str]) -> None:
    case.headers = {**(case.headers or {}), **admin_headers}
    case.call_and_validate(checks=[not_a_server_error])


def test_openapi_document_is_complete(fuzz_app: Litestar) -> None:
    doc = fuzz_app.openapi_schema.to_schema()
    ops = [op for path in doc["paths"].values() for op in path.values()]
    assert all(op.get("operationId") for op in ops)
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids))
    assert all(i[0].isupper() for i in ids)  # PascalCase
    assert "BearerToken" in doc["components"]["securitySchemes"]
