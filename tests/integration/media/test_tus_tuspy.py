"""The tus core with the real `tuspy` client over HTTP on loopback.

The server is the stdlib front in `tus_http.py` (the Litestar controller will be as thin); what
is under test is `media.tus` + `media.process` + `media.store` speaking the protocol a real
client expects, including a connection cut mid-PATCH and a resume that sends only the rest.
"""

from __future__ import annotations

import hashlib
import io

import httpx
import pytest
from PIL import Image
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.uploader.uploader import Uploader

from media.store import DiskBlobStore, display_key, original_key
from tests.integration.media.tus_http import TusServer
from tests.unit.media import images

CHUNK = 256 * 1024


def photo() -> bytes:
    """A ~1 MB JPEG with GPS, big enough to need several chunks."""
    im = images.quadrant_image(1600, 1200)
    noise = Image.effect_noise((1600, 1200), 50).convert("RGB")
    exif = images.make_exif(orientation=6, lat=31.2304, lon=121.4737, make="Phone")
    data = images.encode(Image.blend(im, noise, 0.3), "JPEG", quality=95, exif=exif)
    assert len(data) > 3 * CHUNK
    return data


def uploader(server: TusServer, data: bytes, **options: object) -> Uploader:
    client = tus_client.TusClient(server.collection_url)
    return client.uploader(
        file_stream=io.BytesIO(data),
        chunk_size=options.pop("chunk_size", CHUNK),
        metadata={"filename": "hazard.jpg", "filetype": "image/jpeg"},
        retry_delay=0,
        **options,
    )


def test_upload_in_chunks_with_checksums_is_ingested_and_stored(tus_server: TusServer) -> None:
    data = photo()
    upload = uploader(tus_server, data, upload_checksum=True)
    upload.upload()
    assert upload.url is not None
    upload_id = upload.url.rsplit("/", 1)[1]

    state = tus_server.state
    result = state.results[upload_id]
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.exif.latitude == pytest.approx(31.2304, abs=1e-6)
    assert (result.width, result.height) == (1200, 1600)
    assert state.store.get(original_key(result.sha256)) == data
    assert state.store.exists(display_key(result.sha256))
    assert [offset for _, offset, _ in state.patches] == list(range(0, len(data), CHUNK))
    assert list(state.manager.root.iterdir()) == []  # the partial upload is gone


def test_cut_connection_resumes_with_only_the_missing_bytes(tus_server: TusServer) -> None:
    data = photo()
    state = tus_server.state
    state.cut_next_patch_after = 300_000
    # One PATCH for the whole file; the server drops it after 300 kB; tuspy retries: HEAD for
    # the offset, then PATCH from there.
    upload = uploader(tus_server, data, chunk_size=len(data), retries=1)
    upload.upload()

    (first_id, first_offset, first_bytes), (second_id, second_offset, second_bytes) = state.patches
    assert first_id == second_id
    assert (first_offset, first_bytes) == (0, 300_000)
    assert (second_offset, second_bytes) == (300_000, len(data) - 300_000)
    result = state.results[first_id]
    assert state.store.get(original_key(result.sha256)) == data


def test_resume_from_a_new_uploader_after_the_app_was_killed(tus_server: TusServer) -> None:
    data = photo()
    first = uploader(tus_server, data)
    first.upload(stop_at=2 * CHUNK)  # the phone app dies here
    assert first.url is not None

    second = tus_client.TusClient(tus_server.collection_url).uploader(
        file_stream=io.BytesIO(data), url=first.url, chunk_size=CHUNK, retry_delay=0
    )
    assert second.offset == 2 * CHUNK  # learnt by HEAD
    second.upload()
    upload_id = first.url.rsplit("/", 1)[1]
    assert tus_server.state.results[upload_id].size == len(data)


def test_refused_content_answers_problem_details_and_leaves_nothing(
    tus_server: TusServer,
) -> None:
    data = images.gif(64, 64)
    upload = uploader(tus_server, data)
    with pytest.raises(TusCommunicationError):
        upload.upload()
    state = tus_server.state
    assert state.results == {}
    assert list(state.manager.root.iterdir()) == []
    assert isinstance(state.store, DiskBlobStore)
    assert [p for p in state.store.root.rglob("*") if p.is_file()] == []


def test_protocol_details_over_raw_http(tus_server: TusServer) -> None:
    url = tus_server.collection_url
    v = {"Tus-Resumable": "1.0.0"}
    with httpx.Client() as http:
        options = http.options(url)
        assert options.status_code == 204
        assert options.headers["Tus-Version"] == "1.0.0"
        assert "checksum" in options.headers["Tus-Extension"].split(",")

        old = http.post(url, headers={"Tus-Resumable": "0.2.2", "Upload-Length": "5"})
        assert old.status_code == 412
        assert old.headers["Tus-Version"] == "1.0.0"

        too_big = http.post(url, headers={**v, "Upload-Length": str(21 * 1024 * 1024)})
        assert too_big.status_code == 413
        assert too_big.headers["content-type"] == "application/problem+json"

        # creation-with-upload
        created = http.post(
            url,
            headers={
                **v,
                "Upload-Length": "10",
                "Content-Type": "application/offset+octet-stream",
            },
            content=b"01234",
        )
        assert created.status_code == 201
        assert created.headers["Upload-Offset"] == "5"
        location = url.removesuffix("/api/v1/uploads/") + created.headers["Location"]

        patch = {**v, "Content-Type": "application/offset+octet-stream"}
        conflict = http.patch(location, headers={**patch, "Upload-Offset": "3"}, content=b"x")
        assert conflict.status_code == 409
        assert conflict.headers["Upload-Offset"] == "5"

        bad = http.patch(
            location,
            headers={
                **patch,
                "Upload-Offset": "5",
                "Upload-Checksum": "md5 AAAAAAAAAAAAAAAAAAAAAA==",
            },
            content=b"56789",
        )
        assert bad.status_code == 400

        head = http.head(location, headers=v)
        assert head.status_code == 200
        assert head.headers["Upload-Offset"] == "5"
        assert head.headers["Upload-Length"] == "10"
        assert head.headers["Cache-Control"] == "no-store"
        assert "Upload-Expires" in head.headers

        deleted = http.delete(location, headers=v)
        assert deleted.status_code == 204
        assert http.head(location, headers=v).status_code == 404
