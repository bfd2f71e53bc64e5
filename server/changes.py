"""The change log, as the write functions see it: `record(session, row)` in the same transaction.

A domain write that others must see (a phone, the dispatch console) calls `record` for every
synced row it adds, changes or deletes, as Zulip's `do_*` functions send their events: nothing
turns a write into a change behind the writer's back. Timeline rows (`TaskEvent`,
`HazardEvent`) are recorded too; they become items of their task's or hazard's `timeline`.
`record_ref` re-writes a record by id without loading it (a photo whose hazard moved).

What is recorded is turned into sync changes at commit, as one batch, by the sync domain's
commit hook (`server.domain.sync.changelog`). That hook also holds the guard: with the guard on
(the whole test suite, `LIANDONG_SYNC_GUARD=1`), a commit that flushed a synced row nobody
recorded fails, and so does a bulk `UPDATE`/`DELETE` of a synced table that does not say how its
rows are recorded (`execution_options(recorded=True)`).

This module imports nothing but the models, so every domain may use it.
"""

from __future__ import annotations

import uuid
from typing import Any

PENDING = "changes_pending"
"""`session.info` key: {(model, id or object identity): ChangeEntry} of this transaction."""

FLUSHED = "changes_flushed"
"""`session.info` key (the guard): (model, id) of synced rows this transaction flushed."""

RECORDED = "recorded"
"""Execution option a bulk UPDATE/DELETE of a synced table sets once it recorded its rows."""


class ChangeEntry:
    """What one transaction recorded for one row: the row (if loaded) and new timeline rows."""

    __slots__ = ("events", "row")

    def __init__(self) -> None:
        self.row: Any = None
        self.events: list[Any] = []


def _pending(session: Any) -> dict[tuple[type[Any], Any], ChangeEntry]:
    info: dict[str, Any] = session.info
    found: dict[tuple[type[Any], Any], ChangeEntry] = info.setdefault(PENDING, {})
    return found


def record(session: Any, *rows: Any) -> None:
    """Note that `rows` (ORM objects of synced tables, or timeline rows) changed in this
    transaction; each becomes a sync change when the transaction commits. Recording a row twice
    is harmless. `session` is a `Session` or an `AsyncSession`."""
    pending = _pending(session)
    for row in rows:
        # A row not flushed yet has no id; it is keyed by identity until the commit hook runs.
        key = (type(row), row.id if row.id is not None else id(row))
        entry = pending.get(key)
        if entry is None:
            entry = pending[key] = ChangeEntry()
        entry.row = row


def record_ref(session: Any, model: type[Any], ident: uuid.UUID) -> None:
    """Note that the record `model`/`ident` must be re-written at commit (loaded then)."""
    _pending(session).setdefault((model, ident), ChangeEntry())


def recorded(session: Any) -> dict[tuple[type[Any], uuid.UUID], ChangeEntry]:
    """What this transaction recorded so far, keyed by (model, id) (read after a flush, when
    every recorded row has its id)."""
    return {
        (cls, entry.row.id if entry.row is not None else ident): entry
        for (cls, ident), entry in _pending(session).items()
    }
