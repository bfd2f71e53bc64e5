"""A framework-free core of the tus 1.0.0 resumable upload protocol.

Extensions: creation, creation-with-upload, termination, checksum (sha1, sha256), expiration.
No creation-defer-length and no concatenation: every upload declares its length up front.

The HTTP layer stays thin. Per request it (1) calls `check_version` on `Tus-Resumable` (except
for OPTIONS), (2) parses headers with the `parse_*` helpers, (3) calls one `UploadManager`
method, (4) answers with the status and headers named below, or, on a `TusError`, with
`error.status` and `error.headers` (plus `Tus-Resumable`) and a problem-details body.

- OPTIONS: `manager.options_headers()` -> 204 with those headers.
- POST: `parse_length(Upload-Length)`, `parse_metadata(Upload-Metadata)`,
  `info = manager.create(length, metadata, owner)` -> 201, `Location: <collection><info.id>`,
  `creation_headers(info)`. With a body (creation-with-upload): `check_patch_content_type`,
  `parse_checksum(Upload-Checksum)`, then either `create(..., body=..., checksum=...)` (sync
  body) or `create(...)` + `await patch_async(info.id, 0, stream, checksum, owner)`, calling
  `discard(info.id)` if that raises (the client never learnt the URL).
- HEAD: `manager.head(id, owner)` -> 200, `head_headers(info)`.
- PATCH: `check_patch_content_type`, `parse_offset(Upload-Offset)`,
  `parse_checksum(Upload-Checksum)`, `info = await manager.patch_async(id, offset, stream,
  checksum, owner)` -> 204, `patch_headers(info)`. When `info.is_complete`, first ingest the
  bytes at `manager.completed_path(id)`, then `manager.discard(id)`.
- DELETE: `manager.terminate(id, owner)` -> 204, `Tus-Resumable: 1.0.0`.

Once the bytes are ingested, `manager.finish(id, media_id, sha256)` drops them but keeps the
state until the upload's expiry: HEAD still answers the full offset (and the caller can add the
media id from `info.media_id`), so a client that lost the last answer resumes to "done" without
sending the bytes again. A PATCH to a finished upload is 409 with the full Upload-Offset.

docs/media.md has the full table and the error statuses; tests/integration/media/tus_http.py
is a working stdlib front that real `tuspy` clients are tested against.

Every method is blocking except `patch_async`; run the others in a worker thread if the disk may
be slow. Safe across threads and processes on one host (per-upload `flock`); several hosts need
a shared directory or sticky routing of `/uploads/<id>`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final, Self

import msgspec

from media.errors import MediaError

if TYPE_CHECKING:
    from hashlib import _Hash

TUS_VERSION: Final = "1.0.0"
TUS_EXTENSIONS: Final = (
    "creation",
    "creation-with-upload",
    "termination",
    "checksum",
    "expiration",
)
#: sha1 is the one algorithm the checksum extension makes mandatory; sha256 is the one we want.
CHECKSUM_ALGORITHMS: Final = ("sha1", "sha256")
PATCH_CONTENT_TYPE: Final = "application/offset+octet-stream"
MAX_METADATA_CHARS: Final = 4096
MAX_METADATA_PAIRS: Final = 32

_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")
_METADATA_KEY_RE: Final = re.compile(r"^[!-+\--~]+$")  # visible ASCII except "," (and no space)
_DIGITS_RE: Final = re.compile(r"^[0-9]{1,19}$")


# --------------------------------------------------------------------------------------- errors


class TusError(MediaError):
    """A tus protocol error. `status` and `headers` are exactly what the response must carry."""

    status: int = 400

    def __init__(self, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers: dict[str, str] = {"Tus-Resumable": TUS_VERSION, **(headers or {})}


class TusBadRequest(TusError):
    """400: a malformed or missing header."""

    status = 400


class ChecksumAlgorithmUnsupported(TusBadRequest):
    """400: Upload-Checksum names an algorithm we do not implement."""


class UploadNotFound(TusError):
    """404: no such upload (or it belongs to someone else: we do not say which)."""

    status = 404


class OffsetMismatch(TusError):
    """409: Upload-Offset differs from the server's offset; the client must HEAD and resume."""

    status = 409


