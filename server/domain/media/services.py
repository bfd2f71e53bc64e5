"""Media objects: declare by hash, finish a tus upload (verify, ingest, store), who sees what.

The blocking parts (reading the upload, Pillow, the BlobStore) run in worker threads; the
database work runs in the request's transaction and only after the pixels are done, so a
SQLite write lock is never held while an image decodes.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from media.errors import MediaRejected
from media.exif import ExifInfo
from media.process import IngestResult, ingest, store_ingested
from media.store import BlobStore
from media.tus import UploadInfo, UploadManager
from media.validate import Limits
from schemas import media as s
from schemas.common import Role
from server import audit, changes
from server.auth.principal import Principal
from server.errors import Conflict, DomainError, Forbidden
from server.models import Hazard, HazardMedia, MediaObject, utcnow
from server.scope import visible


@dataclass(frozen=True)
class MediaRuntime:
    """What the media routes need besides the database (kept in `app.state.media`)."""

    manager: UploadManager
    store: BlobStore
    limits: Limits


class Sha256Mismatch(DomainError):
    """The bytes do not hash to the sha256 the client declared in Upload-Metadata."""

    status = 460
    code = "sha256_mismatch"
    title = N_("Checksum mismatch")


def exif_json(exif: ExifInfo) -> dict[str, Any]:
    """EXIF as stored in `media_objects.exif` (wall-clock capture time as ISO text)."""
    data: dict[str, Any] = msgspec.to_builtins(exif)
    if exif.captured_local is not None:
        data["captured_local"] = exif.captured_local.replace(tzinfo=None).isoformat()
    return data


def media_exif(row: MediaObject) -> s.MediaExif | None:
    """The stored EXIF as the wire type (None while pending)."""
    if row.status != s.MediaStatus.STORED.value:
        return None
    return msgspec.convert(row.exif or {}, s.MediaExif, strict=False)


def media_out(row: MediaObject, *, with_exif: bool) -> s.Media:
    """Wire form; EXIF (positions) only for those who may see the original."""
    return s.Media(
        id=row.id,
        sha256=row.sha256,
        status=s.MediaStatus(row.status),
        content_type=row.content_type,
        size=row.size,
        width=row.width,
        height=row.height,
        filename=row.filename,
        uploaded_by=row.uploaded_by,
        created_at=row.created_at,
        stored_at=row.stored_at,
        exif=media_exif(row) if with_exif else None,
    )


async def by_sha256(session: AsyncSession, sha256: str) -> MediaObject | None:
    """The media object with this hash, if any."""
    stmt = select(MediaObject).where(
        MediaObject.sha256 == sha256.lower(), MediaObject.deleted_at.is_(None)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def declare(
    session: AsyncSession, p: Principal, data: s.MediaDeclare
) -> tuple[MediaObject, bool]:
    """Make a media object known by its hash (pending until its bytes arrive).

    Idempotent per hash: a hash already known returns that object (`created` False), whatever
    id the client proposed; the client should use the returned id (or just the hash).
    """
    existing = await by_sha256(session, data.sha256)
    if existing is not None:
        return existing, False
    if data.id is not None and await session.get(MediaObject, data.id) is not None:
        raise Conflict(N_("a media object with this id has another sha256"), field="id")
    row = MediaObject(
        sha256=data.sha256,
        content_type=data.content_type,
        filename=data.filename,
        status=s.MediaStatus.PENDING.value,
        uploaded_by=p.user_id,
        exif={},
    )
    if data.id is not None:
        row.id = data.id
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "declare", "media", row.id, sha256=row.sha256)
    return row, True


async def declare_many(session: AsyncSession, p: Principal, hashes: list[str]) -> list[MediaObject]:
    """`declare` each hash (order kept, duplicates once)."""
    rows: list[MediaObject] = []
    for sha in dict.fromkeys(h.lower() for h in hashes):
        row, _ = await declare(session, p, s.MediaDeclare(sha256=sha))
        rows.append(row)
    return rows


def _verify_ingest_store(rt: MediaRuntime, info: UploadInfo) -> IngestResult:
    """Blocking: check the declared hash, validate and process, store blobs; discard on refusal.

    Raises Sha256Mismatch or MediaRejected after discarding the upload, so nothing is stored.
    """
    data = rt.manager.completed_path(info.id).read_bytes()
    declared = (info.metadata.get("sha256") or "").strip().lower()
    actual = hashlib.sha256(data).hexdigest()
    if declared and declared != actual:
        rt.manager.discard(info.id)
        raise Sha256Mismatch(
            N_(
                "the bytes hash to {actual}, not to the declared sha256 {declared}; "
                "the upload was discarded"
            ),
            actual=actual,
            declared=declared,
            field="Upload-Metadata",
        )
    try:
        result = ingest(data, info.metadata.get("filetype"), rt.limits)
    except MediaRejected:
        rt.manager.discard(info.id)  # nothing half-stored remains
        raise
    # Content-addressed: a photo already stored costs no second copy (puts are no-ops).
    store_ingested(rt.store, result, data)
    return result


async def finish_upload(
    session: AsyncSession, actor_id: uuid.UUID | None, rt: MediaRuntime, info: UploadInfo
) -> MediaObject:
    """A tus upload is complete: verify, ingest and store it, then mark its media `stored`.

    The media row (declared earlier, or new) becomes `stored` with type, size, dimensions and
    EXIF in the caller's transaction. The same photo twice keeps one row and one blob.
    `actor_id` is the uploader (the upload's owner). The upload's bytes are dropped either
    way; on success its state stays (`UploadManager.finish`) so a HEAD still answers it.
    """
    result = await anyio.to_thread.run_sync(_verify_ingest_store, rt, info)
    try:
        row = await by_sha256(session, result.sha256)
        if row is None:
            row = MediaObject(sha256=result.sha256, uploaded_by=actor_id, exif={})
            proposed = info.metadata.get("media_id")
            if proposed:
                try:
                    ident = uuid.UUID(proposed)
                except ValueError:
                    ident = None
                if ident is not None and await session.get(MediaObject, ident) is None:
                    row.id = ident
            session.add(row)
        fresh = row.status != s.MediaStatus.STORED.value
        if fresh:
            row.status = s.MediaStatus.STORED.value
            row.content_type = result.content_type
            row.size = result.size
            row.width = result.width
            row.height = result.height
            row.exif = exif_json(result.exif)
            row.stored_at = utcnow()
            row.filename = row.filename or info.metadata.get("filename")
            if row.uploaded_by is None:
                row.uploaded_by = actor_id
        await session.flush()
        changes.record(session, row)
        audit.record(
            session,
            actor_id,
            "upload",
            "media",
            row.id,
            sha256=result.sha256,
            size=result.size,
            deduplicated=not fresh,
        )
    except BaseException:
        await anyio.to_thread.run_sync(rt.manager.discard, info.id)
        raise
    await anyio.to_thread.run_sync(rt.manager.finish, info.id, str(row.id), row.sha256)
    return row


async def finished_media(session: AsyncSession, info: UploadInfo) -> MediaObject | None:
    """The stored media a finished upload became, or None if it is not stored (the request
    that finished it failed to commit: the client must upload again)."""
    if info.media_id is None:
        return None
    try:
        ident = uuid.UUID(info.media_id)
    except ValueError:
        return None
    row = await session.get(MediaObject, ident)
    if row is None or row.status != s.MediaStatus.STORED.value:
        return None
    return row


async def _linked_hazard_visible(session: AsyncSession, p: Principal, media_id: uuid.UUID) -> bool:
    try:
        scope = visible(p, Hazard)
    except Forbidden:
        return False
    stmt = (
        select(HazardMedia.id)
        .join(Hazard, Hazard.id == HazardMedia.hazard_id)
        .where(HazardMedia.media_id == media_id, Hazard.deleted_at.is_(None))
    )
    if scope is not None:
        stmt = stmt.where(scope)
    return (await session.execute(stmt.limit(1))).first() is not None


async def can_view(session: AsyncSession, p: Principal, row: MediaObject) -> bool:
    """Public derivatives and metadata: the uploader, admin, or whoever sees a linked hazard."""
    if p.role is Role.ADMIN or row.uploaded_by == p.user_id:
        return True
    return await _linked_hazard_visible(session, p, row.id)


async def can_view_original(session: AsyncSession, p: Principal, row: MediaObject) -> bool:
    """The original (EXIF, location): the uploader, admin, or dispatch seeing a linked hazard."""
    if p.role is Role.ADMIN or row.uploaded_by == p.user_id:
        return True
    return p.role is Role.DISPATCHER and await _linked_hazard_visible(session, p, row.id)
