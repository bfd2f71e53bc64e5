"""The device-side meaning of a pull page, as a pure function over a dict.

`apply_page` is the specification that `sync.store.ClientStore` implements on SQLite, and the
`apply(snapshot_before, changes) == snapshot_after` invariant tests run against both.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from schemas.sync import ScopePage
from sync.checksum import record_hash

Snapshot = dict[tuple[str, UUID], tuple[int, dict[str, Any]]]
"""(entity, id) -> (version, field values) of the live records a scope holds."""


def apply_page(snapshot: Snapshot, page: ScopePage) -> Snapshot:
    """The scope's records after applying one page (a `resync` page starts from nothing).

    Tombstones and evictions remove the record; a change merges its fields into what the
    device holds (all fields arrive when the record is new to the scope).
    """
    out: Snapshot = {} if page.resync else dict(snapshot)
    for change in page.changes:
        key = (change.entity, change.id)
        if change.deleted:
            out.pop(key, None)
            continue
        _, values = out.get(key, (0, {}))
        out[key] = (change.version, {**values, **change.fields})
    for ref in page.evictions:
        out.pop((ref.entity, ref.id), None)
    return out


def snapshot_checksum(snapshot: Snapshot) -> int:
    """The scope checksum a device holding `snapshot` computes."""
    acc = 0
    for (entity, rid), (version, _) in snapshot.items():
        acc ^= record_hash(entity, rid, version)
    return acc
