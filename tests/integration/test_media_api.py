"""Media over HTTP on both backends: tus uploads into the app, content addressing, refusals,
who may fetch what, and the S3 backend against moto's S3 server on loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from moto.server import ThreadedMotoServer
from PIL import Image

from media.store import S3BlobStore, original_key
from server.app import create_app
from server.config import Settings
from tests.conftest import Sessions, make_settings
from tests.unit.media import images

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}
SHANGHAI_A = (121.4855, 31.2375)  # inside demo grid A (lon, lat)


def photo(
    at: tuple[float, float] | None = SHANGHAI_A,
    size: tuple[int, int] = (640, 480),
    taken: str | None = None,
    offset: str | None = "+08:00",
    quality: int = 90,
) -> bytes:
    """A unique JPEG (random noise) with EXIF GPS at `at` (lon, lat) and a capture time."""
    im = images.quadrant_image(*size)
    noise = Image.effect_noise(size, 60).convert("RGB")
    lon, lat = at if at is not None else (None, None)
    exif = images.make_exif(
        orientation=6, lat=lat, lon=lon, altitude=4.5, taken=taken, offset=offset, make="Phone"
    )
    return images.encode(Image.blend(im, noise, 0.3), "JPEG", quality=quality, exif=exif)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata(data: bytes, filetype: str = "image/jpeg", declared: str | None = None) -> str:
    pairs = {"filename": "hazard.jpg", "filetype": filetype, "sha256": declared or sha(data)}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def upload(
    client: TestClient[Any] | httpx.Client,
    headers: dict[str, str],
    data: bytes,
    *,
    chunk: int | None = None,
    **meta: Any,
) -> httpx.Response:
    """tus: create, then PATCH in chunks (or creation-with-upload when `chunk` is None)."""
    create = {**headers, **TUS, "Upload-Length": str(len(data))}
    create["Upload-Metadata"] = metadata(data, **meta)
    if chunk is None:
        return client.post("/api/v1/uploads/", headers={**create, **OCTETS}, content=data)
    created = client.post("/api/v1/uploads/", headers=create)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    response = created
    for start in range(0, len(data), chunk):
        response = client.patch(
            location,
            headers={**headers, **TUS, **OCTETS, "Upload-Offset": str(start)},
            content=data[start : start + chunk],
        )
        if response.status_code != 204:
            return response
    return response


def blob_files(settings: Settings, digest: str) -> list[Path]:
    root = settings.media_dir / "blobs"
    return sorted(p for p in root.rglob(digest) if p.is_file())


def test_options_advertise_tus_without_auth(client: TestClient[Any]) -> None:
    r = client.options("/api/v1/uploads/")
    assert r.status_code == 204
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert r.headers["Tus-Version"] == "1.0.0"
    assert {"creation", "creation-with-upload", "termination", "checksum", "expiration"} <= set(
        r.headers["Tus-Extension"].split(",")
    )
    assert "sha256" in r.headers["Tus-Checksum-Algorithm"]
    assert int(r.headers["Tus-Max-Size"]) == 40 * 1024 * 1024


def test_uploads_need_a_bearer_token(client: TestClient[Any]) -> None:
    r = client.post("/api/v1/uploads/", headers={**TUS, "Upload-Length": "10"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


def test_chunked_upload_is_stored_with_exif_and_public_derivatives_are_clean(
    client: TestClient[Any], auth: Sessions, settings: Settings
) -> None:
    insp = auth("inspector1")
    data = photo(size=(1200, 900), taken="2026:11:20 10:00:00")
    digest = sha(data)
    assert client.head(f"/api/v1/media/{digest}", headers=insp).status_code == 404
    # Chunks above the app's 2 MB JSON limit would be refused elsewhere; here 3 chunks.
    done = upload(client, insp, data, chunk=len(data) // 3 + 1)
    assert done.status_code == 204, done.text
    assert done.headers["Tus-Resumable"] == "1.0.0"
    assert done.headers["Media-Sha256"] == digest
    assert client.head(f"/api/v1/media/{digest}", headers=insp).status_code == 200

    media = client.get(f"/api/v1/media/{digest}", headers=insp).json()
    assert media["status"] == "stored"
    assert media["id"] == done.headers["Media-Id"]
    assert (media["width"], media["height"]) == (900, 1200)  # EXIF orientation 6 applied
    assert media["size"] == len(data)
    assert media["exif"]["latitude"] == pytest.approx(31.2375, abs=1e-5)
    assert media["exif"]["longitude"] == pytest.approx(121.4855, abs=1e-5)
    assert media["exif"]["altitude_m"] == pytest.approx(4.5)
    assert media["exif"]["captured_at"] == "2026-11-20T02:00:00Z"

    for kind, edge in (("display", 1200), ("thumbnail", 320)):
        r = client.get(f"/api/v1/media/{digest}/{kind}", headers=insp)
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(r.content)) as im:
            assert max(im.size) == edge
            assert not im.getexif()
            assert "exif" not in im.info and "icc_profile" not in im.info
        assert b"Exif\x00\x00" not in r.content
    original = client.get(f"/api/v1/media/{digest}/original", headers=insp)
    assert original.status_code == 200
    assert original.content == data
    assert len(blob_files(settings, digest)) == 3  # original, display, thumbnail

    # Another inspector neither sees the metadata nor the derivatives of an unlinked photo;
    # the existence check stays open (it is how a phone skips an upload).
    other = auth("inspector2")
    assert client.get(f"/api/v1/media/{digest}", headers=other).status_code == 404
    assert client.get(f"/api/v1/media/{digest}/display", headers=other).status_code == 404
    assert client.get(f"/api/v1/media/{digest}/original", headers=other).status_code == 404
    assert client.head(f"/api/v1/media/{digest}", headers=other).status_code == 200


def test_uploads_belong_to_their_creator(client: TestClient[Any], auth: Sessions) -> None:
    data = photo()
    created = client.post(
        "/api/v1/uploads/",
        headers={**auth("inspector1"), **TUS, "Upload-Length": str(len(data))},
    )
    location = created.headers["Location"]
    other = auth("inspector2")
    assert client.head(location, headers={**other, **TUS}).status_code == 404
    stolen = client.patch(
        location, headers={**other, **TUS, **OCTETS, "Upload-Offset": "0"}, content=data
    )
    assert stolen.status_code == 404
    assert stolen.headers["Tus-Resumable"] == "1.0.0"
    mine = client.head(location, headers={**auth("inspector1"), **TUS})
    assert mine.status_code == 200
    assert mine.headers["Upload-Offset"] == "0"
    assert "Upload-Expires" in mine.headers
    gone = client.delete(location, headers={**auth("inspector1"), **TUS})
    assert gone.status_code == 204
    assert client.head(location, headers={**auth("inspector1"), **TUS}).status_code == 404


def test_protocol_errors_are_tus_statuses_with_problem_details(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp = auth("inspector1")
    old = client.post("/api/v1/uploads/", headers={**insp, "Tus-Resumable": "0.2.2"})
    assert old.status_code == 412
    assert old.headers["Tus-Version"] == "1.0.0"
    too_big = client.post(
        "/api/v1/uploads/", headers={**insp, **TUS, "Upload-Length": str(41 * 1024 * 1024)}
    )
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "application/problem+json"
    assert too_big.json()["code"] == "upload_too_large"

    data = photo()
    created = client.post(
        "/api/v1/uploads/", headers={**insp, **TUS, "Upload-Length": str(len(data))}
    )
    location = created.headers["Location"]
    patch = {**insp, **TUS, **OCTETS}
    bad_sum = "sha256 " + base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    mismatch = client.patch(
        location,
        headers={**patch, "Upload-Offset": "0", "Upload-Checksum": bad_sum},
        content=data[:1000],
    )
    assert mismatch.status_code == 460
    assert mismatch.json()["code"] == "checksum_mismatch"
    assert mismatch.headers["Upload-Offset"] == "0"
    assert mismatch.headers["Tus-Resumable"] == "1.0.0"
    conflict = client.patch(location, headers={**patch, "Upload-Offset": "7"}, content=b"x")
    assert conflict.status_code == 409
    wrong_type = client.patch(
        location,
        headers={**insp, **TUS, "Content-Type": "application/json", "Upload-Offset": "0"},
        content=b"{}",
    )
    assert wrong_type.status_code == 415


@pytest.mark.parametrize(
    ("make", "filetype", "status", "code"),
    [
        (lambda: images.gif(32, 32), "image/gif", 415, "unsupported_type"),
        (lambda: images.png(40, 30), "image/jpeg", 422, "type_mismatch"),
        (lambda: photo()[:-4000], "image/jpeg", 422, "corrupt"),
        (lambda: images.png_bomb(30_000, 30_000), "image/png", 413, "too_many_pixels"),
    ],
    ids=["gif", "lying-type", "truncated", "bomb"],
)
def test_refused_media_leaves_nothing_behind(
    client: TestClient[Any],
    auth: Sessions,
    settings: Settings,
    make: Any,
    filetype: str,
    status: int,
    code: str,
) -> None:
    data = make()
    digest = sha(data)
    partials = set((settings.media_dir / "uploads").glob("*.bin"))
    r = upload(client, auth("inspector1"), data, filetype=filetype)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert client.head(f"/api/v1/media/{digest}", headers=auth("admin")).status_code == 404
    assert client.get(f"/api/v1/media/{digest}", headers=auth("admin")).status_code == 404
    assert blob_files(settings, digest) == []
    assert set((settings.media_dir / "uploads").glob("*.bin")) == partials


def test_declared_sha256_that_lies_is_refused(
    client: TestClient[Any], auth: Sessions, settings: Settings
) -> None:
    data = photo()
    r = upload(client, auth("inspector1"), data, chunk=len(data), declared="0" * 64)
    assert r.status_code == 460
    assert r.json()["code"] == "sha256_mismatch"
    assert client.head(f"/api/v1/media/{sha(data)}", headers=auth("admin")).status_code == 404
    assert blob_files(settings, sha(data)) == []


def test_same_photo_twice_is_stored_once(
    client: TestClient[Any], auth: Sessions, settings: Settings
) -> None:
    data = photo()
    first = upload(client, auth("inspector1"), data)
    second = upload(client, auth("enterprise1"), data, chunk=len(data) // 2 + 1)
    assert first.status_code == 201, first.text
    assert second.status_code == 204, second.text
    assert first.headers["Media-Id"] == second.headers["Media-Id"]
    assert len(blob_files(settings, sha(data))) == 3
    audit = client.get(
        "/api/v1/audit",
        headers=auth("admin"),
        params={"entity": "media", "entity_id": first.headers["Media-Id"]},
    )
    assert audit.status_code == 200
    uploads = [e for e in audit.json() if e["action"] == "upload"]
    assert sorted(e["detail"]["deduplicated"] for e in uploads) == [False, True]


def test_declared_media_is_pending_until_its_bytes_arrive(
    client: TestClient[Any], auth: Sessions
) -> None:
    insp = auth("inspector1")
    data = photo()
    proposed = str(uuid.uuid4())
    declared = client.post(
        "/api/v1/media", headers=insp, json={"sha256": sha(data), "id": proposed}
    )
    assert declared.status_code == 201, declared.text
    assert declared.json()["status"] == "pending"
    assert declared.json()["id"] == proposed
    again = client.post("/api/v1/media", headers=insp, json={"sha256": sha(data)})
    assert again.status_code == 200
    assert again.json()["id"] == proposed
    assert client.head(f"/api/v1/media/{sha(data)}", headers=insp).status_code == 404
    assert upload(client, insp, data).headers["Media-Id"] == proposed
    stored = client.get(f"/api/v1/media/{sha(data)}", headers=insp).json()
    assert stored["status"] == "stored"
    bad = client.post("/api/v1/media", headers=insp, json={"sha256": "XYZ"})
    assert bad.status_code == 400


# ------------------------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_backend_stores_uploads_and_presigns_originals(
    database_url: str, tmp_path: Path, s3_endpoint: str
) -> None:
    bucket = f"liandong-{uuid.uuid4().hex[:12]}"
    settings = make_settings(
        database_url,
        tmp_path,
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
        s3_prefix="media/",
    )
    app = create_app(settings)
    store = app.state.media.store
    assert isinstance(store, S3BlobStore)
    store.client.create_bucket(Bucket=bucket)
    with TestClient(app=app) as client:
        login = client.post(
            "/api/v1/auth/login",
            json={"username": "inspector1", "password": "liandong-demo", "device_id": "s3"},
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        data = photo()
        r = upload(client, headers, data, chunk=64 * 1024)
        assert r.status_code == 204, r.text
        digest = sha(data)
        assert store.get(original_key(digest)) == data
        listed = store.client.list_objects_v2(Bucket=bucket)["Contents"]
        assert sorted(o["Key"].split("/")[1] for o in listed) == [
            "display",
            "original",
            "thumbnail",
        ]
        thumb = client.get(f"/api/v1/media/{digest}/thumbnail", headers=headers)
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as im:
            assert not im.getexif()
        original = client.get(
            f"/api/v1/media/{digest}/original", headers=headers, follow_redirects=False
        )
        assert original.status_code == 307
        url = original.headers["location"]
        assert url.startswith(s3_endpoint)
        assert "X-Amz-Expires=300" in url
        assert httpx.get(url).content == data
