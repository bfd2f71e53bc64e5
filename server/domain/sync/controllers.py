"""HTTP for sync: push, pull, both in one exchange (msgpack or JSON, gzip), "pull now"
events, conflicts."""

from __future__ import annotations

import asyncio
import gzip
import uuid
import zlib
from collections.abc import AsyncGenerator
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas.common import Input, Role
from schemas.sync import (
    Conflict,
    ExchangeRequest,
    ExchangeResponse,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    UpgradeRequired,
    exchange_request_json,
    exchange_request_msgpack,
    json_encoder,
    msgpack_encoder,
    pull_request_json,
    pull_request_msgpack,
    push_request_json,
    push_request_msgpack,
)
from server.admission import Admission
from server.auth.principal import Principal
from server.domain.sync import services as svc
from server.domain.sync.changelog import SyncRuntime
from server.errors import InvalidInput
from server.openapi import Doc, HeaderDoc
from server.scope import require
from server.strict import UnsupportedMediaType, decode_failure

MSGPACK = "application/msgpack"
JSON = "application/json"
MAX_SYNC_BODY = 64 * 1024 * 1024  # decoded; a 500-mutation batch with photos lists fits
GZIP_MIN = 512  # smaller answers are not worth compressing
KEEPALIVE_S = 15.0


class ConflictResolve(Input):
    """How to resolve: keep the winner, restore the loser, or set `value`."""

    take: Literal["winner", "loser", "value"]
    value: Any = None


_GZIP_BODY = HeaderDoc(
    "Content-Encoding",
    "`gzip` when the body is compressed (any other coding: 415)",
    schema={"type": "string", "enum": ["gzip", "identity"]},
)


def _doc(request: type, reply: type) -> Doc:
    """The OpenAPI description of a sync exchange: decoded here by hand, in JSON or msgpack."""
    return Doc(
        body=request,
        body_media_types=(JSON, MSGPACK),
        answers={200: reply, 426: UpgradeRequired},
        request_headers=(_GZIP_BODY,),
    )


def _body(raw: bytes, request: Request[Any, Any, Any]) -> bytes:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":  # RFC 9110: an unsupported content coding is a 415
        raise UnsupportedMediaType(detail="sync bodies are sent as they are or gzip-encoded")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, MAX_SYNC_BODY + 1)
    except zlib.error as exc:
        raise InvalidInput(N_("body is not valid gzip"), field="body") from exc
    if len(out) > MAX_SYNC_BODY or d.unconsumed_tail:
        raise InvalidInput(N_("decompressed body too large"), field="body")
    return out


def _is_msgpack(request: Request[Any, Any, Any]) -> bool:
    return MSGPACK in request.headers.get("content-type", "")


def _decode(request: Request[Any, Any, Any], raw: bytes, mp: Any, js: Any) -> Any:
    body = _body(raw, request)
    try:
        return (mp if _is_msgpack(request) else js).decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(N_("bad sync message: {reason}"), reason=exc, field="body") from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # Not a message at all: bad bytes, invalid UTF-8, nesting deeper than a decoder goes.
        raise decode_failure(exc) from exc


def _answer(request: Request[Any, Any, Any], reply: Any) -> Response[bytes]:
    accept = request.headers.get("accept", "")
    use_mp = MSGPACK in accept or (JSON not in accept and _is_msgpack(request))
    content = msgpack_encoder.encode(reply) if use_mp else json_encoder.encode(reply)
    headers = {"Vary": "Accept, Accept-Encoding"}
    if len(content) >= GZIP_MIN and "gzip" in request.headers.get("accept-encoding", ""):
        content = gzip.compress(content, 5)
        headers["Content-Encoding"] = "gzip"
    status = 426 if isinstance(reply, UpgradeRequired) else 200
    return Response(
        content=content, media_type=MSGPACK if use_mp else JSON, status_code=status, headers=headers
    )


def _paced(request: Request[Any, Any, Any], req: PullRequest) -> PullRequest:
    """The pull with its limit lowered while the process is busy
    (`server.admission.BUSY_PULL_LIMIT`)."""
    admission: Admission = request.app.state.admission
    limit = admission.pull_limit(req.limit)
    return req if limit == req.limit else msgspec.structs.replace(req, limit=limit)


