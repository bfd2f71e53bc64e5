"""Real servers on loopback: moto's S3 API, and the tus core behind a stdlib HTTP server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from media.store import DiskBlobStore, S3BlobStore
from media.tus import UploadManager
from tests.integration.media.tus_http import TusServer, TusState

PART = 5 * 1024 * 1024  # S3's minimum multipart part size


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3BlobStore:
    """A store on a fresh bucket, so tests do not see each other's objects."""
    bucket = f"liandong-{uuid.uuid4().hex[:12]}"
    store = S3BlobStore.connect(
        bucket,
        endpoint_url=s3_endpoint,
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        prefix="media/",
        multipart_threshold=PART,
        part_size=PART,
    )
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture
def tus_server(tmp_path: Path) -> Iterator[TusServer]:
    """The tus core behind a real HTTP server on loopback, storing into a DiskBlobStore."""
    state = TusState(
        manager=UploadManager(tmp_path / "uploads", max_size=20 * 1024 * 1024),
        store=DiskBlobStore(tmp_path / "blobs"),
    )
    server = TusServer(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
