"""Typed errors inside, RFC 9457 problem details outside, in the language the request asks for.

A `DomainError` carries an English message template marked with `i18n.N_` and its parameters
(`InvalidInput(N_("no such hazard: {ids}"), ids=..., field="hazard_ids")`): domain code needs no
request. The exception handlers below pick the language from `Accept-Language`
(`i18n.negotiate`: zh-CN or en, English when none), translate the title, the template and any
`Term` parameter, then format. msgspec's and Litestar's validation messages are matched against
`VALIDATION_MESSAGES` and translated the same way. Machine-readable parts (`type`, `code`, field
names, enum values inside a message) never change with the language. `exc.detail` stays the
English text (logs, sync refusals, the CLI). `tests/unit/test_error_messages.py` fails on a
message that is not marked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

import i18n
from i18n import N_
from schemas.common import Problem, ProblemField

log = logging.getLogger("liandong")
PROBLEM_JSON = "application/problem+json"


class Term(str):
    """A parameter that is itself a marked message (a noun such as `N_("task")`): it is
    translated with the message it goes into. Other parameters (ids, codes, enum values, text
    people typed) are shown as they are."""

    __slots__ = ()


def render(message: str, params: Mapping[str, object], lang: str) -> str:
    """`message` (an English template) in `lang`, formatted with `params`.

    A translation whose placeholders do not fit falls back to the English template rather than
    failing the response (the i18n test checks placeholders, so this is a safety net)."""
    text = i18n.gettext(lang, message)
    if not params:
        return text
    values = {k: i18n.gettext(lang, v) if isinstance(v, Term) else v for k, v in params.items()}
    for template in (text, message):
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            continue
    return message


class DomainError(Exception):
    """A refusal the client can act on. `status` is the HTTP status it maps to.

    `message` is an English template marked with `N_` where it is written; `params` fill its
    `{placeholders}`. `detail` is the English text; `localized(lang)` the text in `lang`."""

    status = 400
    code = "bad_request"
    title = N_("Bad request")

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        **params: object,
    ) -> None:
        self.message = message
        self.params = params
        self.detail = render(message, params, i18n.API_DEFAULT_LANG)
        super().__init__(self.detail)
        self.field = field
        if code:
            self.code = code

    def localized(self, lang: str) -> str:
        """The detail in `lang` (one of `i18n.LANGS`)."""
        return render(self.message, self.params, lang)


class InvalidInput(DomainError):
    """The request is well-formed but a value is not acceptable (422)."""

    status = 422
    code = "invalid"
    title = N_("Invalid input")


class NotFound(DomainError):
    """No such record, or not one this user may see (404: existence is not leaked)."""

    status = 404
    code = "not_found"
    title = N_("Not found")


class Forbidden(DomainError):
    """Authenticated, but the role or area does not allow this (403)."""

    status = 403
    code = "forbidden"
    title = N_("Forbidden")


class Conflict(DomainError):
    """The request clashes with the current state (409), e.g. an illegal status transition."""

    status = 409
    code = "conflict"
    title = N_("Conflict")


class Unauthenticated(DomainError):
    """Missing, expired or revoked credentials (401)."""

    status = 401
    code = "unauthenticated"
    title = N_("Unauthenticated")


class TooManyRequests(DomainError):
    """Throttled (429); `retry_after` seconds until trying again makes sense."""

    status = 429
    code = "throttled"
    title = N_("Too many requests")

    def __init__(self, message: str, *, retry_after: int, **params: object) -> None:
        super().__init__(message, **params)  # type: ignore[arg-type]
        self.retry_after = retry_after


def request_lang(request: Request[Any, Any, Any]) -> str:
    """The language a request asks for (`Accept-Language`; English when none we know)."""
    return i18n.negotiate(request.headers.get("accept-language"))


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    title: str,
    detail: str | None,
    code: str | None,
    errors: list[ProblemField] | None = None,
    headers: dict[str, str] | None = None,
    lang: str | None = None,
) -> Response[bytes]:
    """Build an `application/problem+json` response.

    `title` and `detail` are already in the request's language; pass that language as `lang`
    so the answer says it (`Content-Language`; `Vary: Accept-Language` for caches)."""
    body = Problem(
        type=f"https://liandong.invalid/problems/{code}" if code else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        code=code,
        errors=errors,
    )
    out = dict(headers or {})
    lang = lang or request_lang(request)
    out["Content-Language"] = lang.replace("_", "-")
    out["Vary"] = "Accept-Language"
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=out,
    )


#: msgspec's and Litestar's validation messages, as templates to translate: each pattern's
#: named groups fill the template's placeholders. A message no pattern matches stays English.
VALIDATION_MESSAGES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern, re.S), template)
    for pattern, template in (
        (
            r"Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`",
            N_("Expected `{expected}`, got `{got}`"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` with a timezone component",
            N_("Expected `{type}` with a time zone"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` with no timezone component",
            N_("Expected `{type}` without a time zone"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` of length (?P<op>[<>]=) (?P<bound>\d+)",
            N_("Expected `{type}` of length {op} {bound}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` of length (?P<low>\d+) to (?P<high>\d+)"
            r"(?:, got (?P<got>\d+))?",
            N_("Expected `{type}` of length {low} to {high}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` of at least length (?P<bound>\d+)(?:, got (?P<got>\d+))?",
            N_("Expected `{type}` of length >= {bound}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` of at most length (?P<bound>\d+)(?:, got (?P<got>\d+))?",
            N_("Expected `{type}` of length <= {bound}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` of length (?P<bound>\d+)(?:, got (?P<got>\d+))?",
            N_("Expected `{type}` of length {bound}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` (?P<op>[<>]=?) (?P<bound>\S+)",
            N_("Expected `{type}` {op} {bound}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` that's a multiple of (?P<bound>\S+)",
            N_("Expected `{type}` that is a multiple of {bound}"),
        ),
        (
            r"Expected `(?P<type>[^`]+)` matching regex (?P<pattern>.+)",
            N_("Expected `{type}` matching the pattern {pattern}"),
        ),
        (r"Expected `(?P<type>[^`]+)`", N_("Expected `{type}`")),
        (r"Object missing required field `(?P<name>[^`]+)`", N_("Missing required field `{name}`")),
        (r"Object contains unknown field `(?P<name>[^`]+)`", N_("Unknown field `{name}`")),
        (r"Invalid enum value (?P<value>.+)", N_("Invalid enum value {value}")),
        (r"Invalid value (?P<value>.+)", N_("Invalid value {value}")),
        (r"Invalid RFC3339 encoded datetime", N_("Invalid RFC 3339 date-time")),
        (r"Invalid RFC3339 encoded date", N_("Invalid RFC 3339 date")),
        (r"Invalid RFC3339 encoded time", N_("Invalid RFC 3339 time")),
        (r"Invalid UUID", N_("Invalid UUID")),
        (r"Invalid base64 encoded string", N_("Invalid base64 string")),
        (r"Invalid decimal string", N_("Invalid decimal number")),
        (r"Invalid ISO8601 duration", N_("Invalid ISO 8601 duration")),
        (r"Invalid epoch timestamp", N_("Invalid timestamp")),
        (
            r"(?:Integer value|Number|Duration|Timestamp) (?:is )?out of range",
            N_("Number out of range"),
        ),
        (
            r"text must not contain the NUL character \(U\+0000\)",
            N_("text must not contain the NUL character (U+0000)"),
        ),
        (
            r"Missing required (?P<kind>\w+) parameter '(?P<name>[^']+)' for path (?P<path>.+)",
            N_("Missing required {kind} parameter '{name}' for path {path}"),
        ),
        (
            r"Validation failed for (?P<method>\S+) (?P<path>.+)",
            N_("Validation failed for {method} {path}"),
        ),
        (r"Validation failed", N_("Validation failed")),
        (
            r"`null` is not a value; leave the parameter out",
            N_("`null` is not a value; leave the parameter out"),
        ),
    )
)


def translate_validation(message: str, lang: str) -> str:
    """A validation message (msgspec's or Litestar's English) in `lang`."""
    for pattern, template in VALIDATION_MESSAGES:
        match = pattern.fullmatch(message)
        if match:
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            return render(template, params, lang)
    return message


_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _validation_fields(exc: ValidationException, lang: str) -> list[ProblemField]:
    fields: list[ProblemField] = []
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        key = str(item.get("key", "") or "")
        match = _MSGSPEC_PATH.match(message)
        path = ""
        if match and match.group("path"):
            path = match.group("path").lstrip(".")
            message = match.group("msg")
        field = path or key or "body"
        fields.append(ProblemField(field=field, message=translate_validation(message, lang)))
    return fields


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    """Map our typed errors to problem details, in the request's language."""
    lang = request_lang(request)
    detail = exc.localized(lang)
    errors = [ProblemField(field=exc.field, message=detail)] if exc.field else None
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return problem_response(
        request,
        status=exc.status,
        title=i18n.gettext(lang, exc.title),
        detail=detail,
        code=exc.code,
        errors=errors,
        headers=headers,
        lang=lang,
    )