class UploadIncomplete(TusError):
    """409: the upload's bytes are not all here yet."""

    status = 409


class UploadGone(TusError):
    """410: the upload expired."""

    status = 410


class VersionUnsupported(TusError):
    """412: Tus-Resumable names a version we do not speak."""

    status = 412

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"Tus-Version": TUS_VERSION})


class UploadTooLarge(TusError):
    """413: Upload-Length above Tus-Max-Size, or a PATCH past Upload-Length."""

    status = 413


class UnsupportedPatchType(TusError):
    """415: PATCH without `Content-Type: application/offset+octet-stream`."""

    status = 415


class UploadFinished(TusError):
    """409: the upload is complete and ingested; nothing more can be appended."""

    status = 409


class UploadLocked(TusError):
    """423: another request is writing this upload right now; retry after it ends."""

    status = 423


class ChecksumMismatch(TusError):
    """460: the chunk does not match Upload-Checksum; it was discarded, the offset is unchanged."""

    status = 460


# ----------------------------------------------------------------------------- header helpers


def check_version(tus_resumable: str | None) -> None:
    """Require `Tus-Resumable: 1.0.0` (every request but OPTIONS). Raises 412."""
    if tus_resumable != TUS_VERSION:
        raise VersionUnsupported(f"Tus-Resumable {tus_resumable!r} is not supported")


def check_patch_content_type(content_type: str | None) -> None:
    """Require the tus PATCH media type (parameters ignored). Raises 415."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != PATCH_CONTENT_TYPE:
        raise UnsupportedPatchType(f"Content-Type must be {PATCH_CONTENT_TYPE}")


def _non_negative(value: str | None, name: str) -> int:
    text = (value or "").strip()
    if not _DIGITS_RE.match(text):
        raise TusBadRequest(f"{name} must be a non-negative integer")
    return int(text)


def parse_length(upload_length: str | None) -> int:
    """Parse `Upload-Length` (required: we do not implement creation-defer-length). Raises 400."""
    return _non_negative(upload_length, "Upload-Length")


def parse_offset(upload_offset: str | None) -> int:
    """Parse `Upload-Offset`. Raises 400."""
    return _non_negative(upload_offset, "Upload-Offset")


def parse_metadata(header: str | None) -> dict[str, str | None]:
    """Parse `Upload-Metadata`: comma-separated `key base64(value)` pairs, value optional.

    Values are decoded as UTF-8 (all clients send text: filename, filetype, sha256); a key
    without a value (or with an empty one) maps to None. Raises `TusBadRequest` for duplicate
    keys, bad base64, non-UTF-8 values, or more than `MAX_METADATA_PAIRS` pairs /
    `MAX_METADATA_CHARS` characters.
    """
    result: dict[str, str | None] = {}
    if header is None or not header.strip():
        return result
    if len(header) > MAX_METADATA_CHARS:
        raise TusBadRequest(f"Upload-Metadata is longer than {MAX_METADATA_CHARS} characters")
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise TusBadRequest(f"Upload-Metadata has more than {MAX_METADATA_PAIRS} pairs")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _METADATA_KEY_RE.match(parts[0]):
            raise TusBadRequest(f"malformed Upload-Metadata pair {pair.strip()!r}")
        key = parts[0]
        if key in result:
            raise TusBadRequest(f"duplicate Upload-Metadata key {key!r}")
        if len(parts) == 1:
            result[key] = None
            continue
        try:
            result[key] = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TusBadRequest(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from exc
    return result


def format_metadata(metadata: Mapping[str, str | None]) -> str:
    """Format metadata as an `Upload-Metadata` header value (inverse of `parse_metadata`, except
    that an empty string comes back as None)."""
    pairs = []
    for key, value in metadata.items():
        if not _METADATA_KEY_RE.match(key):
            raise ValueError(f"invalid Upload-Metadata key {key!r}")
        if not value:
            # An empty value would end in "key " and HTTP strips trailing whitespace from
            # header values, so on the wire "" and "no value" are the same: send the key alone.
            pairs.append(key)
        else:
            pairs.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(pairs)


@dataclass(frozen=True, slots=True)
class Checksum:
    """A parsed `Upload-Checksum`: the algorithm name and the raw digest bytes."""

    algorithm: str
    digest: bytes

    def hasher(self) -> _Hash:
        """A fresh hashlib object for the algorithm."""
        return hashlib.new(self.algorithm)


def parse_checksum(header: str | None) -> Checksum | None:
    """Parse `Upload-Checksum: <algorithm> <base64 digest>`; None when the header is absent.

    Raises `ChecksumAlgorithmUnsupported` (400) for an algorithm not in `CHECKSUM_ALGORITHMS`,
    `TusBadRequest` (400) for a malformed value or a digest of the wrong length.
    """
    if header is None or not header.strip():
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise TusBadRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm = parts[0].lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ChecksumAlgorithmUnsupported(
            f"checksum algorithm {parts[0]!r} is not supported; use one of "
            + ",".join(CHECKSUM_ALGORITHMS)
        )
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise TusBadRequest("Upload-Checksum digest is not base64") from exc
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise TusBadRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return Checksum(algorithm, digest)


def format_checksum(algorithm: str, data: bytes) -> str:
    """The `Upload-Checksum` value for `data` (what a client sends)."""
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(digest).decode('ascii')}"


def http_date(moment: datetime) -> str:
    """An RFC 9110 IMF-fixdate, as `Upload-Expires` requires."""
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


# ------------------------------------------------------------------------------------- state


class UploadInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The persisted state of one upload (the `<id>.json` file next to `<id>.bin`)."""

    id: str
    length: int
    offset: int
    metadata: dict[str, str | None] = {}
    owner: str | None = None
    created_at: datetime
    expires_at: datetime
    # Set by `finish`: the bytes were ingested as this media (then the `.bin` is gone).
    media_id: str | None = None
    media_sha256: str | None = None

    @property
    def is_complete(self) -> bool:
        """All `length` bytes have been received."""
        return self.offset == self.length

    @property
    def is_finished(self) -> bool:
        """Complete and ingested: only the state is left, kept until `expires_at`."""
        return self.media_id is not None


