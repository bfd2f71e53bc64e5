"""Photos on the phone: prepare (downscale, keep EXIF), hash, track, declare and upload.

A photo's life: `prepare_photo` writes an upload-ready JPEG (longest edge at most 2048 px by
default, quality 85) that keeps the camera's EXIF block as it was (capture time, GPS, the
orientation tag: the server reads them as evidence and turns the display copy upright); its
SHA-256 names it. `PhotoStore.add` records it (state `local`) with a media id the phone makes
(uuid7) so a record can name it offline. Sending (`PhotoStore.declare`, then
`mobile.core.tus_client.upload`) moves it `local -> declared -> uploading -> stored`, or
`failed` when the server refuses the bytes (the reason is kept). Each photo is tracked on its
own, so a record can show "2 of 3 photos sent".

The server keeps one media object per hash: when the same bytes are already known (two phones
photographing the same notice, a photo sent from a second phone), the declare answers the
existing id. The phone then takes that id and, in the same local transaction, rewrites every
queued write and local view that names its own id (`PhotoStore.adopt`); the pair is kept in
`mobile_photo_renames`, so a write queued meanwhile with the old id is rewritten before the
push reads the queue (`PhotoStore.settle_renames`).
"""

from __future__ import annotations

import enum
import hashlib
import io
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
from PIL import Image, ImageFile

from mobile.core import localdb
from mobile.core.clock import Now, rfc3339, utcnow
from mobile.core.transport import check_busy
from schemas.ids import uuid7

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()
DEFAULT_LONGEST_EDGE = 2048
DEFAULT_QUALITY = 85


class PhotoState(enum.StrEnum):
    """Where a photo is on its way to the server."""

    LOCAL = "local"  # on the phone only
    DECLARED = "declared"  # the server knows its hash and id (a record may name it)
    UPLOADING = "uploading"  # some bytes are on the server (`offset`)
    STORED = "stored"  # the server has it
    FAILED = "failed"  # the server refused the bytes (`error`); not retried


@dataclass(frozen=True, slots=True)
class PreparedPhoto:
    """An upload-ready file."""

    path: Path
    sha256: str
    size: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class PhotoRef:
    """A photo as a record names it."""

    media_id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Photo:
    """A tracked photo."""

    sha256: str
    media_id: str
    path: Path
    size: int
    content_type: str
    state: PhotoState
    upload_url: str | None
    offset: int
    error: str | None


