"""Factories for test images, built with Pillow at test time (no binary fixtures in the repo)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

GPS_IFD = 0x8825
EXIF_IFD = 0x8769

# Four distinct corner colours: after any EXIF orientation the corners tell which transform ran.
QUADRANTS = ((220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 40))


def quadrant_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """An image split in four flat-colour quadrants (TL red, TR green, BL blue, BR yellow)."""
    im = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    boxes = (
        (0, 0, half_w, half_h),
        (half_w, 0, width, half_h),
        (0, half_h, half_w, height),
        (half_w, half_h, width, height),
    )
    for box, colour in zip(boxes, QUADRANTS, strict=True):
        im.paste(colour, box)
    return im.convert(mode) if mode != "RGB" else im


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Decimal degrees (unsigned) as EXIF degree/minute/second rationals, as phones write them."""
    degrees = int(value)
    minutes_f = (value - degrees) * 60
    minutes = int(minutes_f)
    seconds = Fraction((minutes_f - minutes) * 60).limit_denominator(10_000)
    return (
        IFDRational(degrees, 1),
        IFDRational(minutes, 1),
        IFDRational(seconds.numerator, seconds.denominator),
    )


def make_exif(
    *,
    orientation: int | None = None,
    lat: float | None = None,
    lon: float | None = None,
    altitude: float | None = None,
    gps_date: str | None = None,
    gps_time: Sequence[float] | None = None,
    taken: str | None = None,
    offset: str | None = None,
    subsec: str | None = None,
    make: str | None = None,
) -> Image.Exif:
    """Build an EXIF block with the given tags (GPS IFD 0x8825, Exif IFD 0x8769)."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if make is not None:
        exif[0x010F] = make
    if lat is not None and lon is not None:
        gps = exif.get_ifd(GPS_IFD)
        gps[1] = "N" if lat >= 0 else "S"
        gps[2] = dms(abs(lat))
        gps[3] = "E" if lon >= 0 else "W"
        gps[4] = dms(abs(lon))
        if altitude is not None:
            gps[5] = b"\x01" if altitude < 0 else b"\x00"
            gps[6] = IFDRational(Fraction(abs(altitude)).limit_denominator(1000))
    if gps_date is not None and gps_time is not None:
        gps = exif.get_ifd(GPS_IFD)
        gps[29] = gps_date
        gps[7] = tuple(IFDRational(Fraction(v).limit_denominator(1000)) for v in gps_time)
    if taken is not None:
        sub = exif.get_ifd(EXIF_IFD)
        sub[0x9003] = taken
        if offset is not None:
            sub[0x9011] = offset
        if subsec is not None:
            sub[0x9291] = subsec
    return exif


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode an image to bytes in `fmt` with Pillow save parameters."""
    exif = params.get("exif")
    if isinstance(exif, Image.Exif):
        # Pillow's PNG writer skips an Exif whose main IFD is empty (GPS-only) as falsy.
        params["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(
    width: int = 64, height: int = 48, exif: Image.Exif | None = None, **params: object
) -> bytes:
    """A quadrant JPEG, optionally with EXIF."""
    if exif is not None:
        params["exif"] = exif
    return encode(quadrant_image(width, height), "JPEG", quality=90, **params)


def png(width: int = 64, height: int = 48, mode: str = "RGB", **params: object) -> bytes:
    """A quadrant PNG."""
    return encode(quadrant_image(width, height, mode), "PNG", **params)


def webp(width: int = 64, height: int = 48, **params: object) -> bytes:
    """A quadrant WebP."""
    return encode(quadrant_image(width, height), "WEBP", quality=90, **params)


def gif(width: int = 16, height: int = 16) -> bytes:
    """A GIF (a type we refuse)."""
    return encode(quadrant_image(width, height), "GIF")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that declares `width` x `height` pixels.

    The data is a few compressed bytes; a decoder that trusted the header would allocate
    width*height*3 bytes before noticing anything.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks
