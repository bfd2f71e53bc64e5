"""Read the EXIF facts a hazard report needs as evidence: where and when the photo was taken.

EXIF is written by thousands of camera firmwares, many of them wrong. Every field is read on its
own and a malformed field becomes None; reading EXIF never refuses a photo (GPS can be off, and
the report, not the photo, is judged).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

import msgspec
from PIL import Image

_ORIENTATION: Final = 0x0112
_MAKE: Final = 0x010F
_MODEL: Final = 0x0110
_EXIF_IFD: Final = 0x8769
_GPS_IFD: Final = 0x8825
# Exif sub-IFD tags
_DATETIME_ORIGINAL: Final = 0x9003
_DATETIME_DIGITIZED: Final = 0x9004
_OFFSET_TIME_ORIGINAL: Final = 0x9011
_OFFSET_TIME_DIGITIZED: Final = 0x9012
_SUBSEC_ORIGINAL: Final = 0x9291
_SUBSEC_DIGITIZED: Final = 0x9292
# GPS IFD tags
_GPS_LAT_REF: Final = 1
_GPS_LAT: Final = 2
_GPS_LON_REF: Final = 3
_GPS_LON: Final = 4
_GPS_ALT_REF: Final = 5
_GPS_ALT: Final = 6
_GPS_TIME: Final = 7
_GPS_DATE: Final = 29
_GPS_H_ERROR: Final = 31

#: Errors a malformed EXIF field can raise while we convert it; caught per field.
_FIELD_ERRORS: Final = (
    ValueError,
    TypeError,
    ZeroDivisionError,
    IndexError,
    KeyError,
    OverflowError,
    AttributeError,
)
#: Errors Pillow raises while parsing a broken EXIF block as a whole.
_BLOCK_ERRORS: Final = (*_FIELD_ERRORS, OSError, SyntaxError, struct.error, EOFError)

_OFFSET_RE: Final = re.compile(r"^([+-])(\d{2}):(\d{2})$")


class ExifInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Evidence read from a photo's EXIF. Every field is optional; absent means unknown.

    - `orientation`: the EXIF orientation (1-8) that was applied to derivatives and dimensions.
    - `latitude`/`longitude`: WGS-84 signed decimal degrees (south and west negative).
    - `altitude_m`: metres above sea level (negative below).
    - `gps_accuracy_m`: GPSHPositioningError, when the phone wrote one.
    - `gps_time`: the GPS fix time, timezone-aware UTC.
    - `captured_at`: DateTimeOriginal converted to timezone-aware UTC; only set when the camera
      recorded its UTC offset (OffsetTimeOriginal), because a bare EXIF time is wall-clock time
      in an unknown zone.
    - `captured_local`: DateTimeOriginal exactly as the camera wrote it (naive wall clock). When
      `captured_at` is None, compare this in the zone of the report's location, or use
      `gps_time`.
    """

    orientation: int = 1
    latitude: float | None = None
    longitude: float | None = None
    altitude_m: float | None = None
    gps_accuracy_m: float | None = None
    gps_time: datetime | None = None
    captured_at: datetime | None = None
    captured_local: datetime | None = None
    make: str | None = None
    model: str | None = None

    @property
    def has_position(self) -> bool:
        """True when both latitude and longitude were read."""
        return self.latitude is not None and self.longitude is not None

    @property
    def best_capture_time(self) -> datetime | None:
        """The best timezone-aware UTC capture time: camera time with offset, else GPS time."""
        return self.captured_at or self.gps_time


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 \t\r\n")
    return text or None


def _number(value: object) -> float:
    # IFDRational, int and float all convert; a rational with a zero denominator becomes nan.
    result = float(value)  # type: ignore[arg-type]
    if not math.isfinite(result):
        raise ValueError("non-finite EXIF number")
    return result


def _dms(value: object) -> float:
    """Degrees, minutes, seconds (any trailing part may be missing) to decimal degrees."""
    if isinstance(value, tuple | list):
        parts = [_number(v) for v in value]
    else:
        parts = [_number(value)]
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise ValueError("bad DMS value")
    degrees = parts[0]
    if len(parts) > 1:
        degrees += parts[1] / 60
    if len(parts) > 2:
        degrees += parts[2] / 3600
    return degrees


