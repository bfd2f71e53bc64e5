"""Decide whether uploaded bytes are an image we accept, before anything is stored.

The order of the checks is deliberate: cheap checks on the raw bytes first (size, magic number,
declared type), then Pillow reads only the header (dimensions, so a decompression bomb is refused
before a single pixel is allocated), and only then is the image decoded in full, which is the only
reliable way to find truncated or corrupt data.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, UnidentifiedImageError

from media.errors import MediaRejected

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
WEBP: Final = "image/webp"

#: The content types we accept and the Pillow plugin that may decode each. Pillow is told to use
#: only that plugin, so a file can never be decoded by a parser other than the one its magic number
#: selected (the classic polyglot trick).
PIL_FORMAT: Final[dict[str, str]] = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP"}

#: Declared types that mean "I don't know", which we do not hold against the client.
_GENERIC_TYPES: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_ALIASES: Final[dict[str, str]] = {
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "image/x-png": PNG,
    "image/x-webp": WEBP,
}
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\xff\xd8\xff", JPEG),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
)

#: Exceptions Pillow raises for malformed input. Pillow is not consistent: plugins raise OSError
#: (truncation), SyntaxError (bad headers), ValueError/EOFError/struct.error (short reads),
#: zlib.error (PNG), so we list them once here and turn all of them into `corrupt`.
_DECODE_ERRORS: Final = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What the pipeline accepts. Defaults fit phone photos up to 50 megapixels.

    `max_pixels` is checked from the header, before decoding. Pillow's own bomb guard
    (`Image.MAX_IMAGE_PIXELS`, about 89 Mpx, refusing outright at twice that) still applies
    underneath, so a limit above ~179 Mpx also needs `Image.MAX_IMAGE_PIXELS` raised.
    """

    max_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 64_000_000
    allowed_types: frozenset[str] = field(default_factory=lambda: frozenset(PIL_FORMAT))


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What `validate` learnt: the sniffed content type and the stored (un-rotated) dimensions."""

    content_type: str
    width: int
    height: int


def sniff_type(data: bytes) -> str | None:
    """Return the content type the magic number announces, or None if we do not recognise it.

    Recognises more than we accept (GIF, HEIC, AVIF, TIFF, BMP) so that a refusal can name what
    the client actually sent.
    """
    head = data[:32]
    for prefix, content_type in _MAGIC:
        if head.startswith(prefix):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "image/heic"
        if brand in _AVIF_BRANDS:
            return "image/avif"
    return None


def normalise_content_type(declared: str | None) -> str | None:
    """Lower-case a declared Content-Type, drop its parameters and map common aliases.

    Returns None when the declaration says nothing (absent or a generic octet-stream type).
    """
    if declared is None:
        return None
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type in _GENERIC_TYPES:
        return None
    return _ALIASES.get(media_type, media_type)


def check_bytes(data: bytes, declared_type: str | None, limits: Limits) -> str:
    """Run the checks that need no decoding; return the sniffed content type.

    Raises `MediaRejected` with `too_large`, `corrupt` (empty), `unsupported_type` or
    `type_mismatch` (the declared type names a different format than the bytes are).
    """
    if len(data) > limits.max_bytes:
        raise MediaRejected("too_large", f"{len(data)} bytes, the limit is {limits.max_bytes}")
    if not data:
        raise MediaRejected("corrupt", "the upload is empty")
    sniffed = sniff_type(data)
    if sniffed is None:
        raise MediaRejected("unsupported_type", "the content is not a recognised image format")
    if sniffed not in limits.allowed_types or sniffed not in PIL_FORMAT:
        allowed = ", ".join(sorted(limits.allowed_types))
        raise MediaRejected("unsupported_type", f"{sniffed} is not accepted; send {allowed}")
    declared = normalise_content_type(declared_type)
    if declared is not None and declared != sniffed:
        raise MediaRejected("type_mismatch", f"declared as {declared} but the content is {sniffed}")
    return sniffed


def open_image(data: bytes, content_type: str, limits: Limits) -> Image.Image:
    """Open `data` with the one Pillow plugin for `content_type`, reading only the header.

    Refuses with `too_many_pixels` before any pixel memory is allocated, and with `corrupt`
    when the header does not parse. The caller decodes (see `decode`).
    """
    try:
        im = Image.open(io.BytesIO(data), formats=[PIL_FORMAT[content_type]])
    except Image.DecompressionBombError as exc:
        raise MediaRejected("too_many_pixels", str(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise MediaRejected("corrupt", f"unreadable {content_type} header: {exc}") from exc
    width, height = im.size
    if width <= 0 or height <= 0:
        raise MediaRejected("corrupt", f"invalid dimensions {width}x{height}")
    if width * height > limits.max_pixels:
        raise MediaRejected(
            "too_many_pixels",
            f"{width}x{height} is {width * height} pixels, the limit is {limits.max_pixels}",
        )
    return im


def decode(im: Image.Image, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode every byte of the image data, optionally at reduced scale (JPEG only).

    With `draft_size`, libjpeg scales by 1/2, 1/4 or 1/8 inside the IDCT while still entropy-
    decoding the whole scan, so truncation and corruption are found exactly as in a full decode,
    at a fraction of the cost. Raises `MediaRejected("corrupt")` on any decoding failure.
    """
    try:
        if draft_size is not None and im.format == "JPEG":
            im.draft("RGB", draft_size)
        im.load()
    except Image.DecompressionBombError as exc:  # pragma: no cover - open_image checks first
        raise MediaRejected("too_many_pixels", str(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise MediaRejected("corrupt", f"the image data does not decode: {exc}") from exc
    return im


def verify_png(data: bytes) -> None:
    """Check every PNG chunk CRC (Pillow's `load` does not check IDAT CRCs)."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as probe:
            probe.verify()
    except _DECODE_ERRORS as exc:
        raise MediaRejected("corrupt", f"PNG structure is damaged: {exc}") from exc


def validate(data: bytes, declared_type: str | None, limits: Limits | None = None) -> ImageFacts:
    """Accept or refuse `data` as an image, decoding it fully. Raises `MediaRejected`.

    Use this when only a verdict is needed; `media.process.ingest` runs the same checks while
    decoding once for its derivatives.
    """
    limits = limits or Limits()
    content_type = check_bytes(data, declared_type, limits)
    im = open_image(data, content_type, limits)
    if content_type == PNG:
        verify_png(data)  # after open_image, so a bomb is refused by our check first
    with im:
        width, height = im.size
        decode(im)
    return ImageFacts(content_type=content_type, width=width, height=height)
