"""The BlobStore and the tus UploadManager a server process uses, built from Settings."""

from __future__ import annotations

from datetime import timedelta

from media.store import BlobStore, DiskBlobStore, S3BlobStore
from media.tus import UploadManager
from media.validate import Limits
from server.config import Settings


def build_blob_store(settings: Settings) -> BlobStore:
    """Disk under `media_dir/blobs` (default), or S3 when `storage` is "s3".

    S3 reads LIANDONG_S3_BUCKET (required), _ENDPOINT_URL (MinIO, Ceph, moto; unset = AWS),
    _REGION, _PREFIX and _ACCESS_KEY_ID/_SECRET_ACCESS_KEY (unset = boto3's default chain).
    """
    if settings.storage == "disk":
        return DiskBlobStore(settings.media_dir / "blobs")
    if settings.storage == "s3":
        if not settings.s3_bucket:
            raise ValueError("LIANDONG_STORAGE=s3 needs LIANDONG_S3_BUCKET")
        return S3BlobStore.connect(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            prefix=settings.s3_prefix,
        )
    raise ValueError(f"LIANDONG_STORAGE must be 'disk' or 's3', not {settings.storage!r}")


def build_upload_manager(settings: Settings) -> UploadManager:
    """Partial tus uploads live on local disk (`media_dir/uploads`) whatever the blob store.

    Several hosts need this directory shared (with working flock) or sticky routing of
    /api/v1/uploads/{id}; see docs/media.md.
    """
    return UploadManager(
        settings.media_dir / "uploads",
        max_size=settings.media_max_bytes,
        ttl=timedelta(seconds=settings.upload_ttl_s),
    )


def media_limits(settings: Settings) -> Limits:
    """Validation limits: the configured size, the default pixel limit and types."""
    return Limits(max_bytes=settings.media_max_bytes)
