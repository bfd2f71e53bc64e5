"""The photo pipeline: downscale keeps the evidence (EXIF GPS and capture time), hashes name
the file, small JPEGs are sent as they are; the photo table tracks each photo."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from media.exif import read_exif
from mobile.core.photos import PhotoState, PhotoStore, prepare_photo
from tests.unit.media import images

LON, LAT = 121.4855, 31.2375


def _camera_jpeg(tmp: Path, size: tuple[int, int] = (400, 300)) -> Path:
    exif = images.make_exif(
        orientation=6,
        lat=LAT,
        lon=LON,
        altitude=4.5,
        taken="2026:11:20 16:20:00",
        offset="+08:00",
        make="Phone",
    )
    im = Image.blend(images.quadrant_image(*size), Image.effect_noise(size, 60).convert("RGB"), 0.3)
    path = tmp / "camera.jpg"
    path.write_bytes(images.encode(im, "JPEG", quality=95, exif=exif))
    return path


def test_downscale_keeps_gps_time_and_orientation(tmp_path: Path) -> None:
    source = _camera_jpeg(tmp_path)
    before = read_exif(Image.open(source))
    out = prepare_photo(source, tmp_path / "out", longest_edge=200, quality=85)
    with Image.open(out.path) as im:
        assert im.format == "JPEG" and max(im.size) == 200 and im.size == (200, 150)
        after = read_exif(im)
    assert (out.width, out.height) == (200, 150)
    assert after.latitude is not None and abs(after.latitude - LAT) < 1e-5
    assert after.longitude is not None and abs(after.longitude - LON) < 1e-5
    assert after.captured_at == before.captured_at is not None
    assert after.orientation == 6  # pixels not rotated: the tag stays true
    data = out.path.read_bytes()
    assert out.sha256 == hashlib.sha256(data).hexdigest() and out.size == len(data)
    assert out.path.name == f"{out.sha256}.jpg"


def test_a_jpeg_within_the_edge_is_sent_as_it_is(tmp_path: Path) -> None:
    source = _camera_jpeg(tmp_path, (160, 120))
    out = prepare_photo(source, tmp_path / "out", longest_edge=2048)
    assert out.path.read_bytes() == source.read_bytes()


def test_png_with_alpha_becomes_a_flat_jpeg(tmp_path: Path) -> None:
    source = tmp_path / "pick.png"
    source.write_bytes(images.png(300, 100, mode="RGBA"))
    out = prepare_photo(source, tmp_path / "out", longest_edge=150)
    with Image.open(out.path) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (150, 50)


def test_the_same_photo_twice_is_one_tracked_photo(tmp_path: Path) -> None:
    source = _camera_jpeg(tmp_path)
    store = PhotoStore(tmp_path / "phone.db")
    try:
        a = store.add(prepare_photo(source, tmp_path / "out", longest_edge=100))
        b = store.add(prepare_photo(source, tmp_path / "out", longest_edge=100))
        assert a == b
        store.link("hazard", "h1", [a])
        assert store.progress("hazard", "h1") == (0, 1)
        store.update(a.sha256, state=PhotoState.STORED)
        assert store.progress("hazard", "h1") == (1, 1)
        assert store.all_progress() == {("hazard", "h1"): (1, 1)}
    finally:
        store.close()
