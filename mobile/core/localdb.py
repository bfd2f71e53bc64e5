"""The phone's SQLite file as the core's own modules see it (beside `sync.store.ClientStore`).

`ClientStore` owns the sync tables (records, members, scopes, outbox, log, aside, meta). The
core keeps its own tables in the same file (`mobile_*`: photos and the ids the server gave
them instead of ours, sent history, drafts, data used per day) through its own connection, so
`sync/` stays untouched. WAL lets the connections read while another writes;
writes from the core are short and wait for the lock (`busy_timeout`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mobile_photos(
    sha256 TEXT PRIMARY KEY, media_id TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    content_type TEXT NOT NULL DEFAULT 'image/jpeg',
    state TEXT NOT NULL DEFAULT 'local', upload_url TEXT, offset INTEGER NOT NULL DEFAULT 0,
    error TEXT, attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mobile_photo_links(
    entity TEXT NOT NULL, record_id TEXT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY(entity, record_id, sha256)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mobile_photo_links_by_sha ON mobile_photo_links(sha256);
CREATE TABLE IF NOT EXISTS mobile_photo_renames(
    old TEXT PRIMARY KEY, new TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mobile_sent(
    seq INTEGER PRIMARY KEY, entity TEXT NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL,
    fields BLOB NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mobile_drafts(
    form TEXT NOT NULL, key TEXT NOT NULL, fields BLOB NOT NULL, photos BLOB NOT NULL,
    saved_at TEXT NOT NULL, revision INTEGER NOT NULL, PRIMARY KEY(form, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mobile_usage(
    day TEXT PRIMARY KEY, sent INTEGER NOT NULL DEFAULT 0, received INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the phone's file with the core's tables present (autocommit; use
    `BEGIN IMMEDIATE` for multi-statement writes)."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(_SCHEMA)
    return db


def has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return row.fetchone() is not None


def unsent(path: Path) -> tuple[int, int]:
    """(queued writes, photos not yet stored on the server) in the file at `path`."""
    if not path.exists():
        return 0, 0
    db = connect(path)
    try:
        writes = 0
        if has_table(db, "outbox"):
            writes = db.execute("SELECT count(*) FROM outbox WHERE state='pending'").fetchone()[0]
        photos = db.execute("SELECT count(*) FROM mobile_photos WHERE state!='stored'").fetchone()
        return int(writes), int(photos[0])
    finally:
        db.close()


def wipe_except_unsent(path: Path) -> tuple[int, int]:
    """Remove the signed-out user's data from the file, keeping what the server has not got.

    Kept: queued writes (outbox rows still pending) and the local view of records they create;
    photos not yet stored on the server (and their files); `meta` (device id, next mutation
    seq, HLC: a later sign-in must never reuse a mutation number the server already saw, or
    it would answer `dup` for a new write). Everything else goes: records, memberships,
    cursors (the next sign-in pulls a fresh snapshot), the log, the sent history, stored
    photos. Drafts stay (unfinished work of this user, offered back at the next sign-in) and
    so do the photos they hold. The store must be closed. Returns what `unsent` returns afterwards.
    """
    if not path.exists():
        return 0, 0
    db = connect(path)
    removed: list[str] = []
    try:
        db.execute("BEGIN IMMEDIATE")
        if has_table(db, "outbox"):
            db.execute("DELETE FROM outbox WHERE state!='pending'")
            db.execute(
                "DELETE FROM records WHERE NOT EXISTS (SELECT 1 FROM outbox o"
                " WHERE o.entity=records.entity AND o.id=records.id)"
            )
            # What stays is shown from the device's own writes only: a record it created keeps
            # its view; an edit of a server record waits, invisible, until it is pushed.
            db.execute(
                "UPDATE records SET data=NULL, local=CASE WHEN EXISTS (SELECT 1 FROM outbox o"
                " WHERE o.entity=records.entity AND o.id=records.id AND o.op='c')"
                " THEN local ELSE NULL END"
            )
            for table in ("members", "scopes", "log"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        held = (
            " AND sha256 NOT IN (SELECT json_extract(j.value, '$.sha256')"
            " FROM mobile_drafts d, json_each(d.photos) j)"
        )
        stored = "FROM mobile_photos WHERE state='stored'" + held
        removed = [p for (p,) in db.execute("SELECT path " + stored)]
        db.execute("DELETE " + stored)
        db.execute(
            "DELETE FROM mobile_photo_links WHERE sha256 NOT IN (SELECT sha256 FROM mobile_photos)"
        )
        db.execute("DELETE FROM mobile_sent")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    for p in removed:
        Path(p).unlink(missing_ok=True)
    return unsent(path)
