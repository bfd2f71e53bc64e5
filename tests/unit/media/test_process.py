"""Ingest: orientation applied, hashes exact, derivatives sized right and free of metadata."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageOps
from PIL.PngImagePlugin import PngInfo

from media.process import IngestResult, ingest, store_ingested
from media.store import DiskBlobStore, display_key, original_key, thumbnail_key
from tests.unit.media import images

SECRET = "31.2304N 121.4737E home of the reporter"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf'
    b'-syntax-ns#"><rdf:Description exif:GPSLatitude="31,13.8N"/></rdf:RDF></x:xmpmeta>'
)


def assert_no_metadata(data: bytes) -> None:
    """Reopen a derivative and prove nothing but pixels is in it."""
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        assert len(im.getexif()) == 0
        assert {"exif", "xmp", "icc_profile", "comment", "photoshop"}.isdisjoint(im.info)
        # Only the JFIF APP0 segment: no APP1 (EXIF/XMP), APP2 (ICC), APP13 (IPTC).
        assert all(marker == "APP0" for marker, _ in getattr(im, "applist", []))
    for needle in (b"Exif\x00", b"http://ns.adobe.com/xap", b"ICC_PROFILE", SECRET.encode()):
        assert needle not in data


def rich_jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    exif = images.make_exif(
        orientation=orientation,
        lat=-31.2304,
        lon=-121.4737,
        altitude=4.0,
        taken="2024:05:06 18:20:30",
        offset="+08:00",
        make="TestCam",
    )
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return images.jpeg(width, height, exif=exif, xmp=XMP, icc_profile=srgb, comment=SECRET.encode())


def test_jpeg_result_describes_the_original_exactly() -> None:
    data = rich_jpeg(640, 480)
    result = ingest(data, "image/jpeg")
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert result.content_type == "image/jpeg"
    assert (result.width, result.height) == (640, 480)
    assert result.exif.latitude == pytest.approx(-31.2304, abs=1e-6)
    assert result.exif.longitude == pytest.approx(-121.4737, abs=1e-6)
    assert result.exif.make == "TestCam"


def test_derivatives_of_a_jpeg_carry_no_metadata() -> None:
    source = rich_jpeg(640, 480, orientation=6)
    with Image.open(io.BytesIO(source)) as original:  # the fixture really has all of it
        assert {"exif", "xmp", "icc_profile", "comment"} <= set(original.info)
    result = ingest(source, None)
    assert_no_metadata(result.display.data)
    assert_no_metadata(result.thumbnail.data)


def test_derivatives_of_png_and_webp_carry_no_metadata() -> None:
    exif = images.make_exif(lat=10.0, lon=20.0)
    text = PngInfo()
    text.add_text("Comment", SECRET)
    png = images.png(300, 200, exif=exif, pnginfo=text)
    webp = images.webp(300, 200, exif=exif, xmp=XMP)
    for data in (png, webp):
        result = ingest(data, None)
        assert result.exif.latitude == pytest.approx(10.0, abs=1e-6)
        assert_no_metadata(result.display.data)
        assert_no_metadata(result.thumbnail.data)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_like_exif_transpose(orientation: int) -> None:
    source = images.jpeg(400, 300, exif=images.make_exif(orientation=orientation))
    result = ingest(source, "image/jpeg")
    swapped = orientation >= 5
    assert (result.width, result.height) == ((300, 400) if swapped else (400, 300))
    assert result.exif.orientation == orientation

    with Image.open(io.BytesIO(source)) as im:
        expected = ImageOps.exif_transpose(im)
    with Image.open(io.BytesIO(result.display.data)) as display:
        assert display.size == expected.size
        corners = ((10, 10), (display.width - 10, 10), (10, display.height - 10))
        for xy in corners:
            got, want = display.getpixel(xy), expected.getpixel(xy)
            assert isinstance(got, tuple)
            assert isinstance(want, tuple)
            assert all(abs(a - b) < 40 for a, b in zip(got, want, strict=True)), (xy, got, want)


def test_large_jpeg_derivative_sizes_use_the_long_edge() -> None:
    # Big enough that draft decoding kicks in (3400 -> 1700 at 1/2 scale, then 1600).
    result = ingest(rich_jpeg(3400, 2000, orientation=8), None)
    assert (result.width, result.height) == (2000, 3400)
    assert (result.display.width, result.display.height) == (941, 1600)
    assert (result.thumbnail.width, result.thumbnail.height) == (188, 320)
    with Image.open(io.BytesIO(result.display.data)) as display:
        assert display.size == (941, 1600)


def test_small_images_are_not_upscaled() -> None:
    result = ingest(images.png(200, 100), None)
    assert (result.display.width, result.display.height) == (200, 100)
    assert (result.thumbnail.width, result.thumbnail.height) == (200, 100)


def test_transparent_png_is_flattened_on_white() -> None:
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 50, 100))
    result = ingest(images.encode(im, "PNG"), "image/png")
    with Image.open(io.BytesIO(result.display.data)) as display:
        assert display.mode == "RGB"
        red, white = display.getpixel((10, 50)), display.getpixel((90, 50))
    assert isinstance(red, tuple)
    assert isinstance(white, tuple)
    assert red[0] > 200 and red[1] < 50
    assert min(white) > 240


@pytest.mark.parametrize("size", [(120, 80), (3400, 2000)], ids=["small", "draft-decoded"])
def test_cmyk_jpeg_becomes_rgb(size: tuple[int, int]) -> None:
    data = images.encode(images.quadrant_image(*size).convert("CMYK"), "JPEG")
    result = ingest(data, None)
    with Image.open(io.BytesIO(result.display.data)) as display:
        assert display.mode == "RGB"
        red = display.getpixel((5, 5))
    assert isinstance(red, tuple)
    assert red[0] > 180 and red[1] < 80  # the top-left quadrant is still red


def test_grayscale_stays_grayscale() -> None:
    result = ingest(images.encode(Image.linear_gradient("L"), "PNG"), None)
    with Image.open(io.BytesIO(result.thumbnail.data)) as thumb:
        assert thumb.mode == "L"


def test_same_bytes_ingest_identically() -> None:
    data = rich_jpeg(800, 600, orientation=3)
    first, second = ingest(data, None), ingest(data, None)
    assert first == second  # deterministic: derivatives can be keyed by the original's hash


def test_store_ingested_puts_three_blobs_once(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path / "blobs")
    data = rich_jpeg(640, 480)
    result: IngestResult = ingest(data, None)
    store_ingested(store, result, data)
    store_ingested(store, result, data)  # the same photo sent twice is stored once
    assert store.get(original_key(result.sha256)) == data
    assert store.get(display_key(result.sha256)) == result.display.data
    assert store.get(thumbnail_key(result.sha256)) == result.thumbnail.data
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 3
