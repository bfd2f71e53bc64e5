"""Property-based fuzzing of the whole API from its own OpenAPI document.

Schemathesis generates valid and invalid requests from /schema/openapi.json and checks each
answer: no server error, a declared status code, content type and headers, a body that matches
the declared schema, no operation that ignores its token. Runs with its own database (so its
random logins cannot throttle the other suites), over real HTTP, as the administrator, who
reaches every route. Bounded (examples per operation) and derandomized to fit CI and to fail
the same way every time.
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
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

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
def admin_token(fuzz_url: str) -> str:
    r = httpx.post(
        f"{fuzz_url}/api/v1/auth/login",
        json={"username": "admin", "password": "liandong-demo", "device_id": "fuzz"},
    )
    token: str = r.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def api_schema(fuzz_url: str, admin_token: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzz_url}/schema/openapi.json")

    # Declared as the schema's auth (not a header on each case) so that `ignored_auth` knows
    # the token and checks that each operation refuses a request without it.
    @schema.auth()
    class AdminToken:
        def get(self, case: Any, ctx: Any) -> str:
            return admin_token

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


# The sync event stream never ends by design (tests/integration/test_sync_api.py covers it);
# logout and disable would end the sessions the other examples rely on (test_auth.py).
schema = (
    schemathesis.pytest.from_fixture("api_schema")
    .exclude(path="/api/v1/sync/events")
    .exclude(path="/api/v1/auth/logout")
    .exclude(path_regex=r"/disable$")
)


@schema.parametrize()
@pytest.mark.timeout(900)  # one item for every operation; CI time is budgeted, this guards hangs
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_as_its_document_says(case: Any) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            ignored_auth,
        ]
    )


def test_openapi_document_is_complete(fuzz_app: Litestar) -> None:
    doc = fuzz_app.openapi_schema.to_schema()
    ops = [op for path in doc["paths"].values() for op in path.values()]
    assert all(op.get("operationId") for op in ops)
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids))
    assert all(i[0].isupper() for i in ids)  # PascalCase
    assert "BearerToken" in doc["components"]["securitySchemes"]
