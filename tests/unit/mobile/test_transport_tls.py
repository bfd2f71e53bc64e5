"""The phone's transport builds a TLS context (the CA bundle loaded) only for an https server:
the "pull now" listener and the push/pull client of an http server load none."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpx
import pytest

from mobile.core.transport import HttpTransport
from sync.client import TransportError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _context(client: httpx.Client | httpx.AsyncClient) -> ssl.SSLContext:
    # httpx keeps the context its transport built on the connection pool (httpcore).
    pool: Any = client._transport._pool  # type: ignore[union-attr]
    return pool._ssl_context  # type: ignore[no-any-return]


def _cas(url: str) -> tuple[int, int]:
    """CA certificates loaded by the listener's client and by the push/pull client."""
    transport = HttpTransport(url, "token", timeout_s=1.0)

    async def listen() -> None:
        with pytest.raises(TransportError):  # nothing listens there: the client is built
            async for _ in transport.events():
                pass
        assert transport._events is not None
        listener = _context(transport._events)
        counts.append(listener.cert_store_stats()["x509_ca"])
        await transport.aclose()

    counts: list[int] = []
    asyncio.run(listen())
    return counts[0], _context(transport.client).cert_store_stats()["x509_ca"]


def test_an_http_server_gets_no_tls_context() -> None:
    assert _cas(f"http://127.0.0.1:{_closed_port()}") == (0, 0)


def test_an_https_server_is_verified_against_the_ca_bundle() -> None:
    listener, client = _cas(f"https://127.0.0.1:{_closed_port()}")
    assert listener > 0 and client > 0
