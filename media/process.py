"""Ingest one uploaded photo: validate, hash, read EXIF, orient, and render public derivatives.

`ingest` decodes the image once. For JPEG it asks libjpeg for a reduced-scale decode (draft
mode: the IDCT produces 1/2, 1/4 or 1/8 of the pixels directly) no smaller than the display
derivative, which validates the whole entropy-coded stream while costing a fraction of a full
decode; the thumbnail is then made from the display image, not from the original.

Derivatives are new JPEG files built from pixels only: no EXIF, no XMP, no ICC profile (colours
are converted to sRGB first), no comment. The original keeps its EXIF and is stored untouched.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageCms

from media.errors import MediaRejected
from media.exif import ExifInfo, read_exif
from media.store import BlobStore, display_key, original_key, thumbnail_key
from media.validate import PNG, Limits, check_bytes, decode, open_image, verify_png

DERIVATIVE_TYPE: Final = "image/jpeg"

#: EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True, slots=True)
class DerivativeSpec:
    """Sizes (long edge, px) and JPEG qualities of the public derivatives. Never upscales."""

    display_edge: int = 1600
    thumbnail_edge: int = 320
    display_quality: int = 82
    thumbnail_quality: int = 75


@dataclass(frozen=True, slots=True)
class Derivative:
    """One public rendition: a metadata-free JPEG, upright, sRGB."""

    content_type: str
    data: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Everything the server keeps about an accepted photo.

    `sha256` (lower-case hex) and `size` describe the original bytes exactly as received;
    `width`/`height` are the upright dimensions (after EXIF orientation).
    """

    sha256: str
    content_type: str
    size: int
    width: int
    height: int
    exif: ExifInfo
    display: Derivative
    thumbnail: Derivative


def fit(width: int, height: int, long_edge: int) -> tuple[int, int]:
    """Scale (width, height) so the longer side is at most `long_edge`, keeping the aspect ratio.

    Never upscales and never returns a zero side.
    """
    longest = max(width, height)
    if longest <= long_edge:
        return width, height
    scale = long_edge / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb_or_l(im: Image.Image) -> Image.Image:
    """Bring any decoded mode to RGB or L (or CMYK, which the ICC step converts)."""
    if im.mode in ("RGB", "L", "CMYK"):
        return im
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        # JPEG has no alpha: flatten onto white, which is how viewers show transparent photos.
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    description = ImageCms.getProfileDescription(profile) or ""
    if mode == "RGB" and "srgb" in description.lower():
        return None  # already sRGB: dropping the profile changes nothing
    return ImageCms.buildTransform(profile, _SRGB, mode, "RGB")


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to sRGB using the embedded profile so colours survive dropping the profile."""
    if icc and im.mode in ("RGB", "CMYK"):
        try:
            transform = _transform_to_srgb(icc, im.mode)
        except (ImageCms.PyCMSError, OSError, ValueError):
            transform = None  # a broken profile: fall back to the numbers as they are
        if transform is not None:
            converted = ImageCms.applyTransform(im, transform)
            if converted is not None:
                return converted
    return im.convert("RGB") if im.mode == "CMYK" else im


def _encode(im: Image.Image, quality: int) -> Derivative:
    # A fresh info dict: Pillow's JPEG writer copies a comment from im.info, and we promise no
    # metadata at all. exif/icc/xmp are passed empty so no Pillow default can add them back.
    im.info = {}
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=quality, exif=b"", icc_profile=None, optimize=False)
    return Derivative(DERIVATIVE_TYPE, buffer.getvalue(), im.width, im.height)


def ingest(
    data: bytes,
    declared_type: str | None,
    limits: Limits | None = None,
    spec: DerivativeSpec | None = None,
) -> IngestResult:
    """Validate `data` and produce everything the server stores for it. Pure: stores nothing.

    Raises `MediaRejected` (see `media.errors`) for anything we do not accept; never raises a
    Pillow exception for bad input. Thread-safe: run it in a worker thread from async code.
    """
    limits = limits or Limits()
    spec = spec or DerivativeSpec()
    content_type = check_bytes(data, declared_type, limits)
    sha256 = hashlib.sha256(data).hexdigest()
    im = open_image(data, content_type, limits)
    with im:
        if content_type == PNG:
            verify_png(data)
        raw_width, raw_height = im.size
        display_size = fit(raw_width, raw_height, spec.display_edge)
        decode(im, draft_size=display_size)
        # After decode: PNG may keep eXIf after the image data, which getexif() would otherwise
        # load (decode) outside our error mapping.
        exif = read_exif(im)
        icc = im.info.get("icc_profile")
        try:
            pixels = _to_rgb_or_l(im)
            if pixels.size != display_size:
                # Draft decoding already scaled by a power of two, leaving a <2x reduction for
                # which bilinear (area-aware in Pillow when shrinking) is indistinguishable from
                # Lanczos at half the cost. reducing_gap helps PNG/WebP, which have no draft.
                pixels = pixels.resize(display_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            pixels = _to_srgb(pixels, icc if isinstance(icc, bytes) else None)
            transpose = _TRANSPOSE.get(exif.orientation)
            if transpose is not None:
                pixels = pixels.transpose(transpose)
            # reducing_gap=1.5: a cheap box reduction by an integer factor first, then Lanczos
            # over the last <1.5x; invisible at 320 px and about twice as fast as 2.0.
            thumb = pixels.resize(
                fit(pixels.width, pixels.height, spec.thumbnail_edge),
                Image.Resampling.LANCZOS,
                reducing_gap=1.5,
            )
        except (ValueError, OSError) as exc:
            raise MediaRejected("corrupt", f"cannot convert the pixels: {exc}") from exc
        display = _encode(pixels, spec.display_quality)
        thumbnail = _encode(thumb, spec.thumbnail_quality)

    width, height = raw_width, raw_height
    if exif.orientation in _SWAPS_AXES:
        width, height = height, width
    return IngestResult(
        sha256=sha256,
        content_type=content_type,
        size=len(data),
        width=width,
        height=height,
        exif=exif,
        display=display,
        thumbnail=thumbnail,
    )


def store_ingested(store: BlobStore, result: IngestResult, original: bytes) -> None:
    """Put the derivatives and then the original into `store`, idempotently.

    The original goes last, so `store.exists(original_key(sha))` implies the derivatives are
    there too. Safe to call again after a failure: content-addressed puts of existing keys are
    no-ops. Whether the media record is `stored` is the database's business, not this one's.
    """
    store.put_bytes(display_key(result.sha256), result.display.data, result.display.content_type)
    store.put_bytes(
        thumbnail_key(result.sha256), result.thumbnail.data, result.thumbnail.content_type
    )
    store.put_bytes(original_key(result.sha256), original, result.content_type)
