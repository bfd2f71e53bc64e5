"""Per-scope checksums that can be updated one record at a time.

A scope's checksum is the XOR of `record_hash(entity, id, version)` over the live records it
holds. Adding or removing a record, or moving it to a new version, is one or two XORs, so the
server keeps it current on every write and the device on every applied page.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

MASK = (1 << 63) - 1  # fits a signed 64-bit column and any msgpack/JSON int64 reader


def record_hash(entity: str, record_id: UUID, version: int) -> int:
    """63-bit hash of (entity, id, version): blake2b-64 over `entity|id bytes|version (8 BE)`."""
    digest = hashlib.blake2b(
        entity.encode() + b"|" + record_id.bytes + version.to_bytes(8, "big"),
        digest_size=8,
    ).digest()
    return int.from_bytes(digest, "big") & MASK
