"""EXIF evidence: signed decimal degrees, altitude, GPS time and capture time, read defensively."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from media.exif import ExifInfo, read_exif
from tests.unit.media import images


def exif_of(data: bytes) -> ExifInfo:
    with Image.open(io.BytesIO(data)) as im:
        return read_exif(im)


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(39.9042, 116.4074), (-33.8568, 151.2153), (40.7128, -74.0060), (-22.9068, -43.1729)],
    ids=["beijing-NE", "sydney-SE", "new-york-NW", "rio-SW"],
)
def test_gps_hemispheres_give_signed_degrees(lat: float, lon: float) -> None:
    info = exif_of(images.jpeg(exif=images.make_exif(lat=lat, lon=lon)))
    assert info.latitude == pytest.approx(lat, abs=1e-6)
    assert info.longitude == pytest.approx(lon, abs=1e-6)
    assert info.has_position


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(min_value=-89.999, max_value=89.999),
    lon=st.floats(min_value=-179.999, max_value=179.999),
)
def test_any_position_round_trips_through_exif_rationals(lat: float, lon: float) -> None:
    info = exif_of(images.jpeg(8, 8, exif=images.make_exif(lat=lat, lon=lon)))
    # 1/10000 of an arc-second in the seconds rational: far below GPS accuracy.
    assert info.latitude == pytest.approx(lat, abs=1e-6)
    assert info.longitude == pytest.approx(lon, abs=1e-6)


def test_altitude_below_sea_level_is_negative() -> None:
    above = exif_of(images.jpeg(exif=images.make_exif(lat=1, lon=1, altitude=43.5)))
    below = exif_of(images.jpeg(exif=images.make_exif(lat=1, lon=1, altitude=-12.25)))
    assert above.altitude_m == pytest.approx(43.5)
    assert below.altitude_m == pytest.approx(-12.25)


def test_gps_timestamp_is_utc() -> None:
    exif = images.make_exif(gps_date="2024:05:06", gps_time=(10, 20, 30.5))
    assert exif_of(images.jpeg(exif=exif)).gps_time == datetime(
        2024, 5, 6, 10, 20, 30, 500000, tzinfo=UTC
    )


def test_capture_time_with_offset_becomes_aware_utc() -> None:
    exif = images.make_exif(taken="2024:05:06 18:20:30", offset="+08:00", subsec="25")
    info = exif_of(images.jpeg(exif=exif))
    assert info.captured_at == datetime(2024, 5, 6, 10, 20, 30, 250000, tzinfo=UTC)
    assert info.captured_local == datetime(2024, 5, 6, 18, 20, 30, 250000)  # noqa: DTZ001
    assert info.best_capture_time == info.captured_at


def test_capture_time_without_offset_stays_naive_and_is_not_guessed() -> None:
    exif = images.make_exif(
        taken="2024:05:06 18:20:30", gps_date="2024:05:06", gps_time=(10, 20, 31)
    )
    info = exif_of(images.jpeg(exif=exif))
    assert info.captured_at is None
    assert info.captured_local == datetime(2024, 5, 6, 18, 20, 30)  # noqa: DTZ001
    assert info.captured_local.tzinfo is None
    # The best aware time falls back to the GPS clock.
    assert info.best_capture_time == datetime(2024, 5, 6, 10, 20, 31, tzinfo=UTC)


def test_unset_capture_time_is_none() -> None:
    info = exif_of(images.jpeg(exif=images.make_exif(taken="0000:00:00 00:00:00")))
    assert info.captured_local is None
    assert info.captured_at is None


def test_no_exif_gives_defaults() -> None:
    assert exif_of(images.png()) == ExifInfo()


def test_coordinate_without_hemisphere_is_unknown() -> None:
    exif = images.make_exif(lat=30.5, lon=114.3)
    del exif.get_ifd(images.GPS_IFD)[1]  # GPSLatitudeRef
    info = exif_of(images.jpeg(exif=exif))
    assert info.latitude is None
    assert info.longitude is None  # half a position is no position


def test_zero_denominator_rational_is_unknown_not_an_error() -> None:
    exif = images.make_exif(lat=30.5, lon=114.3)
    exif.get_ifd(images.GPS_IFD)[2] = (IFDRational(30, 0), IFDRational(0, 1), IFDRational(0, 1))
    info = exif_of(images.jpeg(exif=exif))
    assert info.latitude is None
    assert info.longitude is None


def test_out_of_range_latitude_is_unknown() -> None:
    exif = images.make_exif(lat=30.5, lon=114.3)
    exif.get_ifd(images.GPS_IFD)[2] = (IFDRational(95, 1), IFDRational(0, 1), IFDRational(0, 1))
    assert exif_of(images.jpeg(exif=exif)).latitude is None


@pytest.mark.parametrize("orientation", [0, 9, 255])
def test_invalid_orientation_means_upright(orientation: int) -> None:
    assert exif_of(images.jpeg(exif=images.make_exif(orientation=orientation))).orientation == 1


def test_camera_make_is_read() -> None:
    assert exif_of(images.jpeg(exif=images.make_exif(make="Huawei\x00"))).make == "Huawei"
