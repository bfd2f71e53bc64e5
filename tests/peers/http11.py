"""A small HTTP/1.1 keep-alive server on an asyncio loop in one background thread, for stand-ins.

Shared by the FCM stand-in and the Web Push receiver. Content-Length bodies, pipelining,
`Connection: close`, `Expect: 100-continue`; JSON answers. Not `http.server`: a thread per
connection and `email`-based header parsing cost ~0.25 ms of CPU per request, which on the
benchmarks' two cores was taken from the code under test. A subclass implements `_respond`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.certs import self_signed

_MAX_HEAD = 64 * 1024  # request line + headers; FCM's front end refuses far less
_MAX_HEADERS = 100


_date_cache: list[tuple[int, bytes]] = [(0, b"")]


def _http_date() -> bytes:
    """The Date header, formatted once a second (its resolution): `formatdate` per answer cost
    a few percent of a receiver's CPU."""
    now = int(time.time())
    second, value = _date_cache[0]
    if second != now:
        value = formatdate(now, usegmt=True).encode("ascii")
        _date_cache[0] = (now, value)
    return value


def loopback_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), as PEM files in `directory`: what a
    stand-in serves https with; clients trust it as their only CA (`SSL_CERT_FILE`,
    `REQUESTS_CA_BUNDLE`, httpx's `verify`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "127.0.0.1", days=7, ip="127.0.0.1")
    cert_path, key_path = directory / "loopback-cert.pem", directory / "loopback-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """The `ssl_context` of a stand-in serving https with `loopback_certificate`'s files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class _Request:
    __slots__ = ("close", "headers", "method", "target")

    def __init__(self, method: str, target: str, headers: dict[str, str], close: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.close = close


class _BadRequest(Exception):
    pass


def _parse_head(head: bytes) -> _Request:
    """Request line and headers (without the blank line); raises `_BadRequest`."""
    lines = head.decode("iso-8859-1").split("\r\n")  # decodes any byte, as http.server does
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"bad request line {lines[0]!r}")
    method, target, version = parts
    if len(lines) - 1 > _MAX_HEADERS:
        raise _BadRequest("too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"bad header line {line!r}")
        # First occurrence wins, as `http.server`'s `headers.get()` did.
        headers.setdefault(name.lower(), value.strip())
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        close = connection != "keep-alive"
    else:
        close = connection == "close"
    return _Request(method, target, headers, close)


class _Connection(asyncio.Protocol):
    """One client connection: parse requests as bytes arrive, answer each with one write."""

    def __init__(self, standin: LoopbackHttpServer) -> None:
        self._standin = standin
        self._buffer = bytearray()
        self._request: _Request | None = None
        self._body_length = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is one without subclassing asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._standin._transports.add(transport)
        self._standin.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._standin._transports.discard(self._transport)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and not self._transport.is_closing():
            if self._request is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > _MAX_HEAD:
                        self._fail(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Header too large")
                    return
                head = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                try:
                    request = _parse_head(head)
                    length = int(request.headers.get("content-length", "0"))
                    if length < 0:
                        raise _BadRequest("negative Content-Length")
                except (_BadRequest, ValueError) as exc:
                    self._fail(HTTPStatus.BAD_REQUEST, str(exc))
                    return
                if "transfer-encoding" in request.headers:
                    # Our clients (requests, httpx) send JSON with a Content-Length.
                    self._fail(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
                    return
                if request.headers.get("expect", "").lower() == "100-continue":
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._request = request
                self._body_length = length
            if len(self._buffer) < self._body_length:
                return
            request, self._request = self._request, None
            body = bytes(self._buffer[: self._body_length])
            del self._buffer[: self._body_length]
            status, answer, headers = self._standin._respond(request, body)
            self._write(status, answer, headers, close=request.close)

    def _fail(self, status: HTTPStatus, message: str) -> None:
        self._write(status.value, self._standin._error_body(status.value, message), {}, close=True)

    def _write(
        self, status: int, body: dict[str, Any], headers: dict[str, str], *, close: bool
    ) -> None:
        transport = self._transport
        if transport is None:
            return
        raw = json.dumps(body).encode()
        head = [
            b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode("ascii")),
            b"Server: " + self._standin.server_name,
            b"Date: " + _http_date(),
            b"Content-Type: application/json; charset=UTF-8",
            b"Content-Length: %d" % len(raw),
        ]
        head.extend(f"{key}: {value}".encode("latin-1") for key, value in headers.items())
        if close:
            head.append(b"Connection: close")
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + raw)
        if close:
            transport.close()


class LoopbackHttpServer:
    """Start/stop (or `with`), `port`; subclasses answer requests in `_respond` (loop thread)."""

    server_name = b"loopback"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transports: set[asyncio.Transport] = set()  # touched on the loop's thread only
        self.connections = 0  # connections ever accepted (tests prove keep-alive with it)
        self.ssl_context: ssl.SSLContext | None = None  # set before start() to serve https

    def _respond(self, request: _Request, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        raise NotImplementedError

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        """The JSON body of a protocol error answer (a malformed request)."""
        return {"error": {"code": status, "message": message}}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        # Bind here, in the caller's thread, so the port is known (and a bind error raised)
        # before start() returns; the loop thread only accepts on it.
        sock = socket.create_server((self._host, self._port), backlog=128)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _Connection(self), sock=sock, backlog=128, ssl=self.ssl_context
                    )
                )
            except BaseException as exc:  # handed to start(), which raises it
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for transport in list(self._transports):
                    transport.abort()
                loop.run_until_complete(server.wait_closed())
                loop.run_until_complete(loop.shutdown_asyncgens())

        thread = threading.Thread(target=serve, name=self.server_name.decode(), daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            loop.close()
            sock.close()
            raise failure[0]
        self._socket, self._loop, self._thread = sock, loop, thread
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()
        if self._socket is not None:
            self._socket.close()
        self._socket = self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._socket is not None, "not started"
        return int(self._socket.getsockname()[1])
