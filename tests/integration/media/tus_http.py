"""A minimal stdlib HTTP front for `media.tus`, used to test the core with real tus clients.

This is also the reference for the Litestar controller: each handler is the few lines that
docs/media.md prescribes (check version, parse headers, call the manager, answer with its
headers; ingest on completion). It is test code: no auth (the owner comes from a header).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from media import tus
from media.errors import MediaRejected
from media.process import IngestResult, ingest, store_ingested
from media.store import BlobStore

COLLECTION = "/api/v1/uploads/"
READ_SIZE = 64 * 1024


@dataclass
class TusState:
    """What the test can inspect and steer."""

    manager: tus.UploadManager
    store: BlobStore
    results: dict[str, IngestResult] = field(default_factory=dict)
    #: (upload id, Upload-Offset, body bytes the server received) per PATCH
    patches: list[tuple[str, int, int]] = field(default_factory=list)
    #: fault injection: drop the connection after this many body bytes of the next PATCH
    cut_next_patch_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def body_chunks(
    rfile: io.BufferedIOBase, length: int, cut: int | None, seen: list[int]
) -> Iterator[bytes]:
    """Read exactly `length` body bytes; a short read is a client that went away."""
    received = 0
    while received < length:
        want = min(READ_SIZE, length - received)
        if cut is not None:
            if received >= cut:
                raise ConnectionResetError("fault injection: connection cut")
            want = min(want, cut - received)
        chunk = rfile.read(want)
        if not chunk:
            raise ConnectionResetError("client went away mid-body")
        received += len(chunk)
        seen[0] = received
        yield chunk


class TusHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TusServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet

    # -- plumbing

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            # Say so: a client that reuses a connection we are about to close fails its next call.
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _problem(self, status: int, code: str, detail: str, headers: dict[str, str]) -> None:
        body = json.dumps(
            {
                "type": f"urn:liandong:problem:media:{code}",
                "title": "Upload refused",
                "status": status,
                "code": code,
                "detail": detail,
            }
        ).encode()
        headers = {"Tus-Resumable": tus.TUS_VERSION, **headers}
        headers["Content-Type"] = "application/problem+json"
        self._answer(status, headers, body)

    def _upload_id(self) -> str:
        return self.path.removeprefix(COLLECTION).strip("/")

    def _dispatch(self, handler_name: str) -> None:
        try:
            if self.command != "OPTIONS":
                tus.check_version(self.headers.get("Tus-Resumable"))
            getattr(self, handler_name)()
        except tus.TusError as error:
            self._drain()
            self._problem(error.status, type(error).__name__, error.detail, error.headers)
        except MediaRejected as rejected:
            self._problem(rejected.status, rejected.code, rejected.detail, {})
        except ConnectionError:
            self.close_connection = True  # no answer: the connection is gone (or cut on purpose)

    def _drain(self) -> None:
        # An error before the body was read: leave the connection clean for keep-alive.
        length = int(self.headers.get("Content-Length") or 0)
        if length and self.command in ("POST", "PATCH"):
            self.close_connection = True

    @property
    def state(self) -> TusState:
        return self.server.state

    # -- tus

    def do_OPTIONS(self) -> None:
        self._answer(204, self.state.manager.options_headers())

    def do_POST(self) -> None:
        self._dispatch("_create")

    def do_HEAD(self) -> None:
        self._dispatch("_head")

    def do_PATCH(self) -> None:
        self._dispatch("_patch")

    def do_DELETE(self) -> None:
        self._dispatch("_terminate")

    def _create(self) -> None:
        manager = self.state.manager
        length = tus.parse_length(self.headers.get("Upload-Length"))
        metadata = tus.parse_metadata(self.headers.get("Upload-Metadata"))
        owner = self.headers.get("X-Owner")
        body_length = int(self.headers.get("Content-Length") or 0)
        info = manager.create(length, metadata, owner)
        if body_length:  # creation-with-upload
            try:
                tus.check_patch_content_type(self.headers.get("Content-Type"))
                info = self._receive(info.id, 0, body_length, owner)
            except BaseException:
                manager.discard(info.id)  # the client never learnt the URL
                raise
        headers = tus.creation_headers(info)
        headers["Location"] = f"{COLLECTION}{info.id}"
        self._answer(201, headers)

    def _head(self) -> None:
        info = self.state.manager.head(self._upload_id(), self.headers.get("X-Owner"))
        self._answer(200, tus.head_headers(info))

    def _patch(self) -> None:
        tus.check_patch_content_type(self.headers.get("Content-Type"))
        offset = tus.parse_offset(self.headers.get("Upload-Offset"))
        length = int(self.headers.get("Content-Length") or 0)
        info = self._receive(self._upload_id(), offset, length, self.headers.get("X-Owner"))
        self._answer(204, tus.patch_headers(info))

    def _receive(
        self, upload_id: str, offset: int, length: int, owner: str | None
    ) -> tus.UploadInfo:
        state = self.state
        checksum = tus.parse_checksum(self.headers.get("Upload-Checksum"))
        with state.lock:
            cut, state.cut_next_patch_after = state.cut_next_patch_after, None
        seen = [0]
        try:
            info = state.manager.patch(
                upload_id, offset, body_chunks(self.rfile, length, cut, seen), checksum, owner
            )
        finally:
            with state.lock:
                state.patches.append((upload_id, offset, seen[0]))
        if info.is_complete:
            self._complete(info)
        return info

    def _complete(self, info: tus.UploadInfo) -> None:
        manager = self.state.manager
        data = manager.completed_path(info.id).read_bytes()
        try:
            result = ingest(data, info.metadata.get("filetype"))
        except MediaRejected:
            manager.discard(info.id)  # nothing half-stored remains
            raise
        store_ingested(self.state.store, result, data)
        self.state.results[info.id] = result
        manager.discard(info.id)

    def _terminate(self) -> None:
        self.state.manager.terminate(self._upload_id(), self.headers.get("X-Owner"))
        self._answer(204, {"Tus-Resumable": tus.TUS_VERSION})


class TusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: TusState) -> None:
        super().__init__(("127.0.0.1", 0), TusHandler)
        self.state = state

    @property
    def collection_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{COLLECTION}"