def creation_headers(info: UploadInfo) -> dict[str, str]:
    """Headers of the 201 answer to POST (add `Location` yourself: only you know the URL)."""
    return {
        "Tus-Resumable": TUS_VERSION,
        "Upload-Offset": str(info.offset),
        "Upload-Expires": http_date(info.expires_at),
    }


def head_headers(info: UploadInfo) -> dict[str, str]:
    """Headers of the 200 answer to HEAD. `Cache-Control: no-store` as the spec requires."""
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Upload-Offset": str(info.offset),
        "Upload-Length": str(info.length),
        "Cache-Control": "no-store",
    }
    if info.metadata:
        headers["Upload-Metadata"] = format_metadata(info.metadata)
    if not info.is_complete:
        headers["Upload-Expires"] = http_date(info.expires_at)
    return headers


def patch_headers(info: UploadInfo) -> dict[str, str]:
    """Headers of the 204 answer to PATCH."""
    headers = {"Tus-Resumable": TUS_VERSION, "Upload-Offset": str(info.offset)}
    if not info.is_complete:
        headers["Upload-Expires"] = http_date(info.expires_at)
    return headers


def _utc_now() -> datetime:
    return datetime.now(UTC)


_encode_info = msgspec.json.Encoder().encode
_decode_info = msgspec.json.Decoder(UploadInfo).decode


