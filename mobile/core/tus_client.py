"""A small tus 1.0 client on httpx that resumes from the server's offset.

State lives in the phone's SQLite (`PhotoStore`), written after every step, so an app killed
at any moment resumes where the server is: the upload URL is stored as soon as the server
made it, and every resume starts with `HEAD` (the server's `Upload-Offset` is the truth; the
phone's own offset may be behind an answer that never arrived). Each chunk carries
`Upload-Checksum: sha256`, so a chunk cut short is dropped whole by the server instead of kept
half-verified. See docs/media.md for the server side.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from mobile.core.photos import Photo, PhotoState, PhotoStore
from mobile.core.transport import BUSY, retry_after

TUS_VERSION = "1.0.0"
DEFAULT_CHUNK = 256 * 1024
UPLOADS = "/api/v1/uploads/"
# Refusals of the bytes themselves: retrying the same bytes cannot help.
_FINAL = {413, 415, 422, 460}
# 409s in a row (each followed by a HEAD) before a round gives up on an upload: one is an
# offset the phone had wrong; more mean the server will not take this PATCH, and retrying at
# once would loop without end (the round's backoff waits instead).
_MAX_CONFLICTS = 3
_MAX_RESTARTS = 2  # new uploads after a 404/410 in one round (one is the normal case)

FaultHook = Callable[[str], None]


class UploadInterruptedError(Exception):
    """The network went away mid-upload (or the server shed it: `retry_after_s` is its
    `Retry-After`); what the server has is kept, resume later."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class _At:
    """The server's answer to HEAD: its offset, and the media id once the upload is stored."""

    offset: int
    media_id: str | None = None


@dataclass(frozen=True, slots=True)
class UploadResult:
    """How one photo's upload ended: `stored`, or `failed` with the server's code."""

    sha256: str
    state: PhotoState
    media_id: str
    sent_bytes: int
    error: str | None = None


