"""A caught-up pull reads its scopes' news with their checksums in one query
(`changes_and_checksums`, issue 13): the answer is the one scope-by-scope reads give, whatever
the budget and however much each scope has beyond the read-ahead."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

import sync.server
from schemas.sync import SCHEMA_VERSION, PullRequest, PullResponse
from server.domain.sync.storage import SqlTx
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.sync_helpers import post


def _caught_up(client: TestClient[Any], headers: dict[str, str]) -> dict[str, int]:
    cursors: dict[str, int] = {}
    while True:
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=1000)
        status, reply, _ = post(client, "pull", headers, req)
        assert status == 200 and isinstance(reply, PullResponse), reply
        cursors.update({p.scope: p.cursor for p in reply.scopes})
        if not reply.has_more:
            return cursors


def _answer(client: TestClient[Any], headers: dict[str, str], req: PullRequest) -> Any:
    status, reply, _ = post(client, "pull", headers, req)
    assert status == 200 and isinstance(reply, PullResponse), reply
    return msgspec.structs.replace(reply, hlc=0)


def test_a_pull_reads_its_news_in_one_query_and_answers_as_scope_by_scope(
    client: TestClient[Any], auth: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = auth("dispatcher")
    # News in several of the dispatcher's scopes (tasks: their area and the unit; hazards),
    # twice: after the first, those scopes have cursors past 0 (feeds, not snapshots).
    for _ in range(2):
        cursors = _caught_up(client, d)
        for _ in range(3):
            assert client.post("/api/v1/tasks", headers=d, json=f.task()).status_code == 201
            assert client.post("/api/v1/hazards", headers=d, json=f.hazard()).status_code == 201
    asked: list[list[str]] = []
    many = SqlTx.changes_and_checksums

    async def counted(self: SqlTx, asks: Any, limit: int) -> Any:
        asked.append([scope for scope, _ in asks])
        return await many(self, asks, limit)

    monkeypatch.setattr(SqlTx, "changes_and_checksums", counted)
    answers: dict[tuple[str, int], Any] = {}
    for read_ahead in (100, 2, 1):  # 1 and 2: scopes with more are read again
        monkeypatch.setattr(sync.server, "PREFETCH", read_ahead)
        for limit in (1000, 4, 1):  # the budget cuts pages the read-ahead found
            req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=limit)
            answers[read_ahead, limit] = _answer(client, d, req)
    assert asked and max(map(len, asked)) > 1, "several scopes' news was not read in one query"
    # A scope in the middle of a paginated pull (its base behind its cursor) is not read
    # ahead: its page is long, and the read-ahead would be read again.
    behind = {s: c - 1 for s, c in sorted(cursors.items()) if c > 0}
    assert behind.keys() & {s for asks in asked for s in asks}, "no paging scope had news"
    paging = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, bases=behind)
    asked.clear()
    answers[0, 2000] = _answer(client, d, paging)
    assert not {s for asks in asked for s in asks} & behind.keys(), asked

    async def none(self: SqlTx, asks: Any, limit: int) -> Any:
        return {}, {}

    # Scope by scope, each checksum read on its own, as before.
    monkeypatch.setattr(SqlTx, "changes_and_checksums", none)
    for (read_ahead, limit), got in answers.items():
        req = PullRequest(schema_version=SCHEMA_VERSION, cursors=cursors, limit=limit)
        if read_ahead == 0:
            req = paging
        assert got == _answer(client, d, req), (read_ahead, limit)
    full = answers[100, 1000]
    assert sum(len(p.changes) for p in full.scopes) >= 6 and not full.has_more
    assert answers[100, 1].has_more and answers[1, 4].has_more
