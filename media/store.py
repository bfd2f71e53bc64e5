"""Where blobs live: the `BlobStore` interface and its two thin adapters, local disk and S3.

Keys are content-addressed: `<kind>/<sha256>`, e.g. `original/9f86d0...`, `display/9f86d0...`
(a derivative is keyed by the hash of the original it was made from, so it is found without a
lookup and re-rendering is idempotent). Both adapters lay a key out the same way,
`<kind>/<h[0:2]>/<h[2:4]>/<h>`, so a disk store can be copied to a bucket as it is.

All methods are blocking. From async code call them in a worker thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol, runtime_checkable

from media.errors import BlobNotFound

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_KEY_RE: Final = re.compile(r"^([a-z][a-z0-9_-]{0,31})/([0-9a-f]{64})$")
_COPY_CHUNK: Final = 1024 * 1024
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"


def original_key(sha256: str) -> str:
    """Key of an original upload."""
    return f"original/{sha256}"


def display_key(sha256: str) -> str:
    """Key of the display derivative of the original with this hash."""
    return f"display/{sha256}"


def thumbnail_key(sha256: str) -> str:
    """Key of the thumbnail derivative of the original with this hash."""
    return f"thumbnail/{sha256}"


def key_path(key: str) -> str:
    """The relative, fanned-out path of a key: `kind/ab/cd/<sha256>`.

    Raises ValueError for anything that is not `<kind>/<64 lower-case hex>`, which also makes
    path traversal through a key impossible.
    """
    match = _KEY_RE.match(key)
    if match is None:
        raise ValueError(f"invalid blob key {key!r}; expected '<kind>/<sha256 hex>'")
    kind, digest = match.groups()
    return f"{kind}/{digest[:2]}/{digest[2:4]}/{digest}"


@runtime_checkable
class BlobStore(Protocol):
    """A place to keep immutable, content-addressed blobs.

    Promises shared by every adapter:
    - a `put_*` of a key that already exists stores nothing and returns False (same key, same
      bytes); a new key returns True once the blob is durable and complete;
    - a reader never sees a partially written blob;
    - `get`, `size` and `iter_chunks` raise `BlobNotFound` for a missing key; `delete` of a
      missing key is a no-op.
    """

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        """Store `data` under `key`; False if the key was already there."""
        ...

    def put_stream(
        self, key: str, stream: BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> bool:
        """Store everything read from `stream` under `key`; False if the key was already there."""
        ...

    def get(self, key: str) -> bytes:
        """The whole blob."""
        ...

    def iter_chunks(self, key: str, chunk_size: int = _COPY_CHUNK) -> Iterator[bytes]:
        """The blob in pieces, for streaming responses. Checks existence before yielding."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the blob is stored (complete)."""
        ...

    def size(self, key: str) -> int:
        """The blob's length in bytes."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob if present."""
        ...

    def url(self, key: str, expires_in: int = 300) -> str | None:
        """A short-lived URL a client may GET directly, or None if the server must stream it."""
        ...