def prepare_photo(
    source: Path,
    out_dir: Path,
    *,
    longest_edge: int = DEFAULT_LONGEST_EDGE,
    quality: int = DEFAULT_QUALITY,
) -> PreparedPhoto:
    """Write `source` as an upload-ready JPEG in `out_dir`, named by its SHA-256.

    A JPEG already within `longest_edge` is kept byte for byte (re-encoding would only lose
    detail). Otherwise the image is decoded at reduced scale (JPEG draft mode), resized so its
    longest edge is `longest_edge`, and saved at `quality` with the source's EXIF block and ICC
    profile unchanged. The pixels are not rotated: the orientation tag stays true.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        fmt = im.format
        w, h = im.size
        if fmt == "JPEG" and max(w, h) <= longest_edge:
            data = source.read_bytes()
        else:
            data, (w, h) = _downscale(im, longest_edge, quality)
    digest = hashlib.sha256(data).hexdigest()
    target = out_dir / f"{digest}.jpg"
    if not target.exists():
        tmp = out_dir / f".{digest}.tmp"
        tmp.write_bytes(data)
        tmp.replace(target)
    return PreparedPhoto(target, digest, len(data), w, h)


def _downscale(
    im: ImageFile.ImageFile, longest: int, quality: int
) -> tuple[bytes, tuple[int, int]]:
    exif = im.info.get("exif")
    icc = im.info.get("icc_profile")
    w, h = im.size
    scale = min(1.0, longest / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if im.format == "JPEG":
        im.draft("RGB", size)  # libjpeg scales inside the IDCT: far less to decode
    img: Image.Image = im
    if img.mode not in ("RGB", "L"):
        if "A" in img.mode or img.mode == "P":
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            img = flat
        else:
            img = img.convert("RGB")
    if img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    buf = io.BytesIO()
    params: dict[str, Any] = {"quality": quality}
    if exif:
        params["exif"] = exif
    if icc:
        params["icc_profile"] = icc
    img.save(buf, "JPEG", **params)
    return buf.getvalue(), size


def _photo(row: tuple[Any, ...]) -> Photo:
    sha, mid, path, size, ctype, state, url, offset, error = row
    return Photo(sha, mid, Path(path), size, ctype, PhotoState(state), url, offset, error)


_COLS = "sha256, media_id, path, size, content_type, state, upload_url, offset, error"


class PhotoStore:
    """The photo table in the phone's file (own connection beside the sync store)."""

    def __init__(self, path: Path, *, now: Now = utcnow) -> None:
        self.path = path
        self.db: sqlite3.Connection = localdb.connect(path)
        self._now = now

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def add(self, prepared: PreparedPhoto) -> PhotoRef:
        """Track a prepared photo (once per hash: the same photo twice is one photo)."""
        self.db.execute(
            "INSERT OR IGNORE INTO mobile_photos(sha256, media_id, path, size, created_at)"
            " VALUES(?,?,?,?,?)",
            (
                prepared.sha256,
                str(uuid7()),
                str(prepared.path),
                prepared.size,
                rfc3339(self._now()),
            ),
        )
        row = self.db.execute(
            "SELECT media_id FROM mobile_photos WHERE sha256=?", (prepared.sha256,)
        ).fetchone()
        return PhotoRef(str(row[0]), prepared.sha256)

    def link(self, entity: str, record_id: str, refs: Iterable[PhotoRef]) -> None:
        """Say which record a photo belongs to (for "n of m photos sent")."""
        self.db.executemany(
            "INSERT OR IGNORE INTO mobile_photo_links(entity, record_id, sha256) VALUES(?,?,?)",
            [(entity, record_id, r.sha256) for r in refs],
        )

    def get(self, sha256: str) -> Photo | None:
        """One photo by hash."""
        row = self.db.execute(
            f"SELECT {_COLS} FROM mobile_photos WHERE sha256=?",  # noqa: S608 - fixed columns
            (sha256,),
        ).fetchone()
        return _photo(row) if row else None

    def all(self, *states: PhotoState) -> list[Photo]:
        """Photos in any of `states` (all when none given), oldest first."""
        sql = f"SELECT {_COLS} FROM mobile_photos"  # noqa: S608 - fixed columns
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
        rows = self.db.execute(sql + " ORDER BY created_at, sha256", [str(s) for s in states])
        return [_photo(r) for r in rows]

    def progress(self, entity: str, record_id: str) -> tuple[int, int]:
        """(photos stored on the server, photos) of one record."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(p.state='stored'), 0) FROM mobile_photo_links l"
            " JOIN mobile_photos p ON p.sha256=l.sha256 WHERE l.entity=? AND l.record_id=?",
            (entity, record_id),
        ).fetchone()
        return int(row[1]), int(row[0])

    def all_progress(self) -> dict[tuple[str, str], tuple[int, int]]:
        """`progress` of every record with photos, in one query."""
        rows = self.db.execute(
            "SELECT l.entity, l.record_id, count(*), coalesce(sum(p.state='stored'), 0)"
            " FROM mobile_photo_links l JOIN mobile_photos p ON p.sha256=l.sha256"
            " GROUP BY l.entity, l.record_id"
        )
        return {(e, r): (int(done), int(n)) for e, r, n, done in rows}

    def update(self, sha256: str, **values: Any) -> None:
        """Change a photo's tracked state (columns by name; a new `media_id` through `adopt`)."""
        _set(self.db, sha256, **values)

    def declare(self, http: httpx.Client, base_url: str, token: str) -> int:
        """Make every `local` photo known to the server by hash and id (POST /api/v1/media),
        so records naming them are accepted before the bytes arrive. Returns how many.

        Raises httpx.HTTPError when the server cannot be reached, `ServerBusyError` when it
        sheds the request (nothing is lost: the photos stay `local`).
        """
        done = 0
        for p in self.all(PhotoState.LOCAL):
            r = http.post(
                base_url + "/api/v1/media",
                json={"sha256": p.sha256, "content_type": p.content_type, "id": p.media_id},
                headers={"Authorization": f"Bearer {token}"},
            )
            check_busy(r, "declare")  # shed: stop here, the round waits (records too)
            if r.status_code not in (200, 201):
                self.update(p.sha256, error=f"declare: HTTP {r.status_code}")
                continue
            body = r.json()
            state = PhotoState.STORED if body.get("status") == "stored" else PhotoState.DECLARED
            # A hash the server knew already: its id is the photo's id from now on (`adopt`
            # rewrites the queued writes naming ours, in the same transaction).
            self.adopt(p.sha256, str(body["id"]), state=state, error=None)
            done += 1
        return done

    def media_id(self, ref: PhotoRef) -> str:
        """The id a record should name for `ref` now (the server's, once it answered one)."""
        row = self.db.execute(
            "SELECT media_id FROM mobile_photos WHERE sha256=?", (ref.sha256,)
        ).fetchone()
        return str(row[0]) if row else ref.media_id

    def adopt(self, sha256: str, media_id: str, **values: Any) -> None:
        """Set a photo's id (and `values`) as the server has it. When the id is not the one
        the phone made, every queued write, local view and draft naming the old id is
        rewritten in the same transaction, and the pair is remembered for writes queued
        while this ran (`settle_renames`)."""
        current = self.get(sha256)
        if current is None or current.media_id == media_id:
            self.update(sha256, media_id=media_id, **values)
            return
        with _transaction(self.path) as db:
            _set(db, sha256, media_id=media_id, **values)
            db.execute(
                "INSERT OR REPLACE INTO mobile_photo_renames(old, new) VALUES(?,?)",
                (current.media_id, media_id),
            )
            _rewrite(db, {current.media_id: media_id})

    def settle_renames(self) -> int:
        """Rewrite queued writes that still name a photo id the server replaced (queued while
        a declare ran). Returns how many writes were rewritten."""
        renames = dict(self.db.execute("SELECT old, new FROM mobile_photo_renames").fetchall())
        if not renames or not localdb.has_table(self.db, "outbox"):
            return 0
        if not any(
            self.db.execute(
                "SELECT 1 FROM outbox WHERE instr(fields, ?) > 0 LIMIT 1", (old.encode(),)
            ).fetchone()
            for old in renames
        ):
            return 0
        with _transaction(self.path) as db:
            return _rewrite(db, renames)


