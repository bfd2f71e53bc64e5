"""uvicorn glue for `liandong serve`: TCP_NODELAY on every accepted connection, and the one
rule for forwarded client addresses.

With `--workers N` uvicorn binds the one shared listening socket itself, with protocol 0, and
asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP: the accepted
connections then run with Nagle's algorithm, and a response written in two segments (the
head and the body, as uvicorn's protocols write them) waits for the client's delayed ACK, about
40 ms per request on a kept-alive connection (issue 13). Setting the option when the connection
is made covers every way uvicorn gets its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

KEEP_ALIVE_S = 5
"""How long an idle kept-alive connection stays open (uvicorn's default, kept on purpose).

Measured on 29 November (docs/capacity.md, "Where the overload waited"): with 75 s every
polling phone's connection stayed open, and the same load cost about 12 % more CPU a request
with twice the p99 (SQLite A/B); at twice the capacity on PostGIS the workers served 66
requests a second at p99 3.8 s, against 129 a second at p99 1.5 s with 5 s (both with the batch
accept below). The phone lets its own go sooner (`mobile.core.transport.KEEPALIVE_S`), so the
server never closes a connection just as the phone reuses it."""

HTTP_PROTOCOL = "server.serving:NoDelayHttpToolsProtocol"
"""What `liandong serve` passes as uvicorn's `http`: httptools (llhttp, C) with TCP_NODELAY.
It was h11 before, what uvicorn picks without httptools installed: pure Python, whose parsing
and writing took about 5 % of a worker's CPU in the surge (docs/capacity.md)."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on a TCP transport's socket (others are left alone)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # A connection reset before this point is the protocol's to notice, not ours.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY set on each accepted connection."""

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        """Set TCP_NODELAY, then start the connection as uvicorn does."""
        set_nodelay(transport)
        super().connection_made(transport)


ACCEPT_BATCH = 64
"""Connections a serving process accepts each time its listening socket is ready.

libuv (under uvloop) accepts one connection per turn of the event loop since 2022
(libuv/libuv#3696, on the grounds that the second accept() nearly always finds nothing). Under
load a turn takes tens of milliseconds, so a worker accepted about 60 connections a second and
no more: in the surge benchmark's overload the listening socket's queue stayed full (2,048),
the kernel dropped further handshakes (the phones' TCP retried after 1, 3, 7, 15 s), and
requests waited there half a minute where admission (server/admission.py) could neither see
nor shed them. Accepting what is waiting, up to this many at a time, brings them to admission,
which serves or sheds each at once. asyncio's own loop already accepts in batches (up to the
backlog)."""

ACCEPT_RETRY_S = 1.0
"""How long accepting pauses when the process is out of file descriptors or memory (as
asyncio does), rather than spinning on a socket that stays ready."""


class BatchAcceptServer(asyncio.AbstractServer):
    """A listening socket whose waiting connections are accepted in batches, each then served
    by the loop as `create_server` would (`connect_accepted_socket`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sockets: list[socket.socket],
        batch: int = ACCEPT_BATCH,
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._sockets = sockets
        self._batch = batch
        self._serving = False
        self._starting: set[asyncio.Task[Any]] = set()
        for sock in sockets:
            sock.setblocking(False)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (as `asyncio.Server.sockets`)."""
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the server runs on."""
        return self._loop

    def is_serving(self) -> bool:
        """Whether connections are being accepted."""
        return self._serving

    async def start_serving(self) -> None:
        """Accept from every listening socket whenever it is ready."""
        if not self._serving:
            self._serving = True
            for sock in self._sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def serve_forever(self) -> None:
        """Serve until cancelled (asyncio.Server's API; uvicorn does not use it)."""
        await self.start_serving()
        await self._loop.create_future()

    def close(self) -> None:
        """Stop accepting and close the listening sockets, as asyncio.Server does (open
        connections are the protocol's to end): a stopped server refuses connections rather
        than leaving them queued unanswered."""
        if self._serving:
            self._serving = False
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
        for sock in self._sockets:
            sock.close()

    async def wait_closed(self) -> None:
        """Wait for connections being set up to finish starting."""
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._batch):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.error("cannot accept connections (%s); pausing %.0f s", exc, ACCEPT_RETRY_S)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume, sock)
                return
            task = self._loop.create_task(self._start(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def _resume(self, sock: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:  # the client left before its connection was set up
            conn.close()


def _listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for every address of `host` (as asyncio's create_server)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def serving_uvloop() -> asyncio.AbstractEventLoop:
    """uvloop whose plain TCP servers accept in batches (`ACCEPT_BATCH`): what `liandong
    serve` runs on when the configured loop is uvloop."""
    import uvloop

    class BatchAcceptLoop(uvloop.Loop):
        async def create_server(  # type: ignore[override]
            self,
            protocol_factory: Callable[[], asyncio.BaseProtocol],
            host: str | None = None,
            port: int | None = None,
            *,
            sock: socket.socket | None = None,
            backlog: int = 100,
            ssl: Any = None,
            start_serving: bool = True,
            **kw: Any,
        ) -> asyncio.AbstractServer:
            if ssl is not None or kw:  # TLS is a proxy's job here; anything unusual: libuv's
                libuv: Any = super()
                return await libuv.create_server(  # type: ignore[no-any-return]
                    protocol_factory,
                    host,
                    port,
                    sock=sock,
                    backlog=backlog,
                    ssl=ssl,
                    start_serving=start_serving,
                    **kw,
                )
            if sock is None:
                sockets = _listening_sockets(host, port or 0, backlog)
            else:
                sock.listen(backlog)  # uvicorn's workers get it bound, not listening
                sockets = [sock]
            server = BatchAcceptServer(self, protocol_factory, sockets)
            if start_serving:
                await server.start_serving()
            return server

    return BatchAcceptLoop()


SERVING_LOOPS = {"uvloop": "server.serving:serving_uvloop"}
"""What uvicorn is given as its `loop` for a configured event loop (others by their name)."""


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
        "timeout_keep_alive": KEEP_ALIVE_S,
        # Named, never uvicorn's "auto" (which takes uvloop whenever it is installed), so
        # LIANDONG_EVENT_LOOP=asyncio really runs asyncio (server/loops.py).
        "loop": SERVING_LOOPS.get(settings.event_loop, settings.event_loop),
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
