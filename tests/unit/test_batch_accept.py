"""`liandong serve`'s uvloop accepts every waiting connection, not one per turn of its loop
(server/serving.py `serving_uvloop`, `BatchAcceptServer`; issue 13's overload)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from server.serving import ACCEPT_RETRY_S, BatchAcceptServer, serving_uvloop

CLIENTS = 40


class Counted(asyncio.Protocol):
    made: list[asyncio.BaseTransport]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


@contextmanager
def _clients(port: int, n: int) -> Iterator[list[socket.socket]]:
    """`n` connections the kernel has completed and queued for accept."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _busy(loop: asyncio.AbstractEventLoop, turn_s: float) -> list[int]:
    """Keep the loop busy: every turn runs `turn_s` of work (a loaded worker). Returns the
    turn counter."""
    turns = [0]

    def work() -> None:
        turns[0] += 1
        time.sleep(turn_s)
        loop.call_soon(work)

    loop.call_soon(work)
    return turns


def test_a_busy_worker_accepts_all_waiting_connections_at_once() -> None:
    # Stock uvloop (libuv accepts one connection per turn) gets 3-5 of the 40 here.
    loop = serving_uvloop()
    made: list[asyncio.BaseTransport] = []
    Counted.made = made

    async def main() -> None:
        server = await loop.create_server(Counted, "127.0.0.1", 0, backlog=128)
        assert isinstance(server, BatchAcceptServer)
        port = server.sockets[0].getsockname()[1]
        with _clients(port, CLIENTS):
            turns = _busy(loop, 0.02)
            await asyncio.sleep(0.1)
            assert len(made) == CLIENTS, f"{len(made)} accepted in {turns[0]} turns"
            for t in made:
                t.close()
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):  # closed, not left queueing connections
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_out_of_file_descriptors_pauses_accepting_then_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = serving_uvloop()
    made: list[asyncio.BaseTransport] = []
    Counted.made = made
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main() -> None:
        server = await loop.create_server(Counted, "127.0.0.1", 0, backlog=128)
        port = server.sockets[0].getsockname()[1]
        with _clients(port, 10):
            room = len(os.listdir("/proc/self/fd")) + 3
            resource.setrlimit(resource.RLIMIT_NOFILE, (room, hard))
            try:
                await asyncio.sleep(0.2)
                stuck = len(made)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert 0 < stuck < 10  # accepted what fit, then paused (no busy spin, no crash)
            await asyncio.sleep(ACCEPT_RETRY_S + 0.5)
            assert len(made) == 10  # resumed once descriptors were free
            for t in made:
                t.close()
        server.close()
        await server.wait_closed()

    with caplog.at_level(logging.ERROR, logger="liandong"):
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    assert any("cannot accept connections" in r.getMessage() for r in caplog.records)