def _fsync_dir(path: Path) -> None:
    # A rename or a new directory entry is durable only once the directory itself is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskBlobStore:
    """Blobs as files under `root`, written atomically: temp file, fsync, rename, fsync dir.

    Temp files live in `root/.tmp` (same filesystem, so the rename is atomic); a crash leaves
    only temp files there, which `sweep_temp` removes. Files are created 0600: originals carry
    the reporter's location and only the server process should read them.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file that holds `key` (which may not exist). For sendfile-style responses."""
        return self.root / key_path(key)

    def _ensure_dir(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for created in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another writer made it first
                created.mkdir()
            _fsync_dir(created.parent)

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        """See `BlobStore.put_bytes`. `content_type` is not kept on disk."""
        return self.put_stream(key, io.BytesIO(data), content_type)

    def put_stream(
        self, key: str, stream: BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> bool:
        """See `BlobStore.put_stream`. The stream is not read when the key exists."""
        final = self.path(key)
        if final.exists():
            return False
        self._ensure_dir(final.parent)
        tmp = self._tmp / f"{final.name}.{secrets.token_hex(8)}"
        try:
            # Created 0600 from the start (no window with umask permissions); O_EXCL because
            # the name must be ours alone.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_COPY_CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            # Two writers racing on one key both hold the same bytes (content addressing), so
            # whichever rename lands last replaces an identical file: harmless.
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return True

    def get(self, key: str) -> bytes:
        """See `BlobStore.get`."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def iter_chunks(self, key: str, chunk_size: int = _COPY_CHUNK) -> Iterator[bytes]:
        """See `BlobStore.iter_chunks`."""
        try:
            handle = self.path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return self._chunks(handle, chunk_size)

    @staticmethod
    def _chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def exists(self, key: str) -> bool:
        """See `BlobStore.exists`."""
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        """See `BlobStore.size`."""
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        """See `BlobStore.delete`."""
        final = self.path(key)
        try:
            final.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(final.parent)

    def url(self, key: str, expires_in: int = 300) -> str | None:
        """Always None: the server streams disk blobs itself (after its own authorisation)."""
        self.path(key)  # still refuse an invalid key
        return None

    def sweep_temp(self, older_than_s: float = 3600.0) -> int:
        """Delete temp files left by crashed writers; returns how many were removed."""
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed


class S3BlobStore:
    """Blobs in an S3 bucket (any S3 API: AWS, MinIO, Ceph, moto) through a boto3 client.

    Objects larger than `multipart_threshold` go up in `part_size` parts (boto3's managed
    transfer), so a 100 MB file never sits in one request; presigned GET URLs let phones and
    browsers fetch originals straight from the bucket for `expires_in` seconds.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = "",
        multipart_threshold: int = 8 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
        max_url_ttl: int = 3600,
    ) -> None:
        # boto3 is imported lazily throughout: a disk-only deployment never pays for loading it.
        from boto3.s3.transfer import TransferConfig

        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.max_url_ttl = max_url_ttl
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=part_size,
            use_threads=False,  # callers already run us in a worker thread
        )

    @classmethod
    def connect(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region_name: str = "us-east-1",
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        prefix: str = "",
        multipart_threshold: int = 8 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
        max_url_ttl: int = 3600,
    ) -> S3BlobStore:
        """Build the boto3 client (SigV4, path-style for non-AWS endpoints) and the store."""
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            config=config,
        )
        return cls(
            client,
            bucket,
            prefix=prefix,
            multipart_threshold=multipart_threshold,
            part_size=part_size,
            max_url_ttl=max_url_ttl,
        )

    def object_key(self, key: str) -> str:
        """The S3 object key for a blob key."""
        return self.prefix + key_path(key)

    def _head(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head["ContentLength"]

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        """See `BlobStore.put_bytes`."""
        return self.put_stream(key, io.BytesIO(data), content_type)

    def put_stream(
        self, key: str, stream: BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> bool:
        """See `BlobStore.put_stream`. Multipart above the threshold; S3 makes it appear whole."""
        if self._head(key) is not None:
            return False
        self.client.upload_fileobj(
            stream,
            self.bucket,
            self.object_key(key),
            ExtraArgs={"ContentType": content_type},
            Config=self._transfer,
        )
        return True

    def get(self, key: str) -> bytes:
        """See `BlobStore.get`."""
        return b"".join(self.iter_chunks(key))

    def iter_chunks(self, key: str, chunk_size: int = _COPY_CHUNK) -> Iterator[bytes]:
        """See `BlobStore.iter_chunks`."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise BlobNotFound(key) from None
            raise
        return response["Body"].iter_chunks(chunk_size)

    def exists(self, key: str) -> bool:
        """See `BlobStore.exists`."""
        return self._head(key) is not None

    def size(self, key: str) -> int:
        """See `BlobStore.size`."""
        length = self._head(key)
        if length is None:
            raise BlobNotFound(key)
        return length

    def delete(self, key: str) -> None:
        """See `BlobStore.delete` (S3 DELETE is already idempotent)."""
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def url(self, key: str, expires_in: int = 300) -> str:
        """A presigned GET URL valid for `expires_in` seconds, at most `max_url_ttl`.

        Short on purpose: whoever holds the URL can read the blob, and originals carry the
        reporter's location. Raises ValueError outside 1..max_url_ttl.
        """
        if not 1 <= expires_in <= self.max_url_ttl:
            raise ValueError(f"expires_in must be within 1..{self.max_url_ttl} seconds")
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.object_key(key)},
            ExpiresIn=expires_in,
        )
