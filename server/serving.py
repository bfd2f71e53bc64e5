"""uvicorn glue for `liandong serve`: TCP_NODELAY on every accepted connection, and the one
rule for forwarded client addresses.

With `--workers N` uvicorn binds the one shared listening socket itself, with protocol 0, and
asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP: the accepted
connections then run with Nagle's algorithm, and a response written in two segments (h11
writes the head and the body separately) waits for the client's delayed ACK, about 40 ms per
request on a kept-alive connection (issue 13). Setting the option when the connection is made
covers every way uvicorn gets its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from server.config import Settings

HTTP_PROTOCOL = "server.serving:NoDelayH11Protocol"
"""What `liandong serve` passes as uvicorn's `http`: h11 (what uvicorn's `auto` picks without
httptools installed) with TCP_NODELAY."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on a TCP transport's socket (others are left alone)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # A connection reset before this point is the protocol's to notice, not ours.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with TCP_NODELAY set on each accepted connection."""

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        """Set TCP_NODELAY, then start the connection as uvicorn does."""
        set_nodelay(transport)
        super().connection_made(transport)


def uvicorn_options(
    settings: Settings, *, host: str, port: int, workers: int, log_level: str
) -> dict[str, Any]:
    """What `liandong serve` passes to `uvicorn.run`.

    X-Forwarded-For is believed only from `settings.trusted_proxies` (uvicorn's own default
    believes any loopback peer, so a client beside the server could pick its address and dodge
    the per-address login throttle); with none listed, the peer address is the client's, for
    every route alike.
    """
    trusted = ",".join(settings.trusted_proxies)
    return {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "http": HTTP_PROTOCOL,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "log_level": log_level,
    }
