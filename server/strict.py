"""Strict JSON request bodies: the right content type, JSON's own types, no NUL in text.

Litestar converts a handler's `data` from decoded JSON with msgspec's lax rules
(`convert(..., strict=False)` in its signature model and DTO backend), which takes `"5"` for a
number and `1700000000` for a time, and it decodes any content type as JSON. The docs promise
RFC 3339 times and JSON types, and an old phone only ever sent those, so this hook, run before
Litestar extracts the handler's arguments, checks every JSON body against the handler's type
with msgspec's strict rules and refuses what does not pass; Litestar then decodes the same,
valid body as before. Bodies that are not JSON at all (sync's msgpack, tus's offset octets) are
read by handlers without a `data` parameter and are left alone here.
"""

from __future__ import annotations

import re
import typing
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import BodyKwarg, ParameterKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from i18n import N_
from server.errors import MalformedBody

# A JSON string can carry NUL only as the escape \u0000 (a raw control byte is invalid JSON);
# an escaped backslash before `u0000` (`\\u0000`) is text, not NUL: count the backslashes.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
NUL_MESSAGE = N_("text must not contain the NUL character (U+0000)")


class UnsupportedMediaType(HTTPException):
    """The body is not in a media type this endpoint reads (415)."""

    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


def is_json(content_type: str) -> bool:
    """`application/json`, or a `+json` structured suffix (RFC 6839), parameters ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def has_nul(body: bytes) -> bool:
    """Whether a JSON document holds a NUL character in any string (key or value)."""
    return b"\\u0000" in body and _NUL_ESCAPE.search(body) is not None


def decode_failure(exc: Exception) -> MalformedBody:
    """A body that is not JSON (bad UTF-8, a syntax error, nesting too deep to decode) as a 400."""
    if isinstance(exc, RecursionError):
        return MalformedBody(N_("the JSON document is nested too deeply"))
    if isinstance(exc, UnicodeDecodeError):
        return MalformedBody(N_("the body is not valid UTF-8"))
    return MalformedBody(N_("the body is not valid JSON: {reason}"), reason=str(exc))


def _decoder(annotation: Any) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(annotation)
    if dec is None:
        dec = _decoders[annotation] = msgspec.json.Decoder(annotation, strict=True)
    return dec


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    return value


def _valid_with_integral_floats(body: bytes, annotation: Any) -> bool:
    """Whether the body is valid once numbers such as `1280.0` count as integers.

    JSON has one number type, and JSON Schema calls 1280.0 an integer, as do clients that write
    every number with a point; msgspec's strict mode does not (Litestar's decode then takes it
    as 1280). Strings stay strings and numbers stay numbers, which is what strictness is for."""
    try:
        value = _integral_floats_as_ints(msgspec.json.decode(body))
        msgspec.convert(value, annotation, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return False
    return True


def _mentions_datetime(annotation: Any) -> bool:
    if annotation is datetime:
        return True
    return any(_mentions_datetime(arg) for arg in typing.get_args(annotation))


_time_params: dict[int, tuple[tuple[str, bool], ...]] = {}


def _typed_optional(annotation: Any) -> bool:
    """`X | None` where X is not text: `null` is no value of X."""
    args = typing.get_args(annotation)
    return type(None) in args and not any(a is str or a is Any for a in args)


def _query_checks(handler: Any) -> tuple[tuple[str, bool], ...]:
    """(name, is a time) of the query parameters of a handler and its dependencies that are
    times or typed optionals."""
    key = id(handler)
    if key not in _time_params:
        signatures = [handler.parsed_fn_signature]
        signatures += [
            provider.parsed_fn_signature
            for provider in handler.resolve_dependencies().values()
            if getattr(provider, "parsed_fn_signature", None) is not None
        ]
        found: list[tuple[str, bool]] = []
        for sig in signatures:
            for name, param in sig.parameters.items():
                kwarg = param.kwarg_definition
                if name == "data" or (
                    isinstance(kwarg, ParameterKwarg) and (kwarg.header or kwarg.cookie)
                ):
                    continue
                is_time = _mentions_datetime(param.annotation)
                if is_time or _typed_optional(param.annotation):
                    alias = getattr(kwarg, "query", None) or getattr(kwarg, "name", None)
                    found.append((alias or name, is_time))
        _time_params[key] = tuple(found)
    return _time_params[key]


def strict_query(request: Request[Any, Any, Any]) -> None:
    """Query values mean what the document says. Times are RFC 3339 text: Litestar would also
    take a number (`until=0.5`) as seconds since 1970. An optional number, id or choice is
    absent or a value: Litestar would take the text `null` as absent. 400 naming the
    parameter otherwise."""
    for name, is_time in _query_checks(request.route_handler):
        for value in request.query_params.getall(name, []):
            if value == "null":
                raise _bad_query(name, "`null` is not a value; leave the parameter out")
            if is_time:
                try:
                    msgspec.convert(value, datetime, strict=True)
                except msgspec.ValidationError as exc:
                    hint = "(RFC 3339, e.g. 2026-11-28T08:00:00Z)"
                    raise _bad_query(name, f"{exc} {hint}") from exc


def _bad_query(name: str, message: str) -> ValidationException:
    return ValidationException(
        detail="Validation failed", extra=[{"message": message, "key": name}]
    )


async def strict_request(request: Request[Any, Any, Any]) -> None:
    """App-wide `before_request`: a strict query, then a strict JSON body."""
    strict_query(request)
    await strict_json_body(request)


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    """App-wide `before_request`: refuse a JSON endpoint's body unless it is strictly valid.

    415 for a body in another content type (or none), 400 for bytes that are not JSON, a type
    that JSON's own rules do not give (a string for a number, a number for a time), or a NUL
    character in a string, which PostgreSQL cannot store. Returns None: the handler runs.
    """
    if request.method not in _BODY_METHODS:
        return
    param = request.route_handler.parsed_fn_signature.parameters.get("data")
    if param is None:
        return
    kwarg = param.kwarg_definition
    if isinstance(kwarg, BodyKwarg) and kwarg.media_type != RequestEncodingType.JSON:
        return
    body = await request.body()
    if not body:
        return  # Litestar answers a missing required body itself.
    if not is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType(detail=N_("this endpoint reads application/json bodies"))
    try:
        _decoder(param.annotation).decode(body)
    except msgspec.ValidationError as exc:
        if not _valid_with_integral_floats(body, param.annotation):
            raise ValidationException(
                detail="Validation failed", extra=[{"message": str(exc), "key": "body"}]
            ) from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise decode_failure(exc) from exc
    if has_nul(body):
        raise ValidationException(
            detail="Validation failed",
            extra=[{"message": NUL_MESSAGE, "key": "body"}],
        )
