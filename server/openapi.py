"""The OpenAPI document is the API: every operation declares the answers the server really gives.

Litestar documents a handler's success answer and a generic 400; the rest of what a request can
get back (401 from the auth middleware, 403/404/409/422/429 from the domain errors the handler
or its helpers raise, 415 from the strict JSON hook, tus's own statuses, the content types built
by hand) comes from code the framework cannot see. Rather than a hand-kept list per controller,
which drifts the day someone adds a `raise`, this module derives the answers of every route once,
when the document is built:

- `handler_facts` reads the handler's source and, transitively, the source of every function of
  ours it refers to (services, helpers, dependencies, guards): the statuses of the errors it
  raises (`DomainError.status`, Litestar's `status_code`, tus's `status`), the status codes and
  media types of the responses it builds by hand, and whether it reads a body itself.
- `answers_for` adds what follows from where and how the route is mounted: 401 unless the auth
  middleware excludes the path, 400/413/415 for a JSON body, 400 for parameters Litestar
  validates, 409 for a write (a unique or foreign key refusal, `server.errors`), and what a
  controller's own exception handlers answer (tus errors, refused media).
- `DocumentedOpenAPIPlugin` rewrites each operation's `responses` from that: problem details as
  `application/problem+json` with the `ProblemDetails` schema, no body on HEAD, `Retry-After`
  on 429/503, the extra content types (CSV, GeoJSON, msgpack) and what a handler declares in
  its `opt["doc"]` (`Doc`: a body read by hand, headers, binary content).

`tests/unit/test_openapi_document.py` checks every operation against these facts; the
schemathesis suite (tests/integration/test_schemathesis.py) checks the server against the
document over HTTP.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.datastructures import OpenAPIContext
from litestar._openapi.path_item import create_path_item_for_route, merge_path_item_operations
from litestar._openapi.plugin import OpenAPIPlugin
from litestar._openapi.schema_generation import SchemaCreator
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from litestar.params import BodyKwarg, ParameterKwarg
from litestar.response import Response as LitestarResponse
from litestar.response import ServerSentEvent
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from media.errors import HTTP_STATUS as MEDIA_REJECT_STATUS
from media.errors import MediaRejected
from schemas.common import FeatureCollection, ProblemDetails
from server.errors import PROBLEM_JSON

JSON = "application/json"
GEOJSON = "application/geo+json"
MSGPACK = "application/msgpack"
# Packages whose functions the analysis follows; anything else (Litestar, SQLAlchemy) is opaque.
# `tests` so that the analysis can be tested on handlers made for it.
OURS = frozenset({"server", "media", "schemas", "sync", "push", "i18n", "tests"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# --------------------------------------------------------------------------------------------
# What a handler declares that its code cannot show


@dataclass(frozen=True, slots=True)
class HeaderDoc:
    """A header a request carries or an answer sets."""

    name: str
    description: str
    required: bool = False
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class Doc:
    """Documentation a handler adds through `opt={"doc": Doc(...)}` (controller-level `opt`
    applies to each of its handlers, the handler's own wins).

    body: the type of a body the handler reads by hand, in `body_media_types`;
    answers: the body type of answers built by hand, by status (the success answer included);
    content: success content types whose body is binary (`image/jpeg`, `image/*`);
    request_headers / answer_headers: headers read and set (on success answers);
    every_answer_headers: headers set on every answer, errors included;
    alternatives: the schema type of a success content type other than JSON (by media type);
    raises: exceptions raised where the analysis cannot follow (a method of an object), each
    with every subclass.
    """

    body: Any = None
    body_media_types: tuple[str, ...] = (JSON,)
    body_required: bool = True
    answers: Mapping[int, Any] = field(default_factory=dict)
    content: tuple[str, ...] = ()
    request_headers: tuple[HeaderDoc, ...] = ()
    answer_headers: tuple[HeaderDoc, ...] = ()
    every_answer_headers: tuple[HeaderDoc, ...] = ()
    alternatives: Mapping[str, Any] = field(default_factory=dict)
    raises: tuple[type[BaseException], ...] = ()


def _doc(handler: HTTPRouteHandler) -> Doc:
    doc = handler.opt.get("doc")
    return doc if isinstance(doc, Doc) else Doc()


# Content types a handler may build by hand, and the schema of their body when it differs from
# the JSON answer's (None: the same structure, another encoding).
ALTERNATE_CONTENT: dict[str, Any] = {
    GEOJSON: FeatureCollection,
    MSGPACK: None,
    "text/csv": str,
}
RETRY_AFTER = HeaderDoc(
    "Retry-After", "seconds to wait before trying again", schema={"type": "integer"}
)


# --------------------------------------------------------------------------------------------
# Facts from the code


@dataclass(frozen=True, slots=True)
class Facts:
    """What a function and everything of ours it refers to can answer."""

    statuses: frozenset[int] = frozenset()
    media_types: frozenset[str] = frozenset()
    reads_body: bool = False

    def __or__(self, other: Facts) -> Facts:
        return Facts(
            self.statuses | other.statuses,
            self.media_types | other.media_types,
            self.reads_body or other.reads_body,
        )


NO_FACTS = Facts()
_facts_cache: dict[Any, Facts] = {}


def _is_ours(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".", 1)[0] in OURS


def exception_statuses(cls: type[BaseException]) -> frozenset[int]:
    """The statuses an exception class is answered with (a `raise` names the class it raises:
    its own status, not its subclasses')."""
    if issubclass(cls, MediaRejected):
        return frozenset(MEDIA_REJECT_STATUS.values())
    for attr in ("status", "status_code"):
        value = inspect.getattr_static(cls, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return frozenset({value})
    return frozenset()


def _all_subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _all_subclasses(sub)


class _Resolver:
    """Names in a function's source, resolved in its module (and `self` in its class)."""

    def __init__(self, fn: Any) -> None:
        self.ns: dict[str, Any] = dict(vars(builtins))
        self.ns.update(getattr(fn, "__globals__", {}))
        closure = inspect.getclosurevars(fn).nonlocals if inspect.isfunction(fn) else {}
        self.ns.update(closure)
        qual = getattr(fn, "__qualname__", "").split(".")
        owner = self.ns.get(qual[0]) if len(qual) > 1 else None
        self.owner = owner if isinstance(owner, type) else None

    def resolve(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            if node.id in ("self", "cls"):
                return self.owner
            return self.ns.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            # Only modules and classes: an attribute of an instance may run code.
            if isinstance(base, types.ModuleType | type):
                return inspect.getattr_static(base, node.attr, None)
        return None


def _values(expr: ast.expr, r: _Resolver) -> Iterator[object]:
    """The constants in an expression, and the module-level values of the names in it."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Constant):
            yield node.value
        elif isinstance(node, ast.Name | ast.Attribute):
            yield r.resolve(node)


def _ints(expr: ast.expr, r: _Resolver) -> set[int]:
    return {
        v
        for v in _values(expr, r)
        if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599
    }


def _media_types(expr: ast.expr, r: _Resolver) -> set[str]:
    return {
        v.split(";", 1)[0].strip()
        for v in _values(expr, r)
        if isinstance(v, str) and re.fullmatch(r"[a-z]+/[-+.\w*]+(;.*)?", v)
    }


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, HTTPRouteHandler):
        obj = obj.fn
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return inspect.unwrap(obj) if callable(obj) else obj


def function_facts(fn: Any) -> Facts:
    """Facts of `fn` and, transitively, of every function of ours its source refers to."""
    fn = _unwrap(fn)
    key = getattr(fn, "__code__", fn)
    if key in _facts_cache:
        return _facts_cache[key]
    _facts_cache[key] = NO_FACTS  # a cycle contributes nothing new
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return NO_FACTS
    r = _Resolver(fn)
    statuses: set[int] = set()
    media: set[str] = set()
    reads_body = False
    callees: list[Any] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            cls = r.resolve(target)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                statuses |= exception_statuses(cls)
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "status_code":
                    statuses |= _ints(kw.value, r)
                elif kw.arg == "media_type":
                    media |= _media_types(kw.value, r)
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("body", "stream", "json"):
                base = func.value
                if isinstance(base, ast.Name) and base.id == "request":
                    reads_body = True
        elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            obj = _unwrap(r.resolve(node))
            if (inspect.isfunction(obj) or inspect.ismethod(obj)) and _is_ours(obj):
                callees.append(obj)
    facts = Facts(frozenset(statuses), frozenset(media), reads_body)
    for callee in callees:
        facts |= function_facts(callee)
    _facts_cache[key] = facts
    return facts


def _json_body(handler: HTTPRouteHandler) -> bool:
    param = handler.parsed_fn_signature.parameters.get("data")
    if param is None:
        return False
    kwarg = param.kwarg_definition
    return not (isinstance(kwarg, BodyKwarg) and kwarg.media_type != RequestEncodingType.JSON)


def _has_parameters(handler: HTTPRouteHandler, route: HTTPRoute) -> bool:
    skip = {"self", "request", "state", "data", "db", "settings", "scope", "headers"}
    names = set(handler.parsed_fn_signature.parameters) - skip
    deps = handler.resolve_dependencies()
    names -= set(deps)
    for provider in deps.values():
        sig = getattr(provider, "parsed_fn_signature", None)
        if sig is not None and set(sig.parameters) - skip - set(deps):
            return True
    return bool(names) or bool(route.path_parameters)


def handler_facts(handler: HTTPRouteHandler) -> Facts:
    """Facts of a route handler: its function, its dependencies and its guards."""
    facts = function_facts(handler.fn)
    for provider in handler.resolve_dependencies().values():
        facts |= function_facts(provider.dependency)
    for guard in handler.resolve_guards():
        facts |= function_facts(guard)
    return facts


def is_public(path: str, exclude: Iterable[str]) -> bool:
    """Whether the auth middleware lets `path` through without a token."""
    return any(re.search(pattern, path) for pattern in exclude)


@dataclass(frozen=True, slots=True)
class AppWide:
    """An answer every operation may get from a middleware, except on `exempt` paths."""

    status: int
    description: str
    exempt: tuple[str, ...] = ()
    headers: tuple[HeaderDoc, ...] = ()


def answers_for(
    handler: HTTPRouteHandler,
    route: HTTPRoute,
    method: str,
    public_paths: Iterable[str],
    app_wide: Iterable[AppWide] = (),
) -> set[int]:
    """Every status the route can answer `method` with (500 aside: that is a bug)."""
    facts = handler_facts(handler)
    doc = _doc(handler)
    out = {handler.status_code} | facts.statuses
    for exc in doc.raises:
        for sub in _all_subclasses(exc):
            out |= exception_statuses(sub)
    if not is_public(route.path, public_paths):
        out.add(401)
    if _json_body(handler):
        out |= {400, 413, 415}  # not JSON or not the type; too large; another content type
    if facts.reads_body:
        out |= {400, 413}
    if _has_parameters(handler, route):
        out.add(400)  # Litestar validates path, query and header parameters
    if method in UNSAFE and "db" in handler.resolve_dependencies():
        out.add(409)  # a unique or foreign key refusal (server.errors.integrity_error_handler)
    out |= set(doc.answers)
    for wide in app_wide:
        if not is_public(route.path, wide.exempt):
            out.add(wide.status)
    out.discard(500)
    return out


# --------------------------------------------------------------------------------------------
# The document


DESCRIPTIONS = {
    400: "The request is malformed: a body that is not JSON or not of the declared type, or a "
    "parameter that does not validate (problem details name the field).",
    401: "Missing, expired or revoked credentials.",
    403: "Signed in, but the role or area does not allow this.",
    404: "No such record, or not one this user may see (existence is not revealed).",
    409: "The request clashes with the current state (a transition, a taken unique value, a "
    "reference that does not exist); nothing was applied.",
    412: "A precondition failed (for tus: an unsupported Tus-Resumable version).",
    413: "The body is larger than this endpoint accepts.",
    415: "The body is not in a media type this endpoint reads.",
    422: "Well-formed, but a value is not acceptable (problem details name the field).",
    426: "The client is too old for this server: update the app.",
    429: "Too many attempts: wait for Retry-After seconds.",
    503: "The server is overloaded or a dependency is down: retry after Retry-After seconds.",
}


def _describe(status: int) -> str:
    if status in DESCRIPTIONS:
        return DESCRIPTIONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {460: "Checksum mismatch (tus checksum extension)."}.get(status, "Error")


def _header(doc: HeaderDoc) -> OpenAPIHeader:
    return OpenAPIHeader(
        description=doc.description,
        required=doc.required,
        schema=Schema(**{_snake(k): v for k, v in doc.schema.items()}),
    )


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


REF_TEMPLATE = "#/components/schemas/{name}"
_NOT_WIRE = (type(None), bytes, Any)


@functools.cache
def _is_wire_type(tp: Any) -> bool:
    if tp in _NOT_WIRE or tp is None:
        return False
    try:
        msgspec.json.schema(tp)
    except (TypeError, ValueError):
        return False
    return True


def wire_types(handler: HTTPRouteHandler) -> list[Any]:
    """The types a handler reads and answers that msgspec can describe."""
    out: list[Any] = []
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is not None and _json_body(handler):
        out.append(data.annotation)
    out.append(_success_type(handler))
    doc = _doc(handler)
    out += [doc.body, *doc.answers.values(), *doc.alternatives.values()]
    return [tp for tp in out if _is_wire_type(tp)]


def _success_type(handler: HTTPRouteHandler) -> Any:
    ret = handler.parsed_fn_signature.return_type
    if ret.is_subclass_of(LitestarResponse):
        return ret.inner_types[0].annotation if ret.inner_types else None
    return ret.annotation


class WireSchemas:
    """JSON Schemas of the wire types as msgspec, which decodes and validates them, sees them:
    tuple lengths, constraints on nested items, unknown fields refused, tagged unions. (Litestar's
    own generator loses these, so a client generator or a fuzzer would build requests the
    server refuses.)"""

    def __init__(self, types: Iterable[Any]) -> None:
        self.types = [tp for tp in dict.fromkeys(types) if _is_wire_type(tp)]
        schemas, self.components = msgspec.json.schema_components(
            self.types, ref_template=REF_TEMPLATE
        )
        self.by_type: dict[Any, dict[str, Any]] = dict(zip(self.types, schemas, strict=True))
        _tags_as_decoded(self.components, self.types, list(self.by_type.values()))

    def get(self, tp: Any) -> Any:
        """The schema of `tp` (usually a `$ref`), or None when msgspec cannot describe it."""
        return self.by_type.get(tp)


def _tags_as_decoded(
    components: dict[str, Any], types: Iterable[Any], schemas: list[dict[str, Any]]
) -> None:
    """msgspec requires a struct's tag (GeoJSON's `type`) only where it picks a union member;
    a field of one tagged type, such as a hazard's `location`, takes a point without it. Say
    so: the tag is optional in the struct's schema, required at each union that dispatches on
    it (the members of a schema with a `discriminator`)."""
    tagged = {}
    for tp in _struct_types(types):
        config = tp.__struct_config__
        if config.tag_field is not None:
            tagged[tp.__name__] = config.tag_field
    for name, field_name in tagged.items():
        schema = components.get(name)
        if schema and field_name in schema.get("required", []):
            schema["required"] = [f for f in schema["required"] if f != field_name]
    for schema in _walk([components, schemas]):
        disc = schema.get("discriminator")
        if isinstance(disc, dict):
            for member in schema.get("anyOf", []) + schema.get("oneOf", []):
                if isinstance(member, dict) and "$ref" in member:
                    member["required"] = [disc["propertyName"]]


def _struct_types(types: Iterable[Any]) -> set[type[msgspec.Struct]]:
    """Every Struct type reachable from `types` (fields, unions, containers, generics)."""
    seen: set[type[msgspec.Struct]] = set()
    todo = list(types)
    while todo:
        tp = todo.pop()
        origin = typing.get_origin(tp)
        if origin is not None:
            todo += typing.get_args(tp)
            if isinstance(origin, type) and issubclass(origin, msgspec.Struct):
                todo.append(origin)
            continue
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and tp not in seen:
            seen.add(tp)
            hints = typing.get_type_hints(tp, include_extras=True)
            todo += hints.values()
    return seen


def _walk(value: object) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _refs(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/components/schemas/"):
                yield item.rsplit("/", 1)[1]
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def prune_components(openapi: OpenAPI) -> None:
    """Drop component schemas no operation refers to (directly or through another)."""
    doc = openapi.to_schema()
    schemas = doc.get("components", {}).get("schemas", {})
    seen: set[str] = set()
    todo = list(_refs(doc.get("paths", {})))
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo += _refs(schemas[name])
    kept = openapi.components.schemas or {}
    openapi.components.schemas = {k: v for k, v in sorted(kept.items()) if k in seen}


class DocumentedOpenAPIPlugin(OpenAPIPlugin):
    """Litestar's OpenAPI plugin, completing each operation's answers (module docstring)."""

    __slots__ = ()
    app_wide: tuple[AppWide, ...] = ()
    public_paths: tuple[str, ...] = ()

    def _build_openapi(self) -> OpenAPI:
        # Litestar's own build (litestar/_openapi/plugin.py, 2.x), keeping the context so the
        # extra schemas land in the same registry, under the same names, as the rest.
        config = self.openapi_config
        if config.create_examples:
            from litestar._openapi.schema_generation.examples import ExampleFactory

            ExampleFactory.seed_random(config.random_seed)
        openapi = config.to_openapi_schema()
        context = OpenAPIContext(openapi_config=config, plugins=self.app.plugins.openapi)
        creator = SchemaCreator.from_openapi_context(context, prefer_alias=False)
        path_items: dict[str, PathItem] = {}
        todo: list[tuple[Operation, HTTPRouteHandler, HTTPRoute, str]] = []
        types: list[Any] = [ProblemDetails, *ALTERNATE_CONTENT.values()]
        for route in self.included_routes.values():
            path = route.path_format or "/"
            path_item = create_path_item_for_route(context, route)
            for method, (handler, _) in route.route_handler_map.items():
                operation = getattr(path_item, str(method).lower(), None)
                if isinstance(operation, Operation) and handler.resolve_include_in_schema():
                    todo.append((operation, handler, route, str(method)))
                    types += wire_types(handler)
            if existing := path_items.get(path):
                path_item = merge_path_item_operations(existing, path_item, for_path=path)
            path_items[path] = path_item
        wire = WireSchemas(types)
        for operation, handler, route, verb in todo:
            self._complete(operation, handler, route, verb, creator, wire)
        openapi.paths = path_items
        schemas: dict[str, Any] = context.schema_registry.generate_components_schemas()
        schemas.update(wire.components)
        openapi.components.schemas = schemas
        prune_components(openapi)
        return openapi

    def _complete(
        self,
        op: Operation,
        handler: HTTPRouteHandler,
        route: HTTPRoute,
        method: str,
        creator: SchemaCreator,
        wire: WireSchemas,
    ) -> None:
        if is_public(route.path, self.public_paths):
            op.security = []
        writer = _Answers(op, handler, method, creator, wire, self.app_wide)
        statuses = answers_for(handler, route, method, self.public_paths, self.app_wide)
        op.responses = {str(status): writer.answer(status) for status in sorted(statuses)}
        writer.request()


class _Answers:
    """Writes one operation's answers and request (DocumentedOpenAPIPlugin._complete)."""

    def __init__(
        self,
        op: Operation,
        handler: HTTPRouteHandler,
        method: str,
        creator: SchemaCreator,
        wire: WireSchemas,
        app_wide: tuple[AppWide, ...],
    ) -> None:
        self.op, self.handler, self.method = op, handler, method
        self.creator, self.wire, self.app_wide = creator, wire, app_wide
        self.doc = _doc(handler)
        self.facts = handler_facts(handler)
        self.success = (op.responses or {}).get(str(handler.status_code))

    def schema_of(self, tp: Any) -> Any:
        """msgspec's schema of a wire type; Litestar's for anything else."""
        if tp is bytes:
            return Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        found = self.wire.get(tp)
        if found is not None:
            return found
        return self.creator.for_field_definition(FieldDefinition.from_annotation(tp))

    def _query_parameters(self) -> None:
        kwargs = _query_kwargs(self.handler)
        for param in self.op.parameters or []:
            if isinstance(param, Parameter) and param.param_in == "query":
                _fix_query_parameter(param, kwargs.get(param.name))

    def _headers(self, docs: Iterable[HeaderDoc]) -> dict[str, OpenAPIHeader | Reference]:
        return {h.name: _header(h) for h in docs}

    def answer(self, status: int) -> OpenAPIResponse:
        """The answer with `status`: declared in the handler's Doc, an error, or a success."""
        headers = self._headers(self.doc.every_answer_headers)
        if status in self.doc.answers:
            response = self._declared(status)
        elif status >= 400:
            return self._problem(status, headers)
        else:
            response = self._success(status)
        if status in (204, 304) or self.method == "HEAD" or 300 <= status < 400:
            response.content = None
        if 300 <= status < 400 and status != 304:
            headers["Location"] = _header(HeaderDoc("Location", "where to go"))
        if status < 300:
            headers.update(self._headers(self.doc.answer_headers))
        response.headers = {**(response.headers or {}), **headers} or None
        return response

    def _declared(self, status: int) -> OpenAPIResponse:
        response = OpenAPIResponse(description=_describe(status))
        body = self.doc.answers[status]
        if body is not None and self.method != "HEAD":
            response.content = {JSON: OpenAPIMediaType(schema=self.schema_of(body))}
            self._alternatives(response)
        return response

    def _problem(
        self, status: int, headers: dict[str, OpenAPIHeader | Reference]
    ) -> OpenAPIResponse:
        if status in (429, 503):
            headers[RETRY_AFTER.name] = _header(RETRY_AFTER)
        for wide in self.app_wide:
            if wide.status == status:
                headers.update(self._headers(wide.headers))
        content = None
        if self.method != "HEAD":  # a HEAD answer has no body
            content = {PROBLEM_JSON: OpenAPIMediaType(schema=self.wire.get(ProblemDetails))}
        return OpenAPIResponse(
            description=_describe(status), content=content, headers=headers or None
        )

    def _success(self, status: int) -> OpenAPIResponse:
        success = self.success
        if not isinstance(success, OpenAPIResponse):
            return OpenAPIResponse(description=_describe(status))
        same = status == self.handler.status_code
        response = OpenAPIResponse(
            description=success.description if same else _describe(status),
            content=dict(success.content) if success.content else None,
            headers=dict(success.headers or {}),
        )
        schema = self.wire.get(_success_type(self.handler))
        if schema is not None and response.content and JSON in response.content:
            response.content[JSON] = OpenAPIMediaType(schema=schema)
        content = self.doc.content
        if self.handler.parsed_fn_signature.return_type.is_subclass_of(ServerSentEvent):
            content = content or ("text/event-stream",)
        if content:
            binary = Schema(type=OpenAPIType.STRING)
            response.content = {mt: OpenAPIMediaType(schema=binary) for mt in content}
        else:
            self._alternatives(response)
        return response

    def _alternatives(self, response: OpenAPIResponse) -> None:
        """Content types the handler builds by hand (CSV, GeoJSON, msgpack) besides JSON."""
        content = dict(response.content or {})
        base = content.get(JSON)
        table = {**ALTERNATE_CONTENT, **self.doc.alternatives}
        for mt in sorted(self.facts.media_types | set(self.doc.alternatives)):
            if mt in content or mt not in table:
                continue
            tp = table[mt]
            if tp is None and base is not None:
                content[mt] = OpenAPIMediaType(schema=base.schema)
            elif tp is not None:
                content[mt] = OpenAPIMediaType(schema=self.schema_of(tp))
        response.content = content or None

    def request(self) -> None:
        """The request body (msgspec's schema, or the Doc's body read by hand), query
        parameters as Litestar checks them, and headers."""
        op, doc = self.op, self.doc
        self._query_parameters()
        data = self.handler.parsed_fn_signature.parameters.get("data")
        schema = self.wire.get(data.annotation) if data is not None else None
        if schema is not None and isinstance(op.request_body, RequestBody):
            for media in (op.request_body.content or {}).values():
                media.schema = schema
        if doc.body is not None:
            body = self.schema_of(doc.body)
            op.request_body = RequestBody(
                content={mt: OpenAPIMediaType(schema=body) for mt in doc.body_media_types},
                required=doc.body_required,
            )
        if doc.request_headers:
            params: list[Parameter | Reference] = list(op.parameters or [])
            params += [
                Parameter(
                    name=h.name,
                    param_in="header",
                    required=h.required,
                    description=h.description,
                    schema=Schema(**{_snake(k): v for k, v in h.schema.items()}),
                )
                for h in doc.request_headers
            ]
            op.parameters = params


# Litestar checks these on a query parameter but drops them from the schema of an optional one.
_CONSTRAINTS = {
    "gt": "exclusive_minimum",
    "ge": "minimum",
    "lt": "exclusive_maximum",
    "le": "maximum",
    "pattern": "pattern",
    "min_length": "min_length",
    "max_length": "max_length",
}


def _query_kwargs(handler: HTTPRouteHandler) -> dict[str, ParameterKwarg]:
    """The query parameters' definitions, the handler's and its dependencies'."""
    signatures = [handler.parsed_fn_signature]
    for provider in handler.resolve_dependencies().values():
        sig = getattr(provider, "parsed_fn_signature", None)
        if sig is not None:
            signatures.append(sig)
    out: dict[str, ParameterKwarg] = {}
    for sig in signatures:
        for name, param in sig.parameters.items():
            kwarg = param.kwarg_definition
            if isinstance(kwarg, ParameterKwarg):
                out[kwarg.query or kwarg.name or name] = kwarg
    return out


def _fix_query_parameter(param: Parameter, kwarg: ParameterKwarg | None) -> None:
    """An optional query parameter is absent, never JSON null; keep its value's schema and
    the constraints Litestar enforces on it."""
    schema = param.schema
    if isinstance(schema, Schema) and schema.one_of:
        values = [
            s for s in schema.one_of if not (isinstance(s, Schema) and s.type == OpenAPIType.NULL)
        ]
        if len(values) == 1:
            only = values[0]
            if isinstance(only, Schema):
                only.description = only.description or schema.description
            param.schema = schema = only
    if isinstance(schema, Schema) and kwarg is not None:
        for source, target in _CONSTRAINTS.items():
            if (limit := getattr(kwarg, source, None)) is not None:
                setattr(schema, target, limit)


def document_app(
    app: Litestar, *, public_paths: Iterable[str], app_wide: Iterable[AppWide] = ()
) -> None:
    """Make `app` build its OpenAPI document with every operation's real answers.

    Litestar creates its OpenAPI plugin itself; this swaps the instance's class for the
    subclass above (same slots, one method more), before the document is first built.
    """
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin.__class__ = type(
        "LiandongOpenAPIPlugin",
        (DocumentedOpenAPIPlugin,),
        {
            "__slots__": (),
            "public_paths": tuple(public_paths),
            "app_wide": tuple(app_wide),
        },
    )
