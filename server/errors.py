"""Typed errors inside, RFC 9457 problem details outside."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import IntegrityError, OperationalError

from schemas.common import Problem, ProblemField

log = logging.getLogger("liandong")
PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """A refusal the client can act on. `status` is the HTTP status it maps to."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        if code:
            self.code = code


class InvalidInput(DomainError):
    """The request is well-formed but a value is not acceptable (422)."""

    status = 422
    code = "invalid"
    title = "Invalid input"


class NotFound(DomainError):
    """No such record, or not one this user may see (404: existence is not leaked)."""

    status = 404
    code = "not_found"
    title = "Not found"


class Forbidden(DomainError):
    """Authenticated, but the role or area does not allow this (403)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class Conflict(DomainError):
    """The request clashes with the current state (409), e.g. an illegal status transition."""

    status = 409
    code = "conflict"
    title = "Conflict"


class Unauthenticated(DomainError):
    """Missing, expired or revoked credentials (401)."""

    status = 401
    code = "unauthenticated"
    title = "Unauthenticated"


class TooManyRequests(DomainError):
    """Throttled (429); `retry_after` seconds until trying again makes sense."""

    status = 429
    code = "throttled"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    title: str,
    detail: str | None,
    code: str | None,
    errors: list[ProblemField] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """Build an `application/problem+json` response."""
    body = Problem(
        type=f"https://liandong.invalid/problems/{code}" if code else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        code=code,
        errors=errors,
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _validation_fields(exc: ValidationException) -> list[ProblemField]:
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
        fields.append(ProblemField(field=field, message=message))
    return fields


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    """Map our typed errors to problem details."""
    errors = [ProblemField(field=exc.field, message=exc.detail)] if exc.field else None
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        code=exc.code,
        errors=errors,
        headers=headers,
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Map Litestar's own errors (validation, auth, 404, 405, 413, ...) to problem details."""
    if isinstance(exc, ValidationException):
        fields = _validation_fields(exc)
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields) or exc.detail
        return problem_response(
            request,
            status=exc.status_code,
            title="Invalid request",
            detail=detail,
            code="validation_error",
            errors=fields or None,
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
    return problem_response(
        request,
        status=exc.status_code,
        title=type(exc).__name__.replace("Exception", "") or "Error",
        detail=exc.detail,
        code=code,
        headers=exc.headers,
    )


def integrity_error_handler(
    request: Request[Any, Any, Any], exc: IntegrityError
) -> Response[bytes]:
    """A unique or foreign-key constraint refused the write; the transaction was rolled back."""
    log.info("integrity error on %s: %s", request.url.path, exc.orig)
    return problem_response(
        request,
        status=409,
        title="Conflict",
        detail="the change clashes with an existing record (a unique value is taken or a "
        "referenced record does not exist); nothing was applied",
        code="conflict",
    )


def operational_error_handler(
    request: Request[Any, Any, Any], exc: OperationalError
) -> Response[bytes]:
    """SQLite's write lock stayed taken past its busy timeout: the server is overloaded, not
    broken. Answer 503 `overloaded` with Retry-After, as load shedding does (nothing was
    applied: the transaction never began). Any other operational error is a server error."""
    if "database is locked" not in str(exc.orig):
        return internal_error_handler(request, exc)
    admission = request.app.state.get("admission")
    retry = admission.retry_after() if admission is not None else 10
    log.warning("SQLite busy past its timeout on %s; answered 503", request.url.path)
    return problem_response(
        request,
        status=503,
        title="Service unavailable",
        detail=f"the server is at capacity; try again in {retry} s",
        code="overloaded",
        headers={"Retry-After": str(retry)},
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything unexpected: log it whole, answer without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        title="Internal server error",
        detail="The server could not complete the request; nothing was applied.",
        code="internal_error",
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: domain_error_handler,
    HTTPException: http_error_handler,
    IntegrityError: integrity_error_handler,
    OperationalError: operational_error_handler,
    Exception: internal_error_handler,
}


class ServiceUnavailable(DomainError):
    """A dependency (the database) is not answering (503)."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"
