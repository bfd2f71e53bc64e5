"""The tus core: offsets, checksums, interruption, expiry, termination, locking, completion."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import tus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(tmp_path: Path, clock: FakeClock) -> tus.UploadManager:
    return tus.UploadManager(
        tmp_path / "uploads", max_size=1_000_000, ttl=timedelta(hours=1), clock=clock
    )


def checksum(data: bytes, algorithm: str = "sha256") -> tus.Checksum:
    parsed = tus.parse_checksum(tus.format_checksum(algorithm, data))
    assert parsed is not None
    return parsed


def cut_after(data: bytes, sent: int) -> Iterator[bytes]:
    """A request body whose connection drops after `sent` bytes."""
    yield data[:sent]
    raise ConnectionResetError("connection cut")


def test_options_advertise_the_protocol(manager: tus.UploadManager) -> None:
    assert manager.options_headers() == {
        "Tus-Resumable": "1.0.0",
        "Tus-Version": "1.0.0",
        "Tus-Extension": "creation,creation-with-upload,termination,checksum,expiration",
        "Tus-Max-Size": "1000000",
        "Tus-Checksum-Algorithm": "sha1,sha256",
    }


def test_create_then_head(manager: tus.UploadManager) -> None:
    info = manager.create(100, {"filename": "a.jpg", "filetype": "image/jpeg"}, owner="u1")
    assert info.offset == 0
    assert info.expires_at == T0 + timedelta(hours=1)
    assert manager.head(info.id) == info
    assert manager.head(info.id, owner="u1") == info
    headers = tus.head_headers(info)
    assert headers["Upload-Offset"] == "0"
    assert headers["Upload-Length"] == "100"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Upload-Expires"] == "Thu, 01 Jan 2026 01:00:00 GMT"
    assert tus.parse_metadata(headers["Upload-Metadata"]) == info.metadata
    assert tus.creation_headers(info)["Upload-Offset"] == "0"


def test_create_above_max_size_is_413(manager: tus.UploadManager) -> None:
    with pytest.raises(tus.UploadTooLarge) as info:
        manager.create(1_000_001)
    assert info.value.status == 413
    assert list(manager.root.iterdir()) == []


def test_other_owner_and_unknown_ids_are_404(manager: tus.UploadManager) -> None:
    info = manager.create(10, owner="u1")
    for upload_id, owner in ((info.id, "u2"), ("0" * 32, None), ("../../etc/passwd", None)):
        with pytest.raises(tus.UploadNotFound) as error:
            manager.head(upload_id, owner=owner)
        assert error.value.status == 404
    with pytest.raises(tus.UploadNotFound):
        manager.patch(info.id, 0, b"x", owner="u2")
    with pytest.raises(tus.UploadNotFound):
        manager.terminate(info.id, owner="u2")
    assert manager.head(info.id).offset == 0


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=4000), cuts=st.lists(st.integers(0, 4000)))
def test_any_chunking_reassembles_to_the_same_bytes(data: bytes, cuts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as root:
        manager = tus.UploadManager(root)
        info = manager.create(len(data))
        bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
        for start, end in itertools.pairwise(bounds):
            info = manager.patch(info.id, start, data[start:end], checksum(data[start:end]))
            assert info.offset == end
            assert manager.head(info.id).offset == end
        assert info.is_complete
        stored = manager.completed_path(info.id).read_bytes()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=2000),
    done=st.integers(0, 2000),
    wrong=st.integers(0, 3000),
)
def test_wrong_offsets_are_409_and_change_nothing(data: bytes, done: int, wrong: int) -> None:
    done = min(done, len(data) - 1)
    with tempfile.TemporaryDirectory() as root:
        manager = tus.UploadManager(root)
        info = manager.create(len(data))
        if done:
            manager.patch(info.id, 0, data[:done])
        if wrong == done:
            wrong += 1
        with pytest.raises(tus.OffsetMismatch) as error:
            manager.patch(info.id, wrong, data[wrong:] or b"x")
        assert error.value.status == 409
        assert error.value.headers["Upload-Offset"] == str(done)
        assert manager.head(info.id).offset == done
        manager.patch(info.id, done, data[done:])
        assert manager.completed_path(info.id).read_bytes() == data


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_mismatch_is_460_and_discards_the_chunk(
    manager: tus.UploadManager, algorithm: str
) -> None:
    info = manager.create(10)
    manager.patch(info.id, 0, b"01234", checksum(b"01234", algorithm))
    with pytest.raises(tus.ChecksumMismatch) as error:
        manager.patch(info.id, 5, b"5678X", checksum(b"56789", algorithm))
    assert error.value.status == 460
    assert manager.head(info.id).offset == 5
    data_file = manager.root / f"{info.id}.bin"
    assert data_file.read_bytes() == b"01234"
    info = manager.patch(info.id, 5, b"56789", checksum(b"56789", algorithm))
    assert info.is_complete
    assert data_file.read_bytes() == b"0123456789"


def test_interrupted_patch_keeps_what_arrived_and_resume_sends_only_the_rest(
    manager: tus.UploadManager,
) -> None:
    data = bytes(range(256)) * 40
    info = manager.create(len(data))
    with pytest.raises(ConnectionResetError):
        manager.patch(info.id, 0, cut_after(data, 3000))
    offset = manager.head(info.id).offset
    assert offset == 3000
    info = manager.patch(info.id, offset, data[offset:])
    assert info.is_complete
    assert manager.completed_path(info.id).read_bytes() == data


def test_interrupted_patch_with_a_checksum_keeps_nothing(manager: tus.UploadManager) -> None:
    data = b"z" * 5000
    info = manager.create(len(data))
    with pytest.raises(ConnectionResetError):
        manager.patch(info.id, 0, cut_after(data, 3000), checksum(data))
    assert manager.head(info.id).offset == 0


def test_body_past_the_length_is_413_and_discarded(manager: tus.UploadManager) -> None:
    info = manager.create(10)
    manager.patch(info.id, 0, b"0123")
    with pytest.raises(tus.UploadTooLarge):
        manager.patch(info.id, 4, [b"456", b"789", b"overflow"])
    assert manager.head(info.id).offset == 4
    assert (manager.root / f"{info.id}.bin").read_bytes() == b"0123"


def test_creation_with_upload(manager: tus.UploadManager) -> None:
    info = manager.create(10, body=b"01234", checksum=checksum(b"01234"))
    assert info.offset == 5
    assert manager.patch(info.id, 5, b"56789").is_complete


def test_creation_with_a_bad_body_leaves_nothing(manager: tus.UploadManager) -> None:
    with pytest.raises(tus.ChecksumMismatch):
        manager.create(10, body=b"01234", checksum=checksum(b"other"))
    with pytest.raises(tus.UploadTooLarge):
        manager.create(3, body=b"01234")
    assert list(manager.root.iterdir()) == []


def test_expiry_slides_with_progress_and_then_is_410(
    manager: tus.UploadManager, clock: FakeClock
) -> None:
    info = manager.create(10)
    clock.now += timedelta(minutes=50)
    info = manager.patch(info.id, 0, b"01234")
    assert info.expires_at == clock.now + timedelta(hours=1)
    assert tus.patch_headers(info)["Upload-Expires"] == tus.http_date(info.expires_at)
    clock.now += timedelta(minutes=59)
    assert manager.head(info.id).offset == 5
    clock.now += timedelta(minutes=1)
    with pytest.raises(tus.UploadGone) as error:
        manager.head(info.id)
    assert error.value.status == 410
    with pytest.raises(tus.UploadGone):
        manager.patch(info.id, 5, b"56789")
    assert manager.expire() == [info.id]
    with pytest.raises(tus.UploadNotFound):
        manager.head(info.id)
    assert list(manager.root.iterdir()) == []


def test_expire_keeps_live_uploads_and_removes_old_debris(manager: tus.UploadManager) -> None:
    live = manager.create(10)
    debris = manager.root / ("f" * 32 + ".bin")  # a crash inside create: no state file
    debris.write_bytes(b"")
    old = (T0 - timedelta(hours=2)).timestamp()
    os.utime(debris, (old, old))
    assert manager.expire(T0 + timedelta(minutes=30)) == ["f" * 32]
    assert not debris.exists()
    assert manager.head(live.id) == live
    assert manager.expire(T0 + timedelta(hours=1)) == [live.id]
    assert list(manager.root.iterdir()) == []


def test_terminate(manager: tus.UploadManager) -> None:
    info = manager.create(10)
    manager.patch(info.id, 0, b"01")
    manager.terminate(info.id)
    with pytest.raises(tus.UploadNotFound):
        manager.head(info.id)
    with pytest.raises(tus.UploadNotFound):
        manager.terminate(info.id)
    assert list(manager.root.iterdir()) == []


def test_a_second_writer_is_locked_out(manager: tus.UploadManager) -> None:
    info = manager.create(10)
    with manager.open_patch(info.id, 0) as writer:
        writer.write(b"012")
        with pytest.raises(tus.UploadLocked) as error:
            manager.open_patch(info.id, 0)
        assert error.value.status == 423
        with pytest.raises(tus.UploadLocked):
            manager.terminate(info.id)
        assert manager.expire(T0 + timedelta(days=1)) == []  # never deletes under a writer
    assert writer.result.offset == 3
    assert manager.patch(info.id, 3, b"3456789").is_complete


def test_bytes_past_the_offset_after_a_crash_are_cut_off(manager: tus.UploadManager) -> None:
    info = manager.create(6)
    manager.patch(info.id, 0, b"abc")
    with (manager.root / f"{info.id}.bin").open("ab") as data:
        data.write(b"GARBAGE")  # written, never committed (crash before the state update)
    assert manager.head(info.id).offset == 3
    manager.patch(info.id, 3, b"def")
    assert manager.completed_path(info.id).read_bytes() == b"abcdef"


def test_completion_discard_and_recovery_listing(manager: tus.UploadManager) -> None:
    info = manager.create(4)
    with pytest.raises(tus.UploadIncomplete) as error:
        manager.completed_path(info.id)
    assert error.value.status == 409
    assert manager.completed() == []
    info = manager.patch(info.id, 0, b"done")
    assert "Upload-Expires" not in tus.head_headers(info)
    assert manager.completed() == [info]
    manager.discard(info.id)
    manager.discard(info.id)
    assert manager.completed() == []


def test_empty_upload_is_complete_at_creation(manager: tus.UploadManager) -> None:
    info = manager.create(0)
    assert info.is_complete
    assert manager.completed_path(info.id).read_bytes() == b""


async def stream(data: bytes, size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        if fail_after is not None and start >= fail_after:
            raise ConnectionResetError("client went away")
        await asyncio.sleep(0)
        yield data[start : start + size]


def test_patch_async(manager: tus.UploadManager) -> None:
    data = bytes(range(256)) * 100
    info = manager.create(len(data))

    async def scenario() -> tus.UploadInfo:
        with pytest.raises(ConnectionResetError):
            await manager.patch_async(info.id, 0, stream(data, 1000, fail_after=7000))
        offset = manager.head(info.id).offset
        assert offset == 7000
        return await manager.patch_async(
            info.id, offset, stream(data[offset:], 4096), checksum(data[offset:])
        )

    assert asyncio.run(scenario()).is_complete
    assert manager.completed_path(info.id).read_bytes() == data


def test_patch_async_cancelled_keeps_received_bytes(manager: tus.UploadManager) -> None:
    data = b"q" * 10_000
    info = manager.create(len(data))
    first = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield data[:2500]
        first.set()
        await asyncio.sleep(3600)
        yield data[2500:]

    async def scenario() -> None:
        task = asyncio.create_task(manager.patch_async(info.id, 0, slow()))
        await first.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert manager.head(info.id).offset == 2500
