"""Every HTTP client the phone core builds (the `PhoneCore`'s, a `Session`'s own, the push/pull
client and the "pull now" listener of an `HttpTransport`) loads the CA bundle only when it makes
its first https request (`transport.verify_tls`), and then verifies the server against it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from mobile.core.phone import PhoneCore
from mobile.core.secret_store import MemorySecretStore
from mobile.core.session import OfflineError, Session
from mobile.core.transport import AsyncTlsOnDemand, HttpTransport, TlsOnDemand
from schemas.sync import PullRequest
from sync.client import TransportError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _contexts(client: httpx.Client | httpx.AsyncClient) -> list[ssl.SSLContext]:
    """The TLS contexts the client's transport has built (httpx keeps each on its httpcore
    connection pool). A stock httpx transport has one, built with the client."""
    transport: Any = client._transport  # type: ignore[union-attr]
    if isinstance(transport, TlsOnDemand | AsyncTlsOnDemand):
        parts: list[Any] = transport.parts.built()
    else:
        parts = [transport]
    return [part._pool._ssl_context for part in parts]


def _cas(client: httpx.Client | httpx.AsyncClient) -> int:
    return sum(ctx.cert_store_stats()["x509_ca"] for ctx in _contexts(client))


def _verifies(client: httpx.Client | httpx.AsyncClient) -> bool:
    return any(
        ctx.verify_mode == ssl.CERT_REQUIRED
        and ctx.check_hostname
        and ctx.cert_store_stats()["x509_ca"]
        for ctx in _contexts(client)
    )


def _listen(transport: HttpTransport) -> httpx.AsyncClient:
    """Open the transport's "pull now" stream (nothing listens there: it fails) and return the
    listener's client."""

    async def listen() -> httpx.AsyncClient:
        with pytest.raises(TransportError):
            async for _ in transport.events():
                pass
        assert transport._events is not None
        return transport._events

    return asyncio.run(listen())


def _clients(tmp_path: Path, url: str) -> dict[str, httpx.Client | httpx.AsyncClient]:
    """Each client after a request to `url` made the way the app makes it."""
    core = PhoneCore(tmp_path / "core", MemorySecretStore())
    with pytest.raises(OfflineError):
        core.sign_in(url, "someone", "secret")
    session = Session(tmp_path / "session", MemorySecretStore())
    with pytest.raises(OfflineError):
        session.login(url, "someone", "secret")
    transport = HttpTransport(url, "token", timeout_s=1.0)
    with pytest.raises(TransportError):
        asyncio.run(transport.pull(PullRequest(schema_version=1, device_id="d")))
    return {
        "phone core": core.http,
        "session": session.http,
        "push/pull": transport.client,
        "listener": _listen(transport),
    }


def test_clients_of_an_http_server_load_no_ca_bundle(tmp_path: Path) -> None:
    clients = _clients(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    assert {name: _cas(c) for name, c in clients.items()} == dict.fromkeys(clients, 0)


def test_clients_of_an_https_server_verify_it_against_the_ca_bundle(tmp_path: Path) -> None:
    clients = _clients(tmp_path, f"https://127.0.0.1:{_closed_port()}")
    assert {name: _verifies(c) for name, c in clients.items()} == dict.fromkeys(clients, True)


def test_one_client_loads_the_bundle_at_its_first_https_request() -> None:
    with httpx.Client(timeout=1.0, transport=TlsOnDemand()) as client:
        for scheme, cas in (("http", 0), ("https", 1)):
            with pytest.raises(httpx.ConnectError):
                client.get(f"{scheme}://127.0.0.1:{_closed_port()}/")
            assert (_cas(client) > 0) == bool(cas), scheme
