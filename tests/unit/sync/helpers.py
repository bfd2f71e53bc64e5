"""Factories and an in-process transport for the sync tests (no mocks of our own code)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.sync import (
    PullReply,
    PullRequest,
    PushReply,
    PushRequest,
    msgpack_encoder,
    pull_reply_msgpack,
    pull_request_msgpack,
    push_reply_msgpack,
    push_request_msgpack,
)
from sync.client import TransportError
from sync.hlc import ManualClock
from sync.memory import MemoryStorage
from sync.merge import RecordState
from sync.server import OpenPolicy, SyncServer, WriteContext
from sync.storage import SyncTx

NOW_ISO = "2024-05-01T08:00:00Z"


def point(lon: float = 116.4, lat: float = 39.9) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def hazard_fields(grid: str = "g1", **over: Any) -> dict[str, Any]:
    """A new hazard as a device creates it (grid is a test-only hint read by the policy)."""
    base: dict[str, Any] = {
        "category": "fire",
        "severity": "high",
        "description": "Blocked exit",
        "location": point(),
        "accuracy_m": 5.0,
        "status": "reported",
        "enterprise_id": str(uuid.UUID(int=1)),
        "photo_ids": [],
        "timeline": [],
    }
    base.update(over)
    return base


class GridPolicy(OpenPolicy):
    """Hazards are scoped by the grid the server derives from the 'category' hint or by a
    server write of grid_id; tasks by unit; everything else is reference data."""

    def __init__(self) -> None:
        self.user_scope_map: dict[object, frozenset[str]] = {}
        self.default_scopes = frozenset({"grid:g1"})
        self.forbidden_users: set[object] = set()

    async def authorize(self, tx: SyncTx, ctx: WriteContext) -> Any:
        from schemas.sync import Reason, Refusal

        if ctx.user in self.forbidden_users:
            return Refusal(code=Reason.FORBIDDEN, message="not yours")
        return None

    async def server_fields(self, tx: SyncTx, ctx: WriteContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if ctx.spec.name == "hazard" and ctx.current is None:
            out["reporter_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, str(ctx.user)))
            out["grid_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, "g1"))
            out["created_at"] = NOW_ISO
        return out

    def record_scopes(self, record: RecordState) -> frozenset[str]:
        if record.entity == "hazard":
            grid = record.fields.get("grid_id")
            if grid is None:
                return frozenset()
            return frozenset({"grid:" + GRIDS.get(grid.value, "other")})
        if record.entity == "task":
            unit = record.fields.get("assignee_unit_id")
            return frozenset({"unit:" + UNITS.get(unit.value if unit else None, "other")})
        return frozenset({"ref"})

    async def user_scopes(self, tx: SyncTx, user: object) -> frozenset[str]:
        return self.user_scope_map.get(user, self.default_scopes)


GRIDS = {str(uuid.uuid5(uuid.NAMESPACE_OID, g)): g for g in ("g1", "g2", "g3")}
UNITS = {str(uuid.uuid5(uuid.NAMESPACE_OID, u)): u for u in ("u1", "u2")}


def grid_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, name))


def unit_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, name))


@dataclass
class Rig:
    """One server database, a policy, a clock; `server()` builds a fresh SyncServer (a restart)."""

    storage: MemoryStorage = field(default_factory=MemoryStorage)
    policy: GridPolicy = field(default_factory=GridPolicy)
    clock: ManualClock = field(default_factory=ManualClock)
    restarts: int = 0
    _server: SyncServer | None = None

    def server(self) -> SyncServer:
        if self._server is None:
            self._server = SyncServer(self.storage, self.policy, clock=self.clock)
        return self._server

    def restart(self) -> None:
        self._server = None
        self.restarts += 1


class LocalTransport:
    """Calls the server in-process through the msgpack wire encoding, counting bytes.

    `drop(kind, when)` decides whether to lose the request ("before" the server sees it) or the
    answer ("after" the server applied it).
    """

    def __init__(
        self, rig: Rig, user: object, drop: Callable[[str, str], bool] | None = None
    ) -> None:
        self.rig, self.user = rig, user
        self.drop = drop or (lambda kind, when: False)
        self.sent = 0
        self.received = 0
        self.requests = 0

    async def push(self, req: PushRequest) -> PushReply:
        body = msgpack_encoder.encode(req)
        self.sent += len(body)
        self.requests += 1
        if self.drop("push", "before"):
            raise TransportError("request lost")
        reply = await self.rig.server().push(self.user, push_request_msgpack.decode(body))
        out = msgpack_encoder.encode(reply)
        self.received += len(out)
        if self.drop("push", "after"):
            raise TransportError("answer lost")
        return push_reply_msgpack.decode(out)

    async def pull(self, req: PullRequest) -> PullReply:
        body = msgpack_encoder.encode(req)
        self.sent += len(body)
        self.requests += 1
        if self.drop("pull", "before"):
            raise TransportError("request lost")
        reply = await self.rig.server().pull(self.user, pull_request_msgpack.decode(body))
        out = msgpack_encoder.encode(reply)
        self.received += len(out)
        if self.drop("pull", "after"):
            raise TransportError("answer lost")
        return pull_reply_msgpack.decode(out)