def _meta(pairs: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def _code(r: httpx.Response) -> str:
    try:
        return str(r.json().get("code") or f"http_{r.status_code}")
    except ValueError:
        return f"http_{r.status_code}"


class TusUploader:
    """Uploads tracked photos to `base_url` + /api/v1/uploads/.

    `fault` (tests) is called with a step name (`created`, `patched`) right after that request
    succeeded and before its result is stored: raising there is an app killed at that moment.
    """

    def __init__(
        self,
        photos: PhotoStore,
        http: httpx.Client,
        base_url: str,
        token: Callable[[], str],
        *,
        chunk_size: int = DEFAULT_CHUNK,
        fault: FaultHook | None = None,
    ) -> None:
        self.photos = photos
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.chunk_size = chunk_size
        self.fault = fault

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Tus-Resumable": TUS_VERSION, **extra}

    def _url(self, location: str) -> str:
        return location if location.startswith("http") else self.base_url + location

    def _call(self, method: str, url: str, **kw: object) -> httpx.Response:
        try:
            r = self.http.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise UploadInterruptedError(f"{method} {url}: {exc!r}") from exc
        if r.status_code in BUSY:
            raise UploadInterruptedError(f"{method}: HTTP {r.status_code}", retry_after(r))
        return r

    def _step(self, name: str) -> None:
        if self.fault is not None:
            self.fault(name)

    def upload_all(self) -> list[UploadResult]:
        """Upload every declared or half-uploaded photo, one at a time (a phone's link is
        better used by one upload than split among several)."""
        return [self.upload(p) for p in self.photos.all(PhotoState.DECLARED, PhotoState.UPLOADING)]

    def upload(self, photo: Photo, *, restarts: int = 0) -> UploadResult:
        """Upload one photo from where the server is. Raises `UploadInterruptedError` when the
        network fails (state kept for the resume), or when a new upload is gone (404/410) as
        soon as it is made: starting again is tried `_MAX_RESTARTS` times in a round."""
        data = photo.path.read_bytes()
        at = self._resume_offset(photo)
        if at is None:
            try:
                url = self._create(photo, len(data))
            except _Refused as refused:
                return self._failed(photo, refused.code, 0)
            at = _At(0)
        else:
            url = str(photo.upload_url)
        offset, sent, conflicts = at.offset, 0, 0
        while True:
            if at.media_id is not None and offset >= len(data):
                # The server has every byte and stored them (the last PATCH's answer was lost,
                # or the app died before keeping it): done. A PATCH now would be 409 for ever.
                return self._stored(photo, at.media_id, offset, sent)
            chunk = data[offset : offset + self.chunk_size]
            digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
            r = self._call(
                "PATCH",
                url,
                content=chunk,
                headers=self._headers(
                    **{
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Offset": str(offset),
                        "Upload-Checksum": f"sha256 {digest}",
                    }
                ),
            )
            if r.status_code == 409:  # our offset is not the server's: ask and go on
                conflicts += 1
                if conflicts > _MAX_CONFLICTS:  # no progress: end the round, never spin
                    raise UploadInterruptedError(f"PATCH: HTTP 409 {conflicts} times at {offset}")
                at = self._head(url, photo) or _At(0)
                offset = at.offset
                continue
            if r.status_code in (404, 410):  # expired or swept: start again
                self.photos.update(photo.sha256, upload_url=None, offset=0)
                if restarts >= _MAX_RESTARTS:  # gone again at once: end the round
                    times = restarts + 1
                    raise UploadInterruptedError(f"PATCH: HTTP {r.status_code} {times} times")
                return self.upload(self._fresh(photo), restarts=restarts + 1)
            if r.status_code in _FINAL:
                return self._failed(photo, _code(r), sent)
            if r.status_code != 204:
                raise UploadInterruptedError(f"PATCH: HTTP {r.status_code}")
            self._step("patched")
            sent += len(chunk)
            conflicts = 0
            offset = int(r.headers["Upload-Offset"])
            if offset >= len(data):
                return self._stored(photo, r.headers.get("Media-Id", photo.media_id), offset, sent)
            self.photos.update(photo.sha256, offset=offset)

    def _stored(self, photo: Photo, media_id: str, offset: int, sent: int) -> UploadResult:
        self.photos.adopt(
            photo.sha256, media_id, state=PhotoState.STORED, offset=offset, error=None
        )
        return UploadResult(photo.sha256, PhotoState.STORED, media_id, sent)

    def _fresh(self, photo: Photo) -> Photo:
        found = self.photos.get(photo.sha256)
        assert found is not None  # noqa: S101 - tracked photos are never deleted mid-upload
        return found

    def _resume_offset(self, photo: Photo) -> _At | None:
        """Where the server is in an upload begun earlier, or None to create a new one."""
        if not photo.upload_url:
            return None
        return self._head(photo.upload_url, photo)

    def _head(self, url: str, photo: Photo) -> _At | None:
        r = self._call("HEAD", url, headers=self._headers())
        if r.status_code in (404, 410):
            self.photos.update(photo.sha256, upload_url=None, offset=0)
            return None
        if r.status_code != 200:
            raise UploadInterruptedError(f"HEAD: HTTP {r.status_code}")
        offset = int(r.headers["Upload-Offset"])
        self.photos.update(photo.sha256, offset=offset)
        return _At(offset, r.headers.get("Media-Id"))

    def _create(self, photo: Photo, length: int) -> str:
        meta = {
            "filename": photo.path.name,
            "filetype": photo.content_type,
            "sha256": photo.sha256,
            "media_id": photo.media_id,
        }
        r = self._call(
            "POST",
            self.base_url + UPLOADS,
            headers=self._headers(**{"Upload-Length": str(length), "Upload-Metadata": _meta(meta)}),
        )
        if r.status_code in _FINAL:
            raise _Refused(_code(r))
        if r.status_code != 201:
            raise UploadInterruptedError(f"POST: HTTP {r.status_code}")
        self._step("created")
        url = self._url(r.headers["Location"])
        self.photos.update(photo.sha256, state=PhotoState.UPLOADING, upload_url=url, offset=0)
        return url

    def _failed(self, photo: Photo, code: str, sent: int) -> UploadResult:
        self.photos.update(photo.sha256, state=PhotoState.FAILED, error=code)
        return UploadResult(photo.sha256, PhotoState.FAILED, photo.media_id, sent, code)


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code