class UploadManager:
    """Partial uploads in one directory: `<id>.bin` (the bytes so far) and `<id>.json`.

    Invariants: the JSON offset never exceeds the durable bytes in `.bin` (data is fsynced
    before the offset is written); bytes past the offset, left by a crash, are cut off by the
    next PATCH; a chunk that fails its checksum is cut off before the error is raised.
    Expiry slides: every accepted PATCH moves `expires_at` to now + `ttl`.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        max_size: int = 40 * 1024 * 1024,
        ttl: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_size = max_size
        self.ttl = ttl
        self.clock = clock

    # -- paths and state

    def _paths(self, upload_id: str) -> tuple[Path, Path]:
        if not _ID_RE.match(upload_id):
            # Not a shape we ever hand out; also keeps ids from naming paths outside root.
            raise UploadNotFound("no such upload")
        return self.root / f"{upload_id}.bin", self.root / f"{upload_id}.json"

    def _load(self, upload_id: str) -> UploadInfo:
        _, meta = self._paths(upload_id)
        try:
            return _decode_info(meta.read_bytes())
        except FileNotFoundError:
            raise UploadNotFound("no such upload") from None

    def _save(self, info: UploadInfo) -> None:
        _, meta = self._paths(info.id)
        tmp = meta.with_suffix(".json.tmp")
        with open(tmp, "wb") as out:
            out.write(_encode_info(info))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, meta)

    def _visible(self, upload_id: str, owner: str | None) -> UploadInfo:
        info = self._load(upload_id)
        if owner is not None and info.owner != owner:
            raise UploadNotFound("no such upload")
        # A complete upload awaiting ingest never expires; a finished one does (its state only
        # serves a client that lost the last answer).
        if (not info.is_complete or info.is_finished) and self.clock() >= info.expires_at:
            raise UploadGone("the upload expired")
        return info

    def _remove(self, upload_id: str) -> None:
        for path in self._paths(upload_id):
            path.unlink(missing_ok=True)

    # -- protocol operations

    def options_headers(self) -> dict[str, str]:
        """Headers of the 204 answer to OPTIONS (server capabilities)."""
        return {
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(TUS_EXTENSIONS),
            "Tus-Max-Size": str(self.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }

    def create(
        self,
        length: int,
        metadata: Mapping[str, str | None] | None = None,
        owner: str | None = None,
        *,
        body: bytes | Iterable[bytes] | None = None,
        checksum: Checksum | None = None,
    ) -> UploadInfo:
        """Create an upload of `length` bytes; with `body`, also store its first chunk.

        Raises `UploadTooLarge` (413) above `max_size`. With a body, a checksum mismatch or an
        oversize body removes the new upload before raising: the client never got its URL, so
        nothing must remain.
        """
        if length > self.max_size:
            raise UploadTooLarge(f"Upload-Length {length} exceeds Tus-Max-Size {self.max_size}")
        now = self.clock()
        info = UploadInfo(
            id=uuid.uuid4().hex,
            length=length,
            offset=0,
            metadata=dict(metadata or {}),
            owner=owner,
            created_at=now,
            expires_at=now + self.ttl,
        )
        data, _ = self._paths(info.id)
        data.touch(mode=0o600, exist_ok=False)
        self._save(info)
        if body is None:
            return info
        try:
            return self.patch(info.id, 0, body, checksum=checksum)
        except BaseException:
            self._remove(info.id)
            raise

    def head(self, upload_id: str, owner: str | None = None) -> UploadInfo:
        """The upload's state. Raises 404 (missing, or `owner` given and different), 410."""
        return self._visible(upload_id, owner)

    def open_patch(
        self,
        upload_id: str,
        offset: int,
        checksum: Checksum | None = None,
        owner: str | None = None,
    ) -> PatchWriter:
        """Lock the upload and check the offset, returning a writer for the chunk's bytes.

        Raises 404, 410, 409 (`offset` differs from the server's), 423 (locked by another
        request). Use it as a context manager (see `PatchWriter`).
        """
        data, _ = self._paths(upload_id)
        try:
            handle = open(data, "r+b")  # the PatchWriter closes it
        except FileNotFoundError:
            info = self._visible(upload_id, owner)  # 404 unless finished (bytes dropped)
            raise UploadFinished(
                "the upload is complete", {"Upload-Offset": str(info.offset)}
            ) from None
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadLocked("another request is writing this upload") from None
            # Re-read under the lock: a terminate or another PATCH may have just finished.
            info = self._visible(upload_id, owner)
            if offset != info.offset:
                raise OffsetMismatch(
                    f"Upload-Offset is {offset} but the server has {info.offset}",
                    {"Upload-Offset": str(info.offset)},
                )
        except BaseException:
            handle.close()
            raise
        return PatchWriter(self, info, handle, checksum)

    def patch(
        self,
        upload_id: str,
        offset: int,
        body: bytes | Iterable[bytes],
        checksum: Checksum | None = None,
        owner: str | None = None,
    ) -> UploadInfo:
        """Append `body` at `offset`; returns the new state (check `is_complete`).

        Raises as `open_patch`, plus 413 when the body runs past `length` and 460 when the
        checksum does not match (the chunk is discarded). If `body` raises midway (connection
        cut), the bytes received so far are kept unless a checksum was given.
        """
        chunks = (body,) if isinstance(body, bytes) else body
        with self.open_patch(upload_id, offset, checksum, owner) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return writer.result

    async def patch_async(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterable[bytes],
        checksum: Checksum | None = None,
        owner: str | None = None,
    ) -> UploadInfo:
        """`patch` for an async request body (e.g. Litestar's `request.stream()`).

        Writes go to the page cache as chunks arrive; the fsync of the commit runs in a worker
        thread. A cancelled or failing stream keeps what arrived (no checksum) or nothing.
        """
        writer = self.open_patch(upload_id, offset, checksum, owner)
        try:
            async for chunk in body:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return await asyncio.to_thread(writer.commit)

    def terminate(self, upload_id: str, owner: str | None = None) -> None:
        """Delete an upload and its bytes (termination extension). Raises 404, 423."""
        data, _ = self._paths(upload_id)
        try:
            handle = open(data, "rb")  # closed below
        except FileNotFoundError:
            info = self._load(upload_id)  # 404 unless finished (bytes already dropped)
            if owner is not None and info.owner != owner:
                raise UploadNotFound("no such upload") from None
            self._remove(upload_id)
            return
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadLocked("another request is writing this upload") from None
            info = self._load(upload_id)
            if owner is not None and info.owner != owner:
                raise UploadNotFound("no such upload")
            self._remove(upload_id)

    def completed_path(self, upload_id: str) -> Path:
        """The file holding a complete upload's bytes, for ingest. Raises 404, 409 (incomplete)."""
        info = self._load(upload_id)
        if not info.is_complete:
            raise UploadIncomplete(f"{info.offset} of {info.length} bytes received")
        return self._paths(upload_id)[0]

    def discard(self, upload_id: str) -> None:
        """Remove an upload and its state (refused bytes, or a client that never learnt the
        URL). Idempotent."""
        self._remove(upload_id)

    def finish(self, upload_id: str, media_id: str, sha256: str) -> UploadInfo:
        """The complete upload was ingested as `media_id`: drop its bytes, keep its state until
        now + `ttl` so HEAD still answers the full offset and the media. Idempotent."""
        info = self._load(upload_id)
        if not info.is_complete:
            raise UploadIncomplete(f"{info.offset} of {info.length} bytes received")
        info = msgspec.structs.replace(
            info, media_id=media_id, media_sha256=sha256, expires_at=self.clock() + self.ttl
        )
        self._save(info)
        self._paths(upload_id)[0].unlink(missing_ok=True)
        return info

    def completed(self) -> list[UploadInfo]:
        """Complete uploads not yet discarded: what a crash between the last PATCH and ingest
        left behind. Run at start-up and ingest or discard each."""
        found = []
        for meta in self.root.glob("*.json"):
            with contextlib.suppress(UploadNotFound, msgspec.DecodeError):
                info = self._load(meta.stem)
                if info.is_complete and not info.is_finished:
                    found.append(info)
        return found

    def expire(self, now: datetime | None = None) -> list[str]:
        """Delete uploads whose `expires_at` has passed (and debris older than `ttl`).

        Skips uploads a request is writing right now. Returns the removed ids.
        """
        now = now or self.clock()
        removed: list[str] = []
        for data in self.root.glob("*.bin"):
            upload_id = data.stem
            if not _ID_RE.match(upload_id):
                continue
            try:
                handle = open(data, "rb")  # closed below
            except FileNotFoundError:
                continue
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    expired = self._load(upload_id).expires_at <= now
                except (UploadNotFound, msgspec.DecodeError):
                    # A .bin without readable state: a crash inside create. Old enough = debris.
                    mtime = datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime, UTC)
                    expired = mtime + self.ttl <= now
                if expired:
                    self._remove(upload_id)
                    removed.append(upload_id)
        for meta in self.root.glob("*.json"):
            # Finished uploads: only their state is left.
            upload_id = meta.stem
            if not _ID_RE.match(upload_id) or meta.with_suffix(".bin").exists():
                continue
            with contextlib.suppress(UploadNotFound, msgspec.DecodeError):
                if self._load(upload_id).expires_at <= now:
                    self._remove(upload_id)
                    removed.append(upload_id)
        return removed


