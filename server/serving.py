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
import ctypes
import ctypes.util
import logging
import socket
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from server.config import Settings

if TYPE_CHECKING:
    from litestar import Litestar

log = logging.getLogger("liandong")

APP_FACTORY = "server.serving:create_served_app"
"""What `liandong serve` has uvicorn import in each worker."""

WORKER_HEALTHCHECK_S = 60
"""How long uvicorn's supervisor waits for a worker to answer its ping before killing it as
hung (uvicorn's default: 5 s). A worker busy with a surge, or starting on a loaded machine,
can take longer than 5 s to answer; the default then killed it, dropping every stream it held
(thousands of phones reconnecting at once), and a worker killed before it finished starting
stopped the whole server (seen on a 2-core machine under load, issue 13)."""

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
    every route alike. The event loop is `settings.event_loop`.
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
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_S,
        # Named, never uvicorn's "auto" (which takes uvloop whenever it is installed), so
        # LIANDONG_EVENT_LOOP=asyncio really runs asyncio (server/loops.py).
        "loop": settings.event_loop,
    }


# glibc mallopt(3) parameters.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2


def tune_malloc() -> bool:
    """Keep glibc's allocator from hoarding what a serving process frees (issue 13's soak).

    glibc serves blocks above its mmap threshold with mmap and gives them back when freed, but
    by default it raises the threshold to the size of each such block freed (up to 32 MiB);
    from then on blocks of that size (a decoded photo in an ingest thread, a pull answer) come
    from the heap of the allocating thread's arena, up to eight arenas per core, and stay there
    when freed. A server ingesting photos from many threads grew to 1.27 GB this way while
    Python's own objects stayed under 20 MB (tracemalloc). Fixing the threshold at glibc's
    initial 128 KiB (setting it also stops it moving) and allowing two arenas gives big blocks
    back as soon as they are freed (tests/unit/test_malloc_tuning.py shows both behaviours).
    Returns False where the C library has no `mallopt` (nothing is changed there).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.warning("mallopt refused the allocator settings; RSS may grow under photo load")
    return ok


def create_served_app() -> Litestar:
    """The app as `liandong serve` runs it in each worker: the allocator tuned, then the app
    from the environment."""
    from server.app import create_app

    tune_malloc()
    return create_app()
