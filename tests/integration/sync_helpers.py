"""Sync test helpers: raw sync requests through the TestClient, and a real device (store,
sync client and the phone's HttpTransport) on top of it."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mobile.core.transport import HttpTransport
from schemas.sync import (
    SCHEMA_VERSION,
    PullRequest,
    PullResponse,
    exchange_reply_json,
    exchange_reply_msgpack,
    json_encoder,
    msgpack_encoder,
    pull_reply_json,
    pull_reply_msgpack,
    push_reply_json,
    push_reply_msgpack,
)
from sync.client import SyncClient, TransportError
from sync.store import ClientStore

MSGPACK = "application/msgpack"
JSON = "application/json"
_FRAMING = ("BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT", "COMMIT", "ROLLBACK")


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements every engine runs while inside, whitespace folded; transaction
    framing (BEGIN, SAVEPOINT, RELEASE) left out, as it differs between the databases."""
    seen: list[str] = []

    def hook(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        folded = " ".join(statement.split())
        if not folded.upper().startswith(_FRAMING):
            seen.append(folded)

    event.listen(Engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", hook)


def post(
    client: TestClient[Any],
    path: str,
    headers: dict[str, str],
    msg: Any,
    *,
    fmt: str = "msgpack",
    gz: bool = False,
) -> tuple[int, Any, dict[str, str]]:
    """POST a sync message; return (status, decoded answer, response headers)."""
    ctype = MSGPACK if fmt == "msgpack" else JSON
    body = msgpack_encoder.encode(msg) if fmt == "msgpack" else json_encoder.encode(msg)
    h = {**headers, "Content-Type": ctype, "Accept": ctype}
    if gz:
        body = gzip.compress(body)
        h["Content-Encoding"] = "gzip"
        h["Accept-Encoding"] = "gzip"
    r = client.post(f"/api/v1/sync/{path}", content=body, headers=h)
    if r.status_code not in (200, 426):
        return r.status_code, r.text, dict(r.headers)
    is_mp = MSGPACK in r.headers["content-type"]
    dec = {
        ("push", True): push_reply_msgpack,
        ("push", False): push_reply_json,
        ("pull", True): pull_reply_msgpack,
        ("pull", False): pull_reply_json,
        ("exchange", True): exchange_reply_msgpack,
        ("exchange", False): exchange_reply_json,
    }[(path, is_mp)]
    return r.status_code, dec.decode(r.content), dict(r.headers)


class TestClientTransport(HttpTransport):
    """The phone's real `HttpTransport` (msgpack, gzip, its error mapping), talking to the app
    through Litestar's TestClient (an `httpx.Client`) instead of a socket.

    `drop` decides per call whether to lose the request ("before") or the answer ("after").
    """

    __test__ = False

    def __init__(
        self, client: TestClient[Any], headers: dict[str, str], fmt: str = "msgpack"
    ) -> None:
        token = headers["Authorization"].removeprefix("Bearer ")
        super().__init__(str(client.base_url), token, fmt=fmt, client=client)
        self.drop: tuple[str, str] | None = None

    def _exchange(self, path: str, msg: Any, mp: Any, js: Any) -> Any:
        kind = path.rsplit("/", 1)[-1]
        when = self._dropped(kind)
        if when == "before":
            self.drop = None
            raise TransportError("request lost")
        reply = super()._exchange(path, msg, mp, js)
        if when == "after":
            self.drop = None
            raise TransportError("answer lost")
        return reply

    def _dropped(self, kind: str) -> str | None:
        """When this request is lost, if it is: an exchange carries a push and a pull, so a
        loss meant for either hits it."""
        if self.drop is None:
            return None
        meant, when = self.drop
        return when if kind in (meant, "exchange") else None


class Phone:
    """A device: the real SQLite store and sync client over the test client."""

    def __init__(self, client: TestClient[Any], headers: dict[str, str]) -> None:
        self.store = ClientStore(device_id=f"phone-{uuid.uuid4().hex[:8]}")
        self.transport = TestClientTransport(client, headers)
        self.client = SyncClient(self.store, self.transport, pull_limit=500)

    def sync(self) -> Any:
        return asyncio.run(self.client.sync_once())

    def get(self, entity: str, rid: uuid.UUID | str) -> dict[str, Any] | None:
        return self.store.get(entity, uuid.UUID(str(rid)))

    def close(self) -> None:
        self.store.close()


def pull_everything(
    client: TestClient[Any], headers: dict[str, str], fmt: str = "msgpack", gz: bool = False
) -> tuple[dict[tuple[str, uuid.UUID], dict[str, Any]], int]:
    """Pull every scope from 0 with raw requests; return merged records and request count."""
    cursors: dict[str, int] = {}
    bases: dict[str, int] = {}
    out: dict[tuple[str, uuid.UUID], dict[str, Any]] = {}
    n = 0
    while True:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, bases=bases, limit=300)
        status, reply, _ = post(client, "pull", headers, req, fmt=fmt, gz=gz)
        n += 1
        assert status == 200, reply
        assert isinstance(reply, PullResponse)
        for page in reply.scopes:
            for ch in page.changes:
                if ch.deleted:
                    out.pop((ch.entity, ch.id), None)
                else:
                    out.setdefault((ch.entity, ch.id), {}).update(ch.fields)
            cursors[page.scope] = page.cursor
            if not page.has_more:
                bases[page.scope] = page.cursor
        if not reply.has_more:
            return out, n
