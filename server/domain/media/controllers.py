"""HTTP for media: tus 1.0 uploads at /api/v1/uploads/, and photos by hash at /api/v1/media.

The tus routes are the few lines docs/media.md prescribes per request: check the version, parse
headers, call the UploadManager (blocking calls in a worker thread; the body streams straight
to disk through `patch_async`), answer with its headers; on completion, finish the upload.
Every tus answer, errors included, carries `Tus-Resumable: 1.0.0`.
"""

from __future__ import annotations

import re
from typing import Any

import anyio.to_thread
from litestar import Controller, Request, Response, get, head, patch, post, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException, InternalServerException
from litestar.params import FromPath, JSONBody
from litestar.response import File, Redirect, Stream
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_, gettext
from media import tus
from media.errors import MediaRejected
from media.store import DiskBlobStore, display_key, original_key, thumbnail_key
from schemas import media as s
from server.auth.principal import Principal
from server.domain.media import services as svc
from server.errors import (
    DomainError,
    NotFound,
    domain_error_handler,
    http_error_handler,
    internal_error_handler,
    problem_response,
    request_lang,
)
from server.models import MediaObject
from server.openapi import Doc, HeaderDoc

UPLOADS = "/api/v1/uploads"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_TUS = {"Tus-Resumable": tus.TUS_VERSION}

# What the OpenAPI document says about tus headers (server/openapi.py builds the rest).
# Header values are text on the wire: a count of bytes is digits.
_INT = {"type": "string", "pattern": "^[0-9]{1,19}$"}
TUS_RESUMABLE = HeaderDoc(
    "Tus-Resumable",
    "the tus version: 1.0.0 (412 for any other)",
    required=True,
    schema={"type": "string", "enum": [tus.TUS_VERSION]},
)
UPLOAD_OFFSET = HeaderDoc("Upload-Offset", "bytes received so far", schema=_INT)
UPLOAD_LENGTH = HeaderDoc("Upload-Length", "the upload's total size in bytes", schema=_INT)
UPLOAD_METADATA = HeaderDoc(
    "Upload-Metadata",
    "comma-separated `key base64(value)` pairs: sha256 (hex of the whole file), filename, filetype",
)
UPLOAD_CHECKSUM = HeaderDoc(
    "Upload-Checksum",
    "`sha1|sha256 base64(digest)` of this request's body (checksum)",
    schema={"type": "string", "pattern": "^(sha1|sha256) [A-Za-z0-9+/]+={0,2}$"},
)
UPLOAD_EXPIRES = HeaderDoc("Upload-Expires", "when an unfinished upload is dropped (HTTP date)")
MEDIA_ID = HeaderDoc("Media-Id", "the stored photo's id, once the upload is complete")
MEDIA_SHA256 = HeaderDoc("Media-Sha256", "the stored photo's SHA-256, once complete")
LOCATION = HeaderDoc("Location", "the new upload's URL, for HEAD, PATCH and DELETE")
_TUS_ERRORS = (tus.TusError, MediaRejected)
_TUS_EVERY = (TUS_RESUMABLE,)


class ClientDisconnected(DomainError):
    """The client went away mid-body; what arrived is kept for the resume."""

    status = 400
    code = "client_disconnected"
    title = N_("Client disconnected")


def _runtime(request: Request[Any, Any, Any]) -> svc.MediaRuntime:
    runtime: svc.MediaRuntime = request.app.state.media
    return runtime


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def tus_error_handler(request: Request[Any, Any, Any], exc: tus.TusError) -> Response[bytes]:
    """A tus protocol error: its status and headers, a problem-details body."""
    return problem_response(
        request,
        status=exc.status,
        title=gettext(request_lang(request), N_("Upload refused")),
        detail=exc.detail,
        code=_snake(type(exc).__name__),
        headers=dict(exc.headers),
    )


def media_rejected_handler(request: Request[Any, Any, Any], exc: MediaRejected) -> Response[bytes]:
    """Refused content: the stable `MediaRejected.code` in a problem-details body."""
    return problem_response(
        request,
        status=exc.status,
        title=gettext(request_lang(request), N_("Rejected media")),
        detail=exc.detail,
        code=exc.code,
        headers=dict(_TUS),
    )


def _with_tus(response: Response[Any]) -> Response[Any]:
    response.headers.update(_TUS)
    return response


