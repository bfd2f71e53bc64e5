"""The OpenAPI document declares what each route can really answer (server/openapi.py).

Pure: the app is built (no database is opened) and its document read. The schemathesis suite
(tests/integration/test_schemathesis.py) checks the same document against the running server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import msgspec
import pytest
from litestar import Controller, Litestar, Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from schemas.common import Point, Polygon, ProblemDetails, ProblemField, Role
from schemas.hazards import HazardCreate
from schemas.sync import PushRequest
from server.app import create_app
from server.auth.middleware import EXCLUDE_REGEX
from server.auth.principal import Principal
from server.errors import PROBLEM_JSON, Conflict
from server.openapi import (
    REF_TEMPLATE,
    answers_for,
    document_app,
    function_facts,
    handler_facts,
    is_public,
)
from server.scope import require
from tests.conftest import make_settings

PROBLEM_REF = "#/components/schemas/ProblemDetails"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    return create_app(make_settings(f"sqlite+aiosqlite:///{tmp}/unused.db", tmp))


@pytest.fixture(scope="module")
def doc(app: Litestar) -> dict[str, Any]:
    return app.openapi_schema.to_schema()


def operations(app: Litestar) -> Iterator[tuple[HTTPRoute, str, HTTPRouteHandler]]:
    """Every documented (route, method, handler) of the app."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if handler.resolve_include_in_schema():
                yield route, str(method), handler


def test_every_operation_declares_every_status_it_can_answer(
    app: Litestar, doc: dict[str, Any]
) -> None:
    """What the code can raise or set (handler_facts), and what its mounting implies, is
    declared; only 500 (a bug) is not."""
    seen = 0
    for route, method, handler in operations(app):
        op = doc["paths"][route.path_format][method.lower()]
        declared = {int(s) for s in op["responses"]}
        derived = answers_for(handler, route, method, EXCLUDE_REGEX)
        raised = set(handler_facts(handler).statuses) - {500}
        missing = (derived | raised) - declared
        assert not missing, f"{op['operationId']} does not declare {sorted(missing)}"
        seen += 1
    assert seen > 80


def test_errors_are_problem_details_and_private_routes_answer_401(
    app: Litestar, doc: dict[str, Any]
) -> None:
    for route, method, _handler in operations(app):
        op = doc["paths"][route.path_format][method.lower()]
        name = op["operationId"]
        for status, answer in op["responses"].items():
            if int(status) < 400 or status == "426":
                continue
            if method == "HEAD":
                assert "content" not in answer, name  # a HEAD answer has no body
            else:
                assert answer["content"] == {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}, name
        if is_public(route.path, EXCLUDE_REGEX):
            assert op["security"] == [], name  # no token is asked for
        else:
            assert "401" in op["responses"], name
            assert "security" not in op, name  # the document-wide bearer token applies


