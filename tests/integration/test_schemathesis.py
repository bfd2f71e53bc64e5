"""Property-based fuzzing of the whole API from its own OpenAPI document, with every check.

Schemathesis generates valid and invalid requests from /schema/openapi.json and runs every one
of its checks on each answer: no server error; a declared status code, content type and
headers; a body matching the declared schema; invalid data refused and valid data accepted; a
missing required header refused; no operation that ignores its token; 405 with a correct
`Allow` for undeclared methods. Runs on both databases, each with a database of its own (so its
random logins cannot throttle the other suites), over real HTTP, as the administrator, who
reaches every route. Bounded (examples per operation) and derandomized with a fixed seed, to fit
CI and to fail the same way every time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import (
    MISSING_REQUIRED_HEADER_EXPECTED_STATUSES,
    NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
)

from server.app import create_app
from tests.conftest import BACKENDS, fresh_database, make_settings, seed_demo
from tests.servers import serve_in_thread

# Two depths (docs/api.md): `make test` (and CI) fuzzes every operation with a few random cases
# with every check on both databases; `make fuzz` (LIANDONG_FUZZ=full) adds schemathesis'
# coverage phase (every boundary and wrong type of every parameter) and more cases.
FULL = os.environ.get("LIANDONG_FUZZ") == "full"
EXAMPLES = 25 if FULL else 4


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = fresh_database(request.param, tmp, scratch="fuzz")
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


def _with(defaults: list[str], *extra: str) -> dict[str, list[str]]:
    return {"expected-statuses": [*defaults, *extra]}


# Where a check's expectations must differ from schemathesis' defaults, and why.
CONFIG: dict[str, Any] = {
    "seed": 13,
    # The coverage phase (every boundary and every wrong type of every parameter, about 200 s
    # per database here) runs in `make fuzz`; `make test` fuzzes (below).
    "phases": {"coverage": {"enabled": FULL}},
    "generation": {
        # The same cases every run (with the seed and Hypothesis' derandomize below).
        "deterministic": True,
        # The server refuses NUL in every text, wherever it is (PostgreSQL cannot store it;
        # test_hardening proves the refusal); a NUL in a free-form value (`Any`) would turn a
        # valid case into an expected 400.
        "allow-x00": False,
    },
    "checks": {
        # JSON Schema cannot say "this id exists" or "this polygon does not cross itself": the
        # server answers schema-valid but unacceptable input with 422 (docs/api.md). A 400,
        # i.e. a request the document allows but the validator refuses, still fails the check.
        "positive_data_acceptance": _with(POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "422"),
        # An array past its maxItems can be past the body size limit too: 413 is a refusal.
        "negative_data_rejection": _with(NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"),
    },
    "operations": [
        {
            # A message from a client older than the oldest schema version the server speaks
            # is answered 426 with an UpgradeRequired body (docs/sync-protocol.md); the
            # version is a plain integer on the wire so that old clients can decode the answer.
            "include-path-regex": "^/api/v1/sync/(push|pull|exchange)$",
            "checks": {
                "positive_data_acceptance": _with(
                    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "422", "426"
                ),
            },
        },
        {
            # tus 1.0 answers a missing or unknown Tus-Resumable with 412 Precondition Failed,
            # and an Upload-Length past the server's maximum (a setting) with 413. An
            # Upload-Checksum must also hold a digest of its algorithm's length, which no
            # pattern says, and schemathesis' coverage phase sends `Upload-Checksum: 0` as
            # valid despite the declared pattern: 400 counts as a refusal of such a header.
            "include-path-regex": "^/api/v1/uploads",
            "checks": {
                "missing_required_header": _with(MISSING_REQUIRED_HEADER_EXPECTED_STATUSES, "412"),
                "negative_data_rejection": _with(
                    NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "412", "413"
                ),
                "positive_data_acceptance": _with(
                    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "400", "413", "422"
                ),
            },
            # Headers the document does not name are not errors: every request carries some
            # (Authorization, Content-Type, a proxy's).
            "generation": {"allow-extra-parameters": False},
        },
    ],
}


@pytest.fixture(scope="module")
def api_schema(fuzz_url: str, admin_token: str) -> Any:
    schema = schemathesis.openapi.from_url(
        f"{fuzz_url}/schema/openapi.json",
        config=SchemathesisConfig.from_dict(CONFIG),
        timeout=120,  # the document is built on first request; slow on a busy machine
    )

    # Declared as the schema's auth (not a header on each case) so that `ignored_auth` knows
    # the token and checks that each operation refuses a request without it.
    @schema.auth()
    class AdminToken:
        def get(self, case: Any, ctx: Any) -> str:
            return admin_token

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


# tus PATCH bodies are raw bytes under their own media type (docs/media.md).
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
# CAP imports are XML documents read by hand: random bytes are a fair probe of the parser.
schemathesis.serializer.alias("application/cap+xml", "application/octet-stream")

# Event streams never end by design (test_sync_api.py and the residents' tests cover them);
# logout and disable would end the sessions the other examples rely on (test_auth.py).
schema = (
    schemathesis.pytest.from_fixture("api_schema")
    .exclude(path_regex=r"/(events|stream)$")  # event streams (text/event-stream)
    .exclude(path="/api/v1/auth/logout")
    .exclude(path_regex=r"/disable$")
)


@schema.parametrize()
@pytest.mark.timeout(900)  # one item for every operation; CI time is budgeted, this guards hangs
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_as_its_document_says(case: Any) -> None:
    case.call_and_validate()  # every registered check


def test_openapi_document_is_complete(fuzz_app: Litestar) -> None:
    doc = fuzz_app.openapi_schema.to_schema()
    ops = [op for path in doc["paths"].values() for op in path.values()]
    assert all(op.get("operationId") for op in ops)
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids))
    assert all(i[0].isupper() for i in ids)  # PascalCase
    assert "BearerToken" in doc["components"]["securitySchemes"]
