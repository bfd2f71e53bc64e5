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
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.params import BodyKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

# A JSON string can carry NUL only as the escape \u0000 (a raw control byte is invalid JSON);
# an escaped backslash before `u0000` (`\\u0000`) is text, not NUL: count the backslashes.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


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


def decode_failure(exc: Exception) -> ClientException:
    """A body that is not JSON (bad UTF-8, a syntax error, nesting too deep to decode) as a 400."""
    if isinstance(exc, RecursionError):
        detail = "the JSON document is nested too deeply"
    elif isinstance(exc, UnicodeDecodeError):
        detail = "the body is not valid UTF-8"
    else:
        detail = f"the body is not valid JSON: {exc}"
    return ClientException(detail=detail)


def _decoder(annotation: Any) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(annotation)
    if dec is None:
        dec = _decoders[annotation] = msgspec.json.Decoder(annotation, strict=True)
    return dec


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
        raise UnsupportedMediaType(detail="this endpoint reads application/json bodies")
    try:
        _decoder(param.annotation).decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationException(
            detail="Validation failed", extra=[{"message": str(exc), "key": "body"}]
        ) from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise decode_failure(exc) from exc
    if has_nul(body):
        raise ValidationException(
            detail="Validation failed",
            extra=[{"message": "text must not contain the NUL character (U+0000)", "key": "body"}],
        )