def test_problem_details_schema_is_what_errors_emit(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["ProblemDetails"]
    assert set(schema["properties"]) == set(ProblemDetails.__struct_fields__)
    assert set(schema["required"]) == {"title", "status"}
    field = doc["components"]["schemas"]["ProblemField"]
    assert set(field["properties"]) == set(ProblemField.__struct_fields__)


def test_known_answers(doc: dict[str, Any]) -> None:
    """Spot checks of what the analysis must find, by operation."""
    ops = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}

    def statuses(name: str) -> set[str]:
        return set(ops[name]["responses"])

    # require(...) -> 403, crud.get_visible -> 404, a JSON body -> 400/413/415, InvalidInput 422
    assert {"201", "200", "400", "401", "403", "404", "409", "413", "415", "422"} <= statuses(
        "CreateIncident"
    )
    assert {"200", "401", "429"} <= statuses("Login")
    assert ops["Login"]["security"] == []
    assert ops["Login"]["responses"]["429"]["headers"]["Retry-After"]
    assert {"200", "503"} <= statuses("Readyz")
    # tus: the version header on every answer, its statuses, its request headers
    head = ops["GetUploadOffset"]
    assert {"200", "401", "404", "410", "412"} <= statuses("GetUploadOffset")
    assert all("Tus-Resumable" in a["headers"] for a in head["responses"].values())
    assert {"Upload-Offset", "Upload-Length", "Media-Id"} <= set(
        head["responses"]["200"]["headers"]
    )
    params = {p["name"]: p for p in ops["PatchUpload"]["parameters"]}
    assert params["Upload-Offset"]["required"] and params["Tus-Resumable"]["required"]
    assert "application/offset+octet-stream" in ops["PatchUpload"]["requestBody"]["content"]
    assert "Location" in ops["CreateUpload"]["responses"]["201"]["headers"]
    assert "460" in statuses("PatchUpload")  # checksum mismatch
    # sync: bodies decoded by hand are described, in both encodings
    push = ops["SyncPush"]
    for mt in ("application/json", "application/msgpack"):
        assert push["requestBody"]["content"][mt]["schema"]["$ref"].endswith("/PushRequest")
        assert push["responses"]["200"]["content"][mt]["schema"]["$ref"].endswith("/PushResponse")
    assert ops["SyncPull"]["responses"]["426"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("/UpgradeRequired")
    # CSV: declared once, without parameters
    csv = ops["IncidentStats"]["responses"]["200"]["content"]
    assert set(csv) == {"application/json", "text/csv"}
    assert set(ops["ListTasks"]["responses"]["200"]["content"]) == {
        "application/json",
        "application/geo+json",
    }
    assert set(ops["GetMediaThumbnail"]["responses"]["200"]["content"]) == {"image/jpeg"}


# -- the analysis itself, on handlers made for the test --------------------------------------


def _helper_that_conflicts() -> None:
    raise Conflict("taken")


def _indirect() -> None:
    _helper_that_conflicts()


class _Probe(Controller):
    path = "/probe"

    @get("/plain", operation_id="ProbePlain")
    async def plain(self) -> str:
        return "ok"

    @post("/deep", operation_id="ProbeDeep", status_code=200)
    async def deep(self, request: Request[Any, Any, Any]) -> str:
        p: Principal = request.user
        require(p, Role.ADMIN)
        _indirect()
        return "ok"


def test_analysis_follows_calls_through_helpers() -> None:
    facts = function_facts(_Probe.deep)
    assert {403, 409} <= facts.statuses  # require() -> Forbidden; two calls down -> Conflict
    assert function_facts(_Probe.plain).statuses == frozenset()


def test_a_route_added_later_is_documented_too(tmp_path: Path) -> None:
    """The mechanism is not a list: a new controller gets its answers without any edit."""
    app = Litestar(route_handlers=[_Probe])
    document_app(app, public_paths=[r"^/probe/plain$"])
    ops = {
        op["operationId"]: op
        for item in app.openapi_schema.to_schema()["paths"].values()
        for op in item.values()
    }
    assert set(ops["ProbeDeep"]["responses"]) >= {"200", "401", "403", "409"}
    assert set(ops["ProbePlain"]["responses"]) == {"200"}
    assert ops["ProbePlain"]["security"] == []


def test_schemas_are_msgspecs_and_every_reference_resolves(doc: dict[str, Any]) -> None:
    """Wire types are described as msgspec validates them (what Litestar's generator loses:
    a point has exactly two numbers, a ring at least four points, unknown fields are refused),
    and the document holds no dangling or unused component."""
    schemas = doc["components"]["schemas"]
    _, expected = msgspec.json.schema_components(
        [Point, Polygon, HazardCreate, PushRequest], ref_template=REF_TEMPLATE
    )
    for name in ("HazardCreate", "PushRequest", "Mutation"):
        assert schemas[name] == _without_nulls(expected[name]), name
    point = schemas["Point"]["properties"]["coordinates"]
    assert point["minItems"] == point["maxItems"] == 2
    # msgspec requires a tag only where it picks a union member: a lone point may omit it
    assert schemas["Point"]["required"] == ["coordinates"]
    unions = [s for s in _dicts(schemas) if "discriminator" in s]
    assert unions  # e.g. a warning's area, Polygon | MultiPolygon
    for union in unions:
        tag = union["discriminator"]["propertyName"]
        assert all(member["required"] == [tag] for member in union["anyOf"])
    assert schemas["HazardCreate"]["additionalProperties"] is False
    referenced = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert referenced == set(schemas)


def test_query_parameters_carry_what_litestar_checks(doc: dict[str, Any]) -> None:
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/hazards"]["get"]["parameters"]}
    assert params["radius_m"] == {"type": "number", "exclusiveMinimum": 0, "description": ANY}
    assert "pattern" in params["near"] and "pattern" in params["bbox"]
    assert all("oneOf" not in schema for schema in params.values())  # absent, never null


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def _without_nulls(value: Any) -> Any:
    """What Litestar's serializer keeps of a schema: it drops keys whose value is None."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
