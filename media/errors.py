"""Typed refusals of the media pipeline.

Every refusal carries a stable machine `code` (part of the API contract: the server puts it in the
RFC 9457 problem's `type`/`code` member and phones switch on it) and a human `detail`.
"""

from __future__ import annotations

from typing import Final, Literal

RejectCode = Literal[
    "unsupported_type",
    "type_mismatch",
    "too_large",
    "too_many_pixels",
    "corrupt",
]

#: HTTP status the server should answer with for each code. 415 for a type we do not take,
#: 413 for size, 422 for content that parsed as the wrong thing or did not parse at all.
HTTP_STATUS: Final[dict[str, int]] = {
    "unsupported_type": 415,
    "type_mismatch": 422,
    "too_large": 413,
    "too_many_pixels": 413,
    "corrupt": 422,
}


class MediaError(Exception):
    """Base class of every error raised on purpose by `media`."""


class MediaRejected(MediaError):
    """The bytes are not an image we accept. Nothing derived from them has been stored.

    `code` is one of `RejectCode` and never changes meaning; `detail` is for people and may.
    """

    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: RejectCode = code
        self.detail = detail

    @property
    def status(self) -> int:
        """The HTTP status the problem-details response should carry."""
        return HTTP_STATUS[self.code]


class BlobNotFound(MediaError, KeyError):
    """`BlobStore.get`/`size`/`open` was asked for a key that is not stored."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"blob not found: {self.key}"
