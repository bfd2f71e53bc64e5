"""The combined push-and-pull (`/sync/exchange`): one round trip for a round with something to
push, the same outcome as a push then a pull, lost requests and answers included, and a
fallback to push and pull against a server that has no exchange."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.sync import (
    ExchangeReply,
    ExchangeRequest,
    ExchangeResponse,
    Op,
    PullResponse,
    PushResponse,
    exchange_reply_msgpack,
    exchange_request_msgpack,
    msgpack_encoder,
)
from sync.client import ExchangeUnsupportedError, SyncClient, TransportError
from sync.store import ClientStore
from tests.unit.sync.helpers import LocalTransport, Rig, hazard_fields

pytestmark = pytest.mark.anyio


class ExchangingTransport(LocalTransport):
    """The in-process server behind the wire encoding, with the exchange the HTTP server has:
    the push applied, then the pull answered. `drop("exchange", when)` loses it."""

    exchanges = 0

    async def exchange(self, req: ExchangeRequest) -> ExchangeReply:
        body = msgpack_encoder.encode(req)
        self.sent += len(body)
        self.requests += 1
        self.exchanges += 1
        if self.drop("exchange", "before"):
            raise TransportError("request lost")
        decoded = exchange_request_msgpack.decode(body)
        server = self.rig.server()
        pushed = await server.push(self.user, decoded.push)
        pulled = await server.pull(self.user, decoded.pull)
        assert isinstance(pushed, PushResponse) and isinstance(pulled, PullResponse)
        out = msgpack_encoder.encode(ExchangeResponse(push=pushed, pull=pulled))
        self.received += len(out)
        if self.drop("exchange", "after"):
            raise TransportError("answer lost")
        return exchange_reply_msgpack.decode(out)


class OldServerTransport(LocalTransport):
    """A server older than the client: no exchange (the HTTP transport's 404)."""

    async def exchange(self, req: ExchangeRequest) -> ExchangeReply:
        self.requests += 1
        raise ExchangeUnsupportedError("HTTP 404")


def _write(store: ClientStore, n: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    for rid in ids:
        store.write("hazard", rid, hazard_fields(description=f"h {rid.hex[:6]}"), op=Op.CREATE)
    return ids


def _fresh(rig: Rig) -> ClientStore:
    fresh = ClientStore()
    asyncio.run(SyncClient(fresh, LocalTransport(rig, "b"), exchange=False).sync_once())
    return fresh


def test_a_round_with_edits_is_one_round_trip(rig: Rig) -> None:
    other = ClientStore()
    theirs = _write(other, 2)
    asyncio.run(SyncClient(other, LocalTransport(rig, "b")).sync_once())
    store = ClientStore()
    mine = _write(store, 3)
    transport = ExchangingTransport(rig, "a")
    result = asyncio.run(SyncClient(store, transport).sync_once())
    assert transport.requests == 1 and transport.exchanges == 1
    assert result.accepted == 3 and result.requests == 1
    assert store.pending_count() == 0
    assert set(store.all("hazard")) == set(mine) | set(theirs)  # pushed and pulled in one
    assert store.all("hazard") == _fresh(rig).all("hazard")


def test_nothing_to_push_is_a_plain_pull(rig: Rig) -> None:
    transport = ExchangingTransport(rig, "a")
    asyncio.run(SyncClient(ClientStore(), transport).sync_once())
    assert transport.exchanges == 0 and transport.requests == 1


def test_more_than_one_batch_follows_with_pushes_and_a_full_pull(rig: Rig) -> None:
    store = ClientStore()
    mine = _write(store, 5)
    transport = ExchangingTransport(rig, "a")
    result = asyncio.run(SyncClient(store, transport, push_batch=2).sync_once())
    assert transport.exchanges == 1 and result.accepted == 5
    assert store.pending_count() == 0 and set(store.all("hazard")) == set(mine)


def test_an_older_server_gets_push_and_pull(rig: Rig) -> None:
    store = ClientStore()
    _write(store, 2)
    transport = OldServerTransport(rig, "a")
    client = SyncClient(store, transport)
    asyncio.run(client.sync_once())
    assert client.use_exchange is False and store.pending_count() == 0
    _write(store, 1)
    before = transport.requests
    asyncio.run(client.sync_once())
    assert transport.requests - before == 2  # push, pull: it does not ask again


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moves=st.lists(
        st.tuples(
            st.integers(0, 1),  # which device
            st.integers(0, 3),  # new records
            st.sampled_from([None, "before", "after"]),  # the exchange is lost
        ),
        min_size=1,
        max_size=8,
    ),
    batch=st.integers(1, 4),
)
def test_exchanges_lose_nothing_and_duplicate_nothing(
    moves: list[tuple[int, int, str | None]], batch: int
) -> None:
    rig = Rig()
    stores = [ClientStore(), ClientStore()]
    written: set[uuid.UUID] = set()
    lose: list[str | None] = [None]

    def drop(kind: str, when: str) -> bool:
        if kind == "exchange" and lose[0] == when:
            lose[0] = None
            return True
        return False

    clients = [SyncClient(s, ExchangingTransport(rig, "a", drop), push_batch=batch) for s in stores]
    for device, n, lost in moves:
        written |= set(_write(stores[device], n))
        lose[0] = lost
        try:
            asyncio.run(clients[device].sync_once())
        except TransportError:
            pass
        lose[0] = None  # a round with nothing to push sent no exchange to lose
    for client in clients:  # a quiet round each, nothing lost
        asyncio.run(client.sync_once())
    asyncio.run(clients[0].sync_once())
    server = _fresh(rig).all("hazard")
    assert set(server) == written  # every write arrived, once (ids are the records)
    for s in stores:
        assert s.pending_count() == 0
        assert s.all("hazard") == server


def test_an_exchange_and_the_pulls_after_it_pause_the_collector_once(
    rig: Rig, pauses: list[int]
) -> None:
    other = ClientStore()
    _write(other, 3)
    asyncio.run(SyncClient(other, LocalTransport(rig, "a"), exchange=False).sync_once())
    mine = ClientStore()
    _write(mine, 1)
    transport = ExchangingTransport(rig, "b")
    pauses.clear()
    result = asyncio.run(SyncClient(mine, transport, pull_limit=1).sync_once())
    assert transport.exchanges == 1 and result.requests >= 3, result
    assert pauses == [1]