class PatchWriter:
    """Receives one PATCH body. Holds the upload's lock until `commit` or `abort`.

    As a context manager: a clean exit commits; an exception aborts (keeping the received bytes
    when no checksum was given, as tus recommends, so the client resumes from there).
    `result` is the committed state.
    """

    def __init__(
        self,
        manager: UploadManager,
        info: UploadInfo,
        handle: IO[bytes],
        checksum: Checksum | None,
    ) -> None:
        self._manager = manager
        self._info = info
        self._handle = handle
        self._checksum = checksum
        self._hasher = checksum.hasher() if checksum else None
        self._written = 0
        self._closed = False
        self.result = info
        # Anything past the recorded offset was written by a request that never committed.
        handle.truncate(info.offset)
        handle.seek(info.offset)

    @property
    def remaining(self) -> int:
        """Bytes the upload may still receive."""
        return self._info.length - self._info.offset - self._written

    def write(self, chunk: bytes) -> None:
        """Append a piece of the body. Raises `UploadTooLarge` (413) past the declared length;
        the whole chunk is then discarded and the writer closed."""
        if self._closed:
            raise RuntimeError("write after commit/abort")
        if len(chunk) > self.remaining:
            self._rollback()
            raise UploadTooLarge(
                f"the body runs past Upload-Length {self._info.length}",
                {"Upload-Offset": str(self._info.offset)},
            )
        self._handle.write(chunk)
        if self._hasher is not None:
            self._hasher.update(chunk)
        self._written += len(chunk)

    def commit(self) -> UploadInfo:
        """Verify the checksum, make the bytes durable, advance the offset, release the lock.

        Raises `ChecksumMismatch` (460) after discarding the chunk.
        """
        if self._closed:
            return self.result
        if (
            self._checksum is not None
            and self._hasher is not None
            and self._hasher.digest() != self._checksum.digest
        ):
            self._rollback()
            raise ChecksumMismatch(
                "the chunk does not match Upload-Checksum; it was discarded",
                {"Upload-Offset": str(self._info.offset)},
            )
        return self._finish()

    def abort(self) -> UploadInfo:
        """End after a broken body: keep what arrived unless a checksum was promised."""
        if self._closed:
            return self.result
        if self._checksum is not None:
            # The checksum covers the whole chunk; part of it cannot be verified, so drop it.
            self._rollback()
            return self.result
        return self._finish()

    def _finish(self) -> UploadInfo:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            info = self._info
            if self._written:
                # Only a PATCH that delivered bytes extends the deadline.
                info = msgspec.structs.replace(
                    info,
                    offset=info.offset + self._written,
                    expires_at=self._manager.clock() + self._manager.ttl,
                )
                self._manager._save(info)
            self.result = info
            return info
        finally:
            self._close()

    def _rollback(self) -> None:
        try:
            self._handle.truncate(self._info.offset)
        finally:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self._handle.close()  # closing the descriptor releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
