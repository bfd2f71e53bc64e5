"""S3BlobStore against moto's S3 server over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from media.errors import BlobNotFound
from media.process import ingest, store_ingested
from media.store import BlobStore, S3BlobStore, display_key, key_path, original_key
from tests.integration.media.conftest import PART
from tests.unit.media import images


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_satisfies_the_protocol(s3_store: S3BlobStore) -> None:
    assert isinstance(s3_store, BlobStore)


def test_small_put_get_exists_size_delete(s3_store: S3BlobStore) -> None:
    data = b"small photo"
    key = original_key(sha(data))
    assert not s3_store.exists(key)
    assert s3_store.put_bytes(key, data, "image/jpeg") is True
    assert s3_store.put_bytes(key, data, "image/jpeg") is False  # stored once
    assert s3_store.exists(key)
    assert s3_store.size(key) == len(data)
    assert s3_store.get(key) == data
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store.object_key(key))
    assert head["ContentType"] == "image/jpeg"
    assert s3_store.object_key(key) == "media/" + key_path(key)
    s3_store.delete(key)
    assert not s3_store.exists(key)
    s3_store.delete(key)
    with pytest.raises(BlobNotFound):
        s3_store.get(key)
    with pytest.raises(BlobNotFound):
        s3_store.size(key)


def test_large_put_goes_multipart(s3_store: S3BlobStore) -> None:
    data = os.urandom(2 * PART + 12345)
    key = original_key(sha(data))
    assert s3_store.put_stream(key, io.BytesIO(data), "image/jpeg") is True
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store.object_key(key))
    # A multipart object's ETag is "<md5 of part md5s>-<part count>".
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(data)
    assert s3_store.get(key) == data
    assert b"".join(s3_store.iter_chunks(key, chunk_size=PART)) == data


def test_small_put_is_a_single_request(s3_store: S3BlobStore) -> None:
    data = os.urandom(PART - 1)
    key = original_key(sha(data))
    s3_store.put_bytes(key, data)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store.object_key(key))
    assert "-" not in head["ETag"]


def test_presigned_url_serves_the_bytes_without_credentials(s3_store: S3BlobStore) -> None:
    data = images.jpeg(32, 32)
    key = original_key(sha(data))
    s3_store.put_bytes(key, data, "image/jpeg")
    url = s3_store.url(key, expires_in=60)
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/jpeg"


def test_presigned_url_is_short_lived(s3_store: S3BlobStore) -> None:
    key = original_key(sha(b"x"))
    s3_store.put_bytes(key, b"x")
    before = datetime.now(UTC).replace(microsecond=0)
    query = parse_qs(urlsplit(s3_store.url(key, expires_in=30)).query)
    # moto does not enforce expiry, so check what AWS/MinIO enforce: the signed validity window.
    assert query["X-Amz-Expires"] == ["30"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((signed_at - before).total_seconds()) <= 5
    assert query["X-Amz-SignedHeaders"] == ["host"]
    for too_long in (0, s3_store.max_url_ttl + 1):
        with pytest.raises(ValueError, match="expires_in"):
            s3_store.url(key, expires_in=too_long)


def test_ingest_and_store_into_s3(s3_store: S3BlobStore) -> None:
    data = images.jpeg(800, 600, exif=images.make_exif(orientation=6, lat=30.0, lon=120.0))
    result = ingest(data, "image/jpeg")
    store_ingested(s3_store, result, data)
    assert s3_store.get(original_key(result.sha256)) == data
    display = httpx.get(s3_store.url(display_key(result.sha256)))
    assert display.content == result.display.data
