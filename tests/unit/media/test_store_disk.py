"""DiskBlobStore: content-addressed layout, atomic and durable writes, idempotent puts."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from media.errors import BlobNotFound
from media.store import BlobStore, DiskBlobStore, key_path, original_key, thumbnail_key


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> DiskBlobStore:
    return DiskBlobStore(tmp_path / "blobs")


def test_satisfies_the_protocol(store: DiskBlobStore) -> None:
    assert isinstance(store, BlobStore)


def test_put_get_size_exists_delete(store: DiskBlobStore) -> None:
    data = b"photo bytes" * 1000
    key = original_key(sha(data))
    assert not store.exists(key)
    assert store.put_bytes(key, data, "image/jpeg") is True
    assert store.exists(key)
    assert store.get(key) == data
    assert store.size(key) == len(data)
    assert b"".join(store.iter_chunks(key, chunk_size=1000)) == data
    assert store.url(key) is None
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # idempotent
    for read in (store.get, store.size, store.iter_chunks):
        with pytest.raises(BlobNotFound):
            read(key)


def test_layout_is_fanned_out_by_hash(store: DiskBlobStore) -> None:
    digest = sha(b"x")
    store.put_bytes(thumbnail_key(digest), b"x")
    expected = store.root / "thumbnail" / digest[:2] / digest[2:4] / digest
    assert expected.read_bytes() == b"x"
    assert store.path(thumbnail_key(digest)) == expected
    assert expected.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "key",
    [
        "original/../../etc/passwd",
        "original/" + "A" * 64,
        "original/" + "a" * 63,
        "/original/" + "a" * 64,
        "a" * 64,
        "Original/" + "a" * 64,
    ],
)
def test_invalid_keys_are_refused(store: DiskBlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="invalid blob key"):
        key_path(key)


class ExplodingStream(io.RawIOBase):
    """A stream that must never be read (or fails after `good` bytes)."""

    def __init__(self, good: bytes = b"", fail: bool = True) -> None:
        self.good = good
        self.fail = fail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.good:
            chunk, self.good = self.good, b""
            return chunk
        if self.fail:
            raise ConnectionError("client went away")
        return b""


def test_same_key_is_stored_once_and_the_stream_is_not_read(store: DiskBlobStore) -> None:
    data = b"same photo"
    key = original_key(sha(data))
    assert store.put_bytes(key, data) is True
    assert store.put_stream(key, ExplodingStream()) is False  # type: ignore[arg-type]
    assert store.get(key) == data


def test_failed_write_leaves_nothing_behind(store: DiskBlobStore) -> None:
    key = original_key(sha(b"never complete"))
    with pytest.raises(ConnectionError):
        store.put_stream(key, ExplodingStream(b"half of it"))  # type: ignore[arg-type]
    assert not store.exists(key)
    assert not store.path(key).exists()
    assert list((store.root / ".tmp").iterdir()) == []


def test_readers_never_see_a_partial_blob(store: DiskBlobStore) -> None:
    data = b"a" * 3_000_000
    key = original_key(sha(data))
    first_chunk_written = threading.Event()
    release = threading.Event()

    class SlowStream(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self.sent == 1024 * 1024:
                first_chunk_written.set()
                assert release.wait(10)
            chunk = data[self.sent : self.sent + 1024 * 1024]
            self.sent += len(chunk)
            return chunk

    writer = threading.Thread(target=store.put_stream, args=(key, SlowStream()))
    writer.start()
    try:
        assert first_chunk_written.wait(10)
        assert not store.exists(key)  # a megabyte is on disk, but only under .tmp
        with pytest.raises(BlobNotFound):
            store.get(key)
    finally:
        release.set()
        writer.join(10)
    assert store.get(key) == data


def test_put_syncs_the_file_and_its_directory_before_returning(
    store: DiskBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    data = b"durable"
    key = original_key(sha(data))
    store.put_bytes(key, data)
    final = store.path(key)
    tmp_synced = [p for p in synced if "/.tmp/" in p]
    assert tmp_synced, "the temp file is synced before the rename"
    assert synced.index(tmp_synced[0]) < synced.index(str(final.parent))
    assert str(final.parent) == synced[-1], "the directory entry is synced last"


def test_sweep_removes_only_old_temp_files(store: DiskBlobStore) -> None:
    old = store.root / ".tmp" / "crashed.1234"
    new = store.root / ".tmp" / "writing.5678"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (0, 0))
    assert store.sweep_temp(older_than_s=60) == 1
    assert not old.exists()
    assert new.exists()


def test_concurrent_puts_of_one_key_agree(store: DiskBlobStore) -> None:
    data = os.urandom(200_000)
    key = original_key(sha(data))
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.put_bytes(key, data)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert True in results
    assert store.get(key) == data
    assert list((store.root / ".tmp").iterdir()) == []
