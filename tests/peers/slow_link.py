"""A delay-and-rate TCP proxy on loopback: a poor mobile link between the phone and the server.

Each direction is a link of `rate_bps` bits per second with `delay_s` one-way propagation
delay (300 ms round trip, 256 kbit/s each way: `SlowLink(target, delay_s=0.15,
rate_bps=256_000)`). A chunk read from one side leaves the link when the link is free plus
its serialisation time (`len * 8 / rate`) and arrives `delay_s` later, in order. The link can
also go down: `cut()` drops every open connection and refuses new ones until `restore()` (a
flapping connection), which is how the end-to-end tests break uploads mid-way.

Runs its own asyncio loop in a daemon thread, so tests and benchmarks drive it from blocking
code. Counts bytes each way and connections made.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 1460  # one Ethernet-sized segment: serialisation delay is paced per segment


class SlowLink:
    """A TCP proxy from 127.0.0.1:`port` to `target` (host, port)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay_s: float = 0.0,
        rate_bps: float | None = None,
    ) -> None:
        self.target = target
        self.delay_s = delay_s
        self.rate_bps = rate_bps
        self.port = 0
        self.online = True
        self.connections = 0
        self.bytes_up = 0  # phone -> server
        self.bytes_down = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- control (from any thread) ----------------------------------------------------------
    def start(self) -> SlowLink:
        """Start listening; `url` is then the proxied base URL."""
        self._thread = threading.Thread(target=self._run, name="slow-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("slow link did not start")
        return self

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port> of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """The link goes down: open connections drop, new ones are refused."""
        self.online = False
        self._call(self._close_all)

    def restore(self) -> None:
        """The link is back."""
        self.online = True

    def stop(self) -> None:
        """Close everything and end the thread."""
        if self._loop is None:
            return
        self._call(self._shutdown)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

    def reset_counts(self) -> None:
        """Zero the byte and connection counters."""
        self.bytes_up = self.bytes_down = self.connections = 0

    # -- the loop ---------------------------------------------------------------------------
    def _call(self, fn: object) -> None:
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(serve())
        loop.close()

    def _close_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def _shutdown(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.online:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, up=True),
                self._pump(up_reader, writer, up=False),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        """Carry one direction: pace each segment at the link's rate, deliver it `delay_s`
        after it left, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        free_at = loop.time()
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                now = loop.time()
                if not data:
                    await queue.put((now, b""))
                    break
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                tx = len(data) * 8 / self.rate_bps if self.rate_bps else 0.0
                free_at = max(now, free_at) + tx
                await queue.put((free_at + self.delay_s, data))
                # Back-pressure like a real link: do not read far ahead of the wire.
                ahead = free_at - loop.time()
                if ahead > 0.05:
                    await asyncio.sleep(ahead - 0.05)
            await delivery
        finally:
            delivery.cancel()


@contextmanager
def slow_link(
    target_url: str, *, delay_s: float = 0.0, rate_bps: float | None = None
) -> Iterator[SlowLink]:
    """A `SlowLink` in front of `target_url` (http://host:port) for the `with` block."""
    hostport = target_url.split("://", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    link = SlowLink((host, int(port)), delay_s=delay_s, rate_bps=rate_bps).start()
    try:
        yield link
    finally:
        link.stop()


def measure_rtt(link: SlowLink, samples: int = 3) -> float:
    """Median seconds to open a TCP connection through the link and get one byte back (a
    sanity check that the delay is what was asked)."""
    import socket

    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", link.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.recv(1)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