@contextmanager
def _transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """A write transaction on a connection of its own: `adopt` runs in the sender's thread
    while the loop thread may use the store's connection (a transaction begun on a shared
    connection would swallow the other thread's statements)."""
    db = localdb.connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


_SETTABLE = {"media_id", "state", "upload_url", "offset", "error", "attempts"}


def _set(db: sqlite3.Connection, sha256: str, **values: Any) -> None:
    if not values or set(values) - _SETTABLE:
        raise ValueError(f"cannot set {sorted(set(values) - _SETTABLE)}")
    sets = ", ".join(f"{k}=?" for k in values)
    vals = [str(v) if isinstance(v, PhotoState) else v for v in values.values()]
    db.execute(
        f"UPDATE mobile_photos SET {sets} WHERE sha256=?",  # noqa: S608 - allowed names
        (*vals, sha256),
    )


def _swap(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, str):
        return renames.get(value, value)
    if isinstance(value, list):
        return [_swap(v, renames) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, renames) for k, v in value.items()}
    return value


def _rewrite(db: sqlite3.Connection, renames: dict[str, str]) -> int:
    """Replace photo ids (`renames`: old -> new) in the queued writes (`outbox`), the local
    views of their records and the drafts, inside the caller's transaction. Returns how many
    queued writes changed. The ids are uuids: an equal string anywhere else in a write is the
    photo's id."""
    changed = 0
    if localdb.has_table(db, "outbox"):
        touched: set[tuple[str, bytes]] = set()
        for old in renames:
            rows = db.execute(
                "SELECT seq, entity, id, fields FROM outbox WHERE instr(fields, ?) > 0",
                (old.encode(),),
            ).fetchall()
            for seq, entity, rid, blob in rows:
                fields = _swap(_dec.decode(blob), renames)
                db.execute("UPDATE outbox SET fields=? WHERE seq=?", (_enc.encode(fields), seq))
                touched.add((entity, rid))
                changed += 1
        for entity, rid in touched:
            row = db.execute(
                "SELECT local FROM records WHERE entity=? AND id=?", (entity, rid)
            ).fetchone()
            if row and row[0] is not None:
                view = _swap(_dec.decode(row[0]), renames)
                db.execute(
                    "UPDATE records SET local=? WHERE entity=? AND id=?",
                    (_enc.encode(view), entity, rid),
                )
    for form, key, blob in db.execute("SELECT form, key, photos FROM mobile_drafts").fetchall():
        refs = _dec.decode(blob)
        swapped = _swap(refs, renames)
        if swapped != refs:
            db.execute(
                "UPDATE mobile_drafts SET photos=? WHERE form=? AND key=?",
                (_enc.encode(swapped), form, key),
            )
    return changed
