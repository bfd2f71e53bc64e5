"""Media objects (photos as evidence), known by the SHA-256 of their bytes."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from schemas.common import Input, Output

Sha256 = Annotated[
    str,
    msgspec.Meta(pattern="^[0-9a-f]{64}$", description="SHA-256 of the bytes, lower-case hex"),
]


class MediaStatus(enum.StrEnum):
    """`pending` until the bytes arrive and verify, then `stored`."""

    PENDING = "pending"
    STORED = "stored"


class MediaExif(Output):
    """Evidence read from the original's EXIF (only shown to roles that may see the original).

    `captured_local` is the camera's wall clock without a zone (ISO text), as written.
    """

    latitude: float | None = None
    longitude: float | None = None
    altitude_m: float | None = None
    gps_accuracy_m: float | None = None
    gps_time: datetime | None = None
    captured_at: datetime | None = None
    captured_local: str | None = None
    orientation: int = 1
    make: str | None = None
    model: str | None = None


class Media(Output):
    """A media object. `exif` is null for users who may not see the original."""

    id: uuid.UUID
    sha256: str
    status: MediaStatus
    content_type: str | None
    size: int | None
    width: int | None
    height: int | None
    filename: str | None
    uploaded_by: uuid.UUID | None
    created_at: datetime
    stored_at: datetime | None
    exif: MediaExif | None = None


class MediaDeclare(Input):
    """Declare a photo by its hash before (or after) its bytes arrive; idempotent per hash."""

    sha256: Sha256
    content_type: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    filename: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    id: uuid.UUID | None = None