def _coordinate(
    gps: Mapping[int, object], value_tag: int, ref_tag: int, bound: float
) -> float | None:
    if value_tag not in gps:
        return None
    try:
        degrees = _dms(gps[value_tag])
    except _FIELD_ERRORS:
        return None
    ref = (_text(gps.get(ref_tag)) or "").upper()
    if ref in ("S", "W"):
        degrees = -degrees
    elif ref not in ("N", "E"):
        # Without a hemisphere the sign is a guess; a wrong sign puts evidence on another
        # continent, so an unknown is the honest answer.
        return None
    if abs(degrees) > bound:
        return None
    return round(degrees, 7)  # ~1 cm; more digits are noise from the rationals


def _altitude(gps: Mapping[int, object]) -> float | None:
    if _GPS_ALT not in gps:
        return None
    try:
        altitude = _number(gps[_GPS_ALT])
    except _FIELD_ERRORS:
        return None
    ref = gps.get(_GPS_ALT_REF, 0)
    below = ref in (1, b"\x01", "\x01") or (isinstance(ref, bytes) and ref[:1] == b"\x01")
    return -altitude if below else altitude


def _gps_time(gps: Mapping[int, object]) -> datetime | None:
    date_text = _text(gps.get(_GPS_DATE))
    stamp = gps.get(_GPS_TIME)
    if date_text is None or stamp is None:
        return None
    try:
        day = datetime.strptime(date_text, "%Y:%m:%d").replace(tzinfo=UTC)
        hms = [_number(v) for v in stamp]  # type: ignore[attr-defined]
        if len(hms) != 3 or not (0 <= hms[0] < 24 and 0 <= hms[1] < 60 and 0 <= hms[2] < 61):
            return None
        return day + timedelta(hours=hms[0], minutes=hms[1], seconds=hms[2])
    except _FIELD_ERRORS:
        return None


def _local_time(value: object, subsec: object) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        # The camera's wall clock; DTZ007 would have us attach a zone we do not know.
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")  # noqa: DTZ007
    except ValueError:
        return None  # includes the "0000:00:00 00:00:00" some cameras write for "unset"
    digits = _text(subsec)
    if digits and digits.isdigit():
        moment = moment.replace(microsecond=int((digits + "000000")[:6]))
    return moment


def _offset(value: object) -> timezone | None:
    text = _text(value)
    match = _OFFSET_RE.match(text) if text else None
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes > 59:
        return None
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def read_exif(im: Image.Image) -> ExifInfo:
    """Read orientation, GPS and capture time from an opened (not necessarily decoded) image.

    Never raises for bad EXIF: a broken block yields `ExifInfo()`, a broken field yields None.
    """
    try:
        exif = im.getexif()
        gps: Mapping[int, object] = exif.get_ifd(_GPS_IFD)
        sub: Mapping[int, object] = exif.get_ifd(_EXIF_IFD)
    except _BLOCK_ERRORS:
        return ExifInfo()

    orientation = exif.get(_ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1

    local = _local_time(sub.get(_DATETIME_ORIGINAL), sub.get(_SUBSEC_ORIGINAL))
    offset = _offset(sub.get(_OFFSET_TIME_ORIGINAL))
    if local is None:
        local = _local_time(sub.get(_DATETIME_DIGITIZED), sub.get(_SUBSEC_DIGITIZED))
        offset = _offset(sub.get(_OFFSET_TIME_DIGITIZED))
    captured_at = (
        local.replace(tzinfo=offset).astimezone(UTC) if local and offset is not None else None
    )

    accuracy: float | None = None
    if _GPS_H_ERROR in gps:
        try:
            accuracy = _number(gps[_GPS_H_ERROR])
        except _FIELD_ERRORS:
            accuracy = None

    latitude = _coordinate(gps, _GPS_LAT, _GPS_LAT_REF, 90.0)
    longitude = _coordinate(gps, _GPS_LON, _GPS_LON_REF, 180.0)
    if latitude is None or longitude is None:
        # Half a position is no position.
        latitude = longitude = None
    return ExifInfo(
        orientation=orientation,
        latitude=latitude,
        longitude=longitude,
        altitude_m=_altitude(gps),
        gps_accuracy_m=accuracy,
        gps_time=_gps_time(gps),
        captured_at=captured_at,
        captured_local=local,
        make=_text(exif.get(_MAKE)),
        model=_text(exif.get(_MODEL)),
    )