def _tus_domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    return _with_tus(domain_error_handler(request, exc))


def _tus_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _with_tus(http_error_handler(request, exc))


def _tus_internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _with_tus(internal_error_handler(request, exc))


def _owner(request: Request[Principal, Any, Any]) -> str:
    return str(request.user.user_id)


def _has_body(request: Request[Any, Any, Any]) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


async def _receive(
    request: Request[Principal, Any, Any],
    db: AsyncSession,
    upload_id: str,
    offset: int,
) -> tuple[tus.UploadInfo, MediaObject | None]:
    """Stream the body into the upload; on completion verify, ingest, store and record it."""
    rt = _runtime(request)
    checksum = tus.parse_checksum(request.headers.get("upload-checksum"))
    try:
        info = await rt.manager.patch_async(
            upload_id, offset, request.stream(), checksum, _owner(request)
        )
    except InternalServerException as exc:
        # Litestar's word for a body cut short; patch_async kept the bytes for the resume.
        raise ClientDisconnected(N_("the connection closed before the body was complete")) from exc
    media = None
    if info.is_complete:
        media = await svc.finish_upload(db, request.user.user_id, rt, info)
    return info, media


def _completion_headers(media: MediaObject | None) -> dict[str, str]:
    if media is None:
        return {}
    return {"Media-Id": str(media.id), "Media-Sha256": media.sha256}