#: Titles of Litestar's own errors by status (its class names were the titles before).
HTTP_TITLES: Final[dict[int, str]] = {
    400: N_("Bad request"),
    401: N_("Unauthenticated"),
    403: N_("Forbidden"),
    404: N_("Not found"),
    405: N_("Method not allowed"),
    413: N_("Payload too large"),
    415: N_("Unsupported media type"),
    429: N_("Too many requests"),
    500: N_("Internal server error"),
    503: N_("Service unavailable"),
}
#: Litestar's own details (its default phrases), translated when they come as they are.
HTTP_DETAILS: Final = (
    N_("Bad Request"),
    N_("Not Found"),
    N_("Method Not Allowed"),
    N_("Request Entity Too Large"),
    N_("Unsupported Media Type"),
)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Map Litestar's own errors (validation, auth, 404, 405, 413, ...) to problem details."""
    lang = request_lang(request)
    if isinstance(exc, ValidationException):
        fields = _validation_fields(exc, lang)
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields) or translate_validation(
            exc.detail, lang
        )
        return problem_response(
            request,
            status=exc.status_code,
            title=i18n.gettext(lang, N_("Invalid request")),
            detail=detail,
            code="validation_error",
            errors=fields or None,
            lang=lang,
        )
    code = {
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
        429: "throttled",
    }.get(exc.status_code, "http_error")
    if isinstance(exc, NotAuthorizedException):
        code = "unauthenticated"
    elif isinstance(exc, PermissionDeniedException):
        code = "forbidden"
    title = HTTP_TITLES.get(exc.status_code, N_("Error"))
    return problem_response(
        request,
        status=exc.status_code,
        title=i18n.gettext(lang, title),
        detail=i18n.gettext(lang, exc.detail) if exc.detail else exc.detail,
        code=code,
        headers=exc.headers,
        lang=lang,
    )


