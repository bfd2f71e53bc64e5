"""Validation refuses what we do not accept, each with its stable code, and accepts the rest."""

from __future__ import annotations

import pytest

from media.errors import MediaRejected
from media.process import ingest
from media.validate import Limits, normalise_content_type, sniff_type, validate
from tests.unit.media import images


def rejected(data: bytes, declared: str | None = None, limits: Limits | None = None) -> str:
    """The code `validate` and `ingest` both refuse `data` with (they must agree)."""
    with pytest.raises(MediaRejected) as by_validate:
        validate(data, declared, limits)
    with pytest.raises(MediaRejected) as by_ingest:
        ingest(data, declared, limits)
    assert by_validate.value.code == by_ingest.value.code
    return by_validate.value.code


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (images.jpeg(), "image/jpeg"),
        (images.png(), "image/png"),
        (images.webp(), "image/webp"),
    ],
    ids=["jpeg", "png", "webp"],
)
def test_accepts_allowed_types_detected_by_content(data: bytes, content_type: str) -> None:
    facts = validate(data, None)
    assert facts.content_type == content_type
    assert (facts.width, facts.height) == (64, 48)
    # The right declaration, with parameters, in any case, or an alias, is fine too.
    assert validate(data, content_type.upper() + "; charset=binary").content_type == content_type


@pytest.mark.parametrize("declared", [None, "", "application/octet-stream", "image/jpg"])
def test_generic_or_alias_declarations_are_not_held_against_a_jpeg(declared: str | None) -> None:
    assert validate(images.jpeg(), declared).content_type == "image/jpeg"


def test_gif_is_refused_as_unsupported() -> None:
    assert rejected(images.gif()) == "unsupported_type"
    assert rejected(images.gif(), "image/gif") == "unsupported_type"


def test_heic_is_recognised_and_refused_by_name() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    assert sniff_type(heic) == "image/heic"
    with pytest.raises(MediaRejected, match="image/heic") as info:
        validate(heic, "image/heic")
    assert info.value.code == "unsupported_type"
    assert info.value.status == 415


def test_non_image_is_refused() -> None:
    assert rejected(b"%PDF-1.7 not a photo", "image/jpeg") == "unsupported_type"


def test_png_declared_as_jpeg_is_a_type_mismatch() -> None:
    with pytest.raises(MediaRejected, match="declared as image/jpeg") as info:
        validate(images.png(), "image/jpeg")
    assert info.value.code == "type_mismatch"
    assert rejected(images.png(), "image/jpeg") == "type_mismatch"


def test_jpeg_declared_as_text_is_a_type_mismatch() -> None:
    assert rejected(images.jpeg(), "text/plain") == "type_mismatch"


def test_type_not_in_configured_allow_list_is_refused() -> None:
    limits = Limits(allowed_types=frozenset({"image/jpeg"}))
    assert rejected(images.webp(), None, limits) == "unsupported_type"
    assert validate(images.jpeg(), None, limits).content_type == "image/jpeg"


def test_oversize_is_refused_before_anything_else() -> None:
    data = images.jpeg()
    limits = Limits(max_bytes=len(data) - 1)
    assert rejected(data, None, limits) == "too_large"
    assert validate(data, None, Limits(max_bytes=len(data))).content_type == "image/jpeg"


def test_empty_upload_is_corrupt() -> None:
    assert rejected(b"") == "corrupt"


def test_pixel_limit_is_applied_from_the_header() -> None:
    limits = Limits(max_pixels=64 * 48 - 1)
    assert rejected(images.jpeg(64, 48), None, limits) == "too_many_pixels"
    assert validate(images.jpeg(64, 48), None, Limits(max_pixels=64 * 48)).width == 64


def test_decompression_bomb_far_beyond_pillow_limit_is_refused() -> None:
    # 100k x 100k = 10^10 pixels: Pillow raises DecompressionBombError in Image.open.
    bomb = images.png_bomb(100_000, 100_000)
    assert len(bomb) < 200
    assert rejected(bomb) == "too_many_pixels"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_above_our_limit_is_refused_before_decoding() -> None:
    # 10k x 10k = 10^8 pixels: over our 64 Mpx default, under Pillow's hard refusal (~179 Mpx).
    # Decoding it would need 300 MB; our header check refuses it first.
    assert rejected(images.png_bomb(10_000, 10_000)) == "too_many_pixels"


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_truncated_jpeg_is_corrupt(progressive: bool) -> None:
    # Large enough that ingest decodes in draft mode (1/2 scale): truncation is still found.
    data = images.encode(images.quadrant_image(3400, 2000), "JPEG", progressive=progressive)
    for cut in (len(data) // 3, len(data) - 100):
        assert rejected(data[:cut]) == "corrupt"


def test_data_after_the_jpeg_end_marker_is_accepted() -> None:
    # Phones append data after EOI (Motion Photo videos, Samsung trailers). The pixels are all
    # there; the original is stored as sent and the public derivatives are re-encoded anyway.
    data = images.jpeg(640, 480)
    assert data.endswith(b"\xff\xd9")
    assert validate(data + b"\x00\x00\x00\x18ftypmp42 video", None).content_type == "image/jpeg"


def test_jpeg_with_garbage_after_the_magic_is_corrupt() -> None:
    assert rejected(b"\xff\xd8\xff" + b"\x00garbage" * 50) == "corrupt"


def test_truncated_png_and_webp_are_corrupt() -> None:
    for data in (images.png(640, 480), images.webp(640, 480)):
        assert rejected(data[: len(data) // 2]) == "corrupt"


def test_png_with_a_damaged_data_chunk_is_corrupt() -> None:
    data = bytearray(images.png(640, 480))
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0xFF  # flips bits inside the compressed pixels; only the CRC says so
    assert rejected(bytes(data)) == "corrupt"


def test_rejection_carries_http_status_for_problem_details() -> None:
    statuses = {
        code: MediaRejected(code, "x").status
        for code in ("unsupported_type", "type_mismatch", "too_large", "too_many_pixels", "corrupt")
    }
    assert statuses == {
        "unsupported_type": 415,
        "type_mismatch": 422,
        "too_large": 413,
        "too_many_pixels": 413,
        "corrupt": 422,
    }


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (None, None),
        ("application/octet-stream", None),
        ("IMAGE/JPEG; q=1", "image/jpeg"),
        ("image/pjpeg", "image/jpeg"),
        ("image/x-png", "image/png"),
        ("image/gif", "image/gif"),
    ],
)
def test_normalise_content_type(declared: str | None, expected: str | None) -> None:
    assert normalise_content_type(declared) == expected