class UploadController(Controller):
    """tus 1.0.0 resumable uploads (creation, creation-with-upload, termination, checksum,
    expiration). Uploads belong to their creator; others get 404."""

    path = UPLOADS
    tags = ["media"]
    # No framework cap on these bodies: the tus core refuses any byte past Upload-Length, and
    # Upload-Length past Tus-Max-Size (the media size limit), with 413, while streaming to disk.
    request_max_body_size = None
    exception_handlers = {
        tus.TusError: tus_error_handler,
        MediaRejected: media_rejected_handler,
        DomainError: _tus_domain,
        HTTPException: _tus_http,
        Exception: _tus_internal,
    }

    # Named to sort before `create`: Litestar registers a controller's handlers in name order
    # and gives a path whose first handler lacks OPTIONS its own automatic OPTIONS handler,
    # which would then shadow this one. tests/integration/test_media_api.py checks the headers.
    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False)
    async def capabilities(self, request: Request[Any, Any, Any]) -> Response[None]:
        """tus discovery, without a token (OPTIONS is how tus clients and CORS preflights
        probe): version, extensions, max size, checksum algorithms."""
        return Response(None, status_code=204, headers=_runtime(request).manager.options_headers())

    @post(
        "/",
        operation_id="CreateUpload",
        status_code=201,
        opt={
            "doc": Doc(
                body=bytes,  # creation-with-upload: the first bytes, optional
                body_media_types=(tus.PATCH_CONTENT_TYPE,),
                body_required=False,
                raises=_TUS_ERRORS,
                every_answer_headers=_TUS_EVERY,
                request_headers=(
                    TUS_RESUMABLE,
                    HeaderDoc(UPLOAD_LENGTH.name, UPLOAD_LENGTH.description, True, _INT),
                    UPLOAD_METADATA,
                    UPLOAD_CHECKSUM,
                ),
                answer_headers=(LOCATION, UPLOAD_OFFSET, UPLOAD_EXPIRES, MEDIA_ID, MEDIA_SHA256),
            )
        },
    )
    async def create(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> Response[None]:
        """Create an upload (Upload-Length, Upload-Metadata with sha256, filename, filetype);
        with a body, also its first bytes (creation-with-upload)."""
        rt = _runtime(request)
        h = request.headers
        tus.check_version(h.get("tus-resumable"))
        length = tus.parse_length(h.get("upload-length"))
        metadata = tus.parse_metadata(h.get("upload-metadata"))
        with_body = _has_body(request)
        if with_body:
            tus.check_patch_content_type(h.get("content-type"))
            tus.parse_checksum(h.get("upload-checksum"))  # refuse a bad header before creating
        info = await anyio.to_thread.run_sync(
            lambda: rt.manager.create(length, metadata, _owner(request))
        )
        media = None
        if with_body:
            try:
                info, media = await _receive(request, db, info.id, 0)
            except BaseException:
                rt.manager.discard(info.id)  # the client never learnt the URL
                raise
        headers = {**tus.creation_headers(info), **_completion_headers(media)}
        headers["Location"] = f"{UPLOADS}/{info.id}"
        return Response(None, status_code=201, headers=headers)

    @head(
        "/{upload_id:str}",
        operation_id="GetUploadOffset",
        opt={
            "doc": Doc(
                raises=(tus.TusError,),
                every_answer_headers=_TUS_EVERY,
                request_headers=(TUS_RESUMABLE,),
                answer_headers=(
                    UPLOAD_OFFSET,
                    UPLOAD_LENGTH,
                    UPLOAD_METADATA,
                    UPLOAD_EXPIRES,
                    MEDIA_ID,
                    MEDIA_SHA256,
                ),
            )
        },
    )
    async def head_upload(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        upload_id: FromPath[str],
    ) -> Response[None]:
        """The upload's offset (how much to resume from), length and metadata; once complete
        and stored, for the upload's lifetime, also Media-Id and Media-Sha256 (a client that
        lost the last PATCH's answer finishes here without sending the bytes again)."""
        rt = _runtime(request)
        try:
            tus.check_version(request.headers.get("tus-resumable"))
            info = await anyio.to_thread.run_sync(rt.manager.head, upload_id, _owner(request))
        except tus.TusError as exc:
            # HEAD answers carry no body, so no problem details here: status and headers only.
            return Response(None, status_code=exc.status, headers=dict(exc.headers))
        headers = tus.head_headers(info)
        if info.is_finished:
            media = await svc.finished_media(db, info)
            if media is None:
                # Finished in a request that did not commit: the bytes are gone, start over.
                await anyio.to_thread.run_sync(rt.manager.discard, upload_id)
                return Response(None, status_code=404, headers=dict(_TUS))
            headers.update(_completion_headers(media))
        return Response(None, status_code=200, headers=headers)

    @patch(
        "/{upload_id:str}",
        operation_id="PatchUpload",
        status_code=204,
        opt={
            "doc": Doc(
                body=bytes,
                body_media_types=(tus.PATCH_CONTENT_TYPE,),
                raises=_TUS_ERRORS,
                every_answer_headers=_TUS_EVERY,
                request_headers=(
                    TUS_RESUMABLE,
                    HeaderDoc(UPLOAD_OFFSET.name, "where this body starts", True, _INT),
                    UPLOAD_CHECKSUM,
                ),
                answer_headers=(UPLOAD_OFFSET, UPLOAD_EXPIRES, MEDIA_ID, MEDIA_SHA256),
            )
        },
    )
    async def patch_upload(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        upload_id: FromPath[str],
    ) -> Response[None]:
        """Append bytes at Upload-Offset (`application/offset+octet-stream`, optional
        Upload-Checksum). The last chunk completes the upload: 204 with Media-Id/Media-Sha256,
        or a problem (e.g. `corrupt`, `sha256_mismatch`) and nothing stored."""
        h = request.headers
        tus.check_version(h.get("tus-resumable"))
        tus.check_patch_content_type(h.get("content-type"))
        offset = tus.parse_offset(h.get("upload-offset"))
        info, media = await _receive(request, db, upload_id, offset)
        headers = {**tus.patch_headers(info), **_completion_headers(media)}
        return Response(None, status_code=204, headers=headers)

    @route(
        "/{upload_id:str}",
        http_method=[HttpMethod.DELETE],
        operation_id="TerminateUpload",
        status_code=204,
        opt={
            "doc": Doc(
                raises=(tus.TusError,),
                every_answer_headers=_TUS_EVERY,
                request_headers=(TUS_RESUMABLE,),
            )
        },
    )
    async def terminate(
        self, request: Request[Principal, Any, Any], upload_id: FromPath[str]
    ) -> Response[None]:
        """Abandon an upload and delete its bytes (termination)."""
        tus.check_version(request.headers.get("tus-resumable"))
        await anyio.to_thread.run_sync(
            _runtime(request).manager.terminate, upload_id, _owner(request)
        )
        return Response(None, status_code=204, headers=dict(_TUS))


def _cache(immutable: bool) -> dict[str, str]:
    # Derivatives never change for a hash; originals carry locations, so no shared caches.
    if immutable:
        return {"Cache-Control": "private, max-age=31536000, immutable"}
    return {"Cache-Control": "private, no-store"}


class MediaController(Controller):
    """Photos by SHA-256: existence, declaration, metadata, derivatives and the original."""

    path = "/api/v1/media"
    tags = ["media"]
    exception_handlers = {MediaRejected: media_rejected_handler}

    @head("/{sha256:str}", operation_id="HasMedia")
    async def has_media(
        self, db: NamedDependency[AsyncSession], sha256: FromPath[str]
    ) -> Response[None]:
        """200 when the server has these bytes (skip the upload), else 404. No body."""
        row = await svc.by_sha256(db, sha256) if _SHA_RE.match(sha256) else None
        stored = row is not None and row.status == s.MediaStatus.STORED.value
        return Response(None, status_code=200 if stored else 404)

    @post("/", operation_id="DeclareMedia")
    async def declare(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.MediaDeclare],
    ) -> Response[s.Media]:
        """Declare a photo by hash before its bytes arrive (`pending`); 201 when new, 200 when
        the hash was already known (its existing id is returned)."""
        row, created = await svc.declare(db, request.user, data)
        with_exif = await svc.can_view_original(db, request.user, row)
        return Response(
            svc.media_out(row, with_exif=with_exif), status_code=201 if created else 200
        )

    async def _visible(
        self, db: AsyncSession, p: Principal, sha256: str, *, original: bool = False
    ) -> MediaObject:
        row = await svc.by_sha256(db, sha256) if _SHA_RE.match(sha256) else None
        allowed = row is not None and (
            await svc.can_view_original(db, p, row) if original else await svc.can_view(db, p, row)
        )
        if row is None or not allowed:
            raise NotFound(N_("no media {sha256}"), sha256=sha256)
        return row

    @get("/{sha256:str}", operation_id="GetMedia")
    async def get_media(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        sha256: FromPath[str],
    ) -> s.Media:
        """Metadata; EXIF (GPS, capture time) only for those who may see the original."""
        row = await self._visible(db, request.user, sha256)
        return svc.media_out(row, with_exif=await svc.can_view_original(db, request.user, row))

    async def _blob(
        self, request: Request[Principal, Any, Any], key: str, content_type: str, immutable: bool
    ) -> Response[Any]:
        store = _runtime(request).store
        headers = _cache(immutable)
        if isinstance(store, DiskBlobStore):
            path = store.path(key)
            if not path.is_file():
                raise NotFound(N_("the bytes are not stored yet"))
            return File(
                path, content_disposition_type="inline", media_type=content_type, headers=headers
            )
        if not await anyio.to_thread.run_sync(store.exists, key):
            raise NotFound(N_("the bytes are not stored yet"))
        return Stream(store.iter_chunks(key), media_type=content_type, headers=headers)

    @get(
        "/{sha256:str}/display",
        operation_id="GetMediaDisplay",
        opt={"doc": Doc(content=("image/jpeg",))},
    )
    async def display(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        sha256: FromPath[str],
    ) -> Response[Any]:
        """The display JPEG (long edge 1600 px), upright, without any metadata."""
        row = await self._visible(db, request.user, sha256)
        return await self._blob(request, display_key(row.sha256), "image/jpeg", True)

    @get(
        "/{sha256:str}/thumbnail",
        operation_id="GetMediaThumbnail",
        opt={"doc": Doc(content=("image/jpeg",))},
    )
    async def thumbnail(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        sha256: FromPath[str],
    ) -> Response[Any]:
        """The thumbnail JPEG (long edge 320 px), upright, without any metadata."""
        row = await self._visible(db, request.user, sha256)
        return await self._blob(request, thumbnail_key(row.sha256), "image/jpeg", True)

    @get(
        "/{sha256:str}/original",
        operation_id="GetMediaOriginal",
        opt={"doc": Doc(content=("image/*", "application/octet-stream"))},
    )
    async def original(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        sha256: FromPath[str],
    ) -> Response[Any]:
        """The original with its EXIF (dispatch, admin, the uploader): streamed from disk, or a
        redirect to a presigned S3 URL valid for five minutes."""
        row = await self._visible(db, request.user, sha256, original=True)
        key = original_key(row.sha256)
        store = _runtime(request).store
        url = await anyio.to_thread.run_sync(store.url, key, 300)
        if url is not None:
            return Redirect(url, status_code=307, headers=_cache(False))
        return await self._blob(
            request, key, row.content_type or "application/octet-stream", immutable=False
        )