def _runtime(request: Request[Any, Any, Any]) -> SyncRuntime:
    rt: SyncRuntime = request.app.state.sync
    return rt


class SyncController(Controller):
    """Delta sync (docs/sync-protocol.md). Every route needs the API's bearer token."""

    path = "/api/v1/sync"
    tags = ["sync"]

    @post(
        "/push",
        operation_id="SyncPush",
        request_max_body_size=MAX_SYNC_BODY,
        status_code=200,
        opt={"doc": _doc(PushRequest, PushResponse)},
    )
    async def push(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> Response[bytes]:
        """Apply a batch of mutations exactly once; one ack per mutation (or 426 upgrade)."""
        req: PushRequest = _decode(
            request, await request.body(), push_request_msgpack, push_request_json
        )
        reply = await svc.push(db, _runtime(request), request.user, req, request.app.state.settings)
        return _answer(request, reply)

    @post(
        "/pull",
        operation_id="SyncPull",
        request_max_body_size=MAX_SYNC_BODY,
        status_code=200,
        opt={"doc": _doc(PullRequest, PullResponse)},
    )
    async def pull(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> Response[bytes]:
        """Changes of the user's scopes after the device's cursors (or 426 upgrade)."""
        req: PullRequest = _decode(
            request, await request.body(), pull_request_msgpack, pull_request_json
        )
        reply = await svc.pull(db, _runtime(request), request.user, _paced(request, req))
        return _answer(request, reply)

    @post(
        "/exchange",
        operation_id="SyncExchange",
        request_max_body_size=MAX_SYNC_BODY,
        status_code=200,
        opt={"doc": _doc(ExchangeRequest, ExchangeResponse)},
    )
    async def exchange(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> Response[bytes]:
        """A push, then a pull, in one round trip (or 426 upgrade): what a phone on a slow
        link sends instead of the two."""
        req: ExchangeRequest = _decode(
            request, await request.body(), exchange_request_msgpack, exchange_request_json
        )
        req = msgspec.structs.replace(req, pull=_paced(request, req.pull))
        reply = await svc.exchange(
            db, _runtime(request), request.user, req, request.app.state.settings
        )
        return _answer(request, reply)

    @get(
        "/events",
        operation_id="SyncEvents",
        opt={"doc": Doc(content=("text/event-stream",))},
    )
    async def events(self, request: Request[Principal, Any, Any]) -> ServerSentEvent:
        """Server-Sent Events: `ready` once subscribed, then `pull` (data: changed scopes)
        whenever a commit touches one of the user's scopes; a comment every 15 s."""
        rt = _runtime(request)
        async with request.app.state.sessionmaker() as session:
            scopes = await svc.user_scopes(session, request.user)
        sub = rt.broker.subscribe(scopes)

        async def stream() -> AsyncGenerator[ServerSentEventMessage]:
            try:
                yield ServerSentEventMessage(event="ready", data=str(len(scopes)))
                while True:
                    try:
                        changed = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ServerSentEventMessage(comment="keepalive")
                        continue
                    yield ServerSentEventMessage(event="pull", data=" ".join(sorted(changed)))
            finally:
                rt.broker.unsubscribe(sub)

        return ServerSentEvent(stream())

    @get("/conflicts", operation_id="ListSyncConflicts")
    async def list_conflicts(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        entity: FromQuery[str | None] = None,
        record_id: FromQuery[uuid.UUID | None] = None,
        resolved: FromQuery[bool] = False,
    ) -> list[Conflict]:
        """Values that lost a merge, oldest first (dispatch: of records in their area subtree;
        administrators: all)."""
        require(request.user, Role.DISPATCHER, Role.ADMIN)
        return await svc.list_conflicts(
            db, request.user, entity=entity, record_id=record_id, resolved=resolved
        )

    @post("/conflicts/{conflict_id:uuid}/resolve", operation_id="ResolveSyncConflict")
    async def resolve(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        conflict_id: FromPath[uuid.UUID],
        data: JSONBody[ConflictResolve],
    ) -> Conflict:
        """Keep the winner, restore the loser or set a value; a change syncs out to devices."""
        require(request.user, Role.DISPATCHER, Role.ADMIN)
        return await svc.resolve_conflict(
            db,
            _runtime(request),
            request.user,
            conflict_id,
            data.take,
            data.value,
            request.app.state.settings,
        )