def integrity_error_handler(
    request: Request[Any, Any, Any], exc: IntegrityError
) -> Response[bytes]:
    """A unique or foreign-key constraint refused the write; the transaction was rolled back."""
    log.info("integrity error on %s: %s", request.url.path, exc.orig)
    lang = request_lang(request)
    return problem_response(
        request,
        status=409,
        title=i18n.gettext(lang, Conflict.title),
        detail=i18n.gettext(
            lang,
            N_(
                "the change clashes with an existing record (a unique value is taken or a "
                "referenced record does not exist); nothing was applied"
            ),
        ),
        code="conflict",
        lang=lang,
    )


OVERLOADED_TITLE: Final = N_("Service unavailable")
OVERLOADED_DETAIL: Final = N_("the server is at capacity; try again in {retry} s")


def overloaded_problem(path: str, retry: int, lang: str) -> Problem:
    """The 503 `overloaded` problem (load shedding, SQLite busy), in `lang`."""
    return Problem(
        type="https://liandong.invalid/problems/overloaded",
        title=i18n.gettext(lang, OVERLOADED_TITLE),
        status=503,
        detail=i18n.gettext(lang, OVERLOADED_DETAIL).format(retry=retry),
        instance=path,
        code="overloaded",
    )


def operational_error_handler(
    request: Request[Any, Any, Any], exc: OperationalError
) -> Response[bytes]:
    """SQLite's write lock stayed taken past its busy timeout: the server is overloaded, not
    broken. Answer 503 `overloaded` with Retry-After, as load shedding does (nothing was
    applied: the transaction never began). A lost connection is `database_error_handler`'s;
    any other operational error is a server error."""
    if exc.connection_invalidated:
        return database_error_handler(request, exc)
    if "database is locked" not in str(exc.orig):
        return internal_error_handler(request, exc)
    log.warning("SQLite busy past its timeout on %s; answered 503", request.url.path)
    return _try_again(request)


def database_error_handler(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[bytes]:
    """The request's database connection broke (PostgreSQL restarted or failed over, a network
    blip, a connection an operator killed). The pool pings only connections idle for a while
    (`server.db`), so a connection dropped moments after its last use fails the request that
    takes it next; SQLAlchemy then replaces every pooled connection. That is the server being
    briefly unable to serve, not a defect: answer 503 with Retry-After, as load shedding does,
    and the phone's client retries (its writes are idempotent by mutation id; a REST create
    retried after a lost commit meets its own id). Any other driver error is a server error."""
    if not exc.connection_invalidated:
        return internal_error_handler(request, exc)
    log.warning(
        "database connection lost on %s %s; answered 503: %s",
        request.method,
        request.url.path,
        exc.orig,
    )
    return _try_again(request)


def _try_again(request: Request[Any, Any, Any]) -> Response[bytes]:
    admission = request.app.state.get("admission")
    retry = admission.retry_after() if admission is not None else 10
    lang = request_lang(request)
    problem = overloaded_problem(request.url.path, retry, lang)
    return problem_response(
        request,
        status=503,
        title=problem.title,
        detail=problem.detail,
        code=problem.code,
        headers={"Retry-After": str(retry)},
        lang=lang,
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything unexpected: log it whole, answer without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    lang = request_lang(request)
    return problem_response(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        title=i18n.gettext(lang, N_("Internal server error")),
        detail=i18n.gettext(
            lang, N_("The server could not complete the request; nothing was applied.")
        ),
        code="internal_error",
        lang=lang,
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: domain_error_handler,
    HTTPException: http_error_handler,
    IntegrityError: integrity_error_handler,
    OperationalError: operational_error_handler,
    DBAPIError: database_error_handler,
    Exception: internal_error_handler,
}


class MalformedBody(DomainError):
    """A body that is not JSON at all: bad syntax, not UTF-8, nested too deeply (400)."""

    status = 400
    code = "http_error"
    title = N_("Bad request")


class ServiceUnavailable(DomainError):
    """A dependency (the database) is not answering (503)."""

    status = 503
    code = "unavailable"
    title = N_("Service unavailable")
