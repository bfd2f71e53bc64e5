"""tus header parsing: Upload-Metadata, Upload-Checksum, lengths, offsets, version, dates."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media import tus

# Keys: visible ASCII without comma; values: any text (UTF-8 on the wire) or no value at all.
keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
    min_size=1,
    max_size=20,
)
values = st.one_of(st.none(), st.text(max_size=60))
metadata = st.dictionaries(keys, values, max_size=10)


def on_the_wire(meta: dict[str, str | None]) -> dict[str, str | None]:
    # HTTP strips trailing whitespace, so an empty value cannot be told from no value.
    return {key: value or None for key, value in meta.items()}


@given(metadata)
def test_metadata_round_trips(meta: dict[str, str | None]) -> None:
    header = tus.format_metadata(meta)
    assert tus.parse_metadata(header) == on_the_wire(meta)
    # What a proxy may do to the header must not change the meaning.
    assert tus.parse_metadata(header.strip()) == on_the_wire(meta)


@given(metadata)
def test_metadata_tolerates_spaces_after_commas(meta: dict[str, str | None]) -> None:
    # Some clients join pairs with ", ".
    header = ", ".join(tus.format_metadata({k: v}) for k, v in meta.items())
    assert tus.parse_metadata(header) == on_the_wire(meta)


def test_metadata_as_tuspy_sends_it() -> None:
    header = "filename dGVzdC5qcGc=,filetype aW1hZ2UvanBlZw==,is_confidential"
    assert tus.parse_metadata(header) == {
        "filename": "test.jpg",
        "filetype": "image/jpeg",
        "is_confidential": None,
    }


@pytest.mark.parametrize("header", [None, "", "   "])
def test_absent_metadata_is_empty(header: str | None) -> None:
    assert tus.parse_metadata(header) == {}


@pytest.mark.parametrize(
    "header",
    [
        "a YQ==,a Yg==",  # duplicate key
        "a not*base64",
        "a YQ== extra",
        "a " + base64.b64encode(b"\xff\xfe").decode(),  # not UTF-8
        "a YQ==,,b Yg==",  # empty key
        ",".join(f"k{i}" for i in range(tus.MAX_METADATA_PAIRS + 1)),
        "k " + "A" * tus.MAX_METADATA_CHARS,
    ],
)
def test_malformed_metadata_is_a_bad_request(header: str) -> None:
    with pytest.raises(tus.TusBadRequest) as info:
        tus.parse_metadata(header)
    assert info.value.status == 400


def test_format_refuses_keys_that_cannot_be_sent() -> None:
    for key in ("with space", "comma,key", ""):
        with pytest.raises(ValueError, match="invalid Upload-Metadata key"):
            tus.format_metadata({key: "v"})


@given(st.sampled_from(tus.CHECKSUM_ALGORITHMS), st.binary(max_size=500))
def test_checksum_round_trips(algorithm: str, data: bytes) -> None:
    parsed = tus.parse_checksum(tus.format_checksum(algorithm, data))
    assert parsed == tus.Checksum(algorithm, hashlib.new(algorithm, data).digest())


def test_checksum_absent_is_none() -> None:
    assert tus.parse_checksum(None) is None
    assert tus.parse_checksum("") is None


def test_unknown_checksum_algorithm_is_400() -> None:
    header = "md5 " + base64.b64encode(b"\x00" * 16).decode()
    with pytest.raises(tus.ChecksumAlgorithmUnsupported) as info:
        tus.parse_checksum(header)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "header",
    [
        "sha256",
        "sha256 !!!notbase64",
        "sha256 " + base64.b64encode(b"short").decode(),
        "sha1 " + base64.b64encode(b"\x00" * 32).decode(),
    ],
)
def test_malformed_checksum_is_400(header: str) -> None:
    with pytest.raises(tus.TusBadRequest):
        tus.parse_checksum(header)


@pytest.mark.parametrize("value", [None, "", "-1", "1.5", "1e3", "abc", "9" * 20])
def test_bad_lengths_and_offsets_are_400(value: str | None) -> None:
    with pytest.raises(tus.TusBadRequest):
        tus.parse_length(value)
    with pytest.raises(tus.TusBadRequest):
        tus.parse_offset(value)


def test_good_lengths_and_offsets() -> None:
    assert tus.parse_length("0") == 0
    assert tus.parse_offset(" 12345 ") == 12345


@pytest.mark.parametrize("version", [None, "", "0.2.2", "1.0"])
def test_other_versions_are_412_with_supported_versions(version: str | None) -> None:
    with pytest.raises(tus.VersionUnsupported) as info:
        tus.check_version(version)
    assert info.value.status == 412
    assert info.value.headers["Tus-Version"] == "1.0.0"
    assert info.value.headers["Tus-Resumable"] == "1.0.0"


def test_version_1_0_0_is_accepted() -> None:
    tus.check_version("1.0.0")


def test_patch_content_type() -> None:
    tus.check_patch_content_type("application/offset+octet-stream")
    tus.check_patch_content_type("Application/Offset+Octet-Stream; x=y")
    for bad in (None, "application/octet-stream", "image/jpeg"):
        with pytest.raises(tus.UnsupportedPatchType) as info:
            tus.check_patch_content_type(bad)
        assert info.value.status == 415


def test_http_date_is_imf_fixdate_in_gmt() -> None:
    moment = datetime(2024, 5, 6, 18, 20, 30, tzinfo=timezone(timedelta(hours=8)))
    assert tus.http_date(moment) == "Mon, 06 May 2024 10:20:30 GMT"
    assert tus.http_date(moment.astimezone(UTC)) == "Mon, 06 May 2024 10:20:30 GMT"
