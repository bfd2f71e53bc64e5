"""The surge benchmark's county: linked units full of responders, each phone with its own
device session, minted in the database (bench only).

Logging thousands of phones in through `/auth/login` would cost an argon2 hash each (minutes of
CPU on this machine) and measure sign-in rather than the surge, so the fixture writes what a
sign-in leaves behind instead: a `users` row (one shared argon2 hash, as `server.demo` does), a
refresh token of its own per device (`server.auth.tokens.issue_refresh`, the function login
uses) and an access token signed with the server's key. Phones then refresh through the real
`/auth/refresh` on their schedule. The minted access tokens live `MINTED_ACCESS_TTL_S` so a
phone that starts late in the run still holds a valid one until its first refresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

from schemas.common import Point, Role
from schemas.reference import OrganisationCreate, OrgKind, UnitKind
from server.auth import tokens
from server.auth.passwords import hash_password
from server.auth.principal import Principal
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.models import RefreshToken, User, utcnow, uuid7

MINTED_ACCESS_TTL_S = 3 * 3600
UNIT_KINDS = (UnitKind.FIRE, UnitKind.POLICE, UnitKind.EMS, UnitKind.POWER, UnitKind.GAS)


@dataclass(frozen=True)
class PhoneSession:
    """What a signed-in phone holds."""

    user_id: str
    device_id: str
    unit_id: str
    access_token: str
    refresh_token: str


def unit_id(k: int) -> uuid.UUID:
    """The id of bench unit `k`."""
    return did(f"org:surge-unit-{k}")


async def _populate(
    url: str, secret: str, phones: int, units: range, first: int
) -> list[PhoneSession]:
    from server.domain.reference import services as ref

    engine = make_engine(url)
    out: list[PhoneSession] = []
    try:
        sm = make_sessionmaker(engine)
        async with sm() as session, session.begin():
            root = Principal(
                user_id=did("user:admin"),
                username="admin",
                role=Role.ADMIN,
                org_id=None,
                area_id=None,
                session_id=uuid.uuid4(),
                device_id="surge-fixture",
            )
            for k in units:
                await ref.create_org(
                    session,
                    root,
                    OrganisationCreate(
                        id=unit_id(k),
                        name=f"Surge unit {k}",
                        kind=OrgKind.LINKED_UNIT,
                        unit_kind=UNIT_KINDS[k % len(UNIT_KINDS)],
                        area_id=did("area:huangpu"),
                        location=Point(coordinates=(121.48, 31.23)),
                    ),
                )
            hashed = hash_password("surge-bench")
            rows = []
            for i in range(first, first + phones):
                rows.append(
                    {
                        "id": did(f"user:surge-{i}"),
                        "username": f"surge-{i}",
                        "display_name": f"Responder {i}",
                        "password_hash": hashed,
                        "role": Role.RESPONDER.value,
                        "org_id": unit_id(units[i % len(units)]),
                        "area_id": None,
                    }
                )
            for start in range(0, len(rows), 2000):
                await session.execute(insert(User), rows[start : start + 2000])
            # What `tokens.issue_refresh` stores, in bulk (one flush per token takes minutes).
            expires = utcnow() + timedelta(days=30)
            grants = []
            for i, row in enumerate(rows, start=first):
                device = f"surge-phone-{i}"
                refresh, family = secrets.token_urlsafe(32), uuid7()
                grants.append(
                    {
                        "user_id": row["id"],
                        "device_id": device,
                        "token_hash": hashlib.sha256(refresh.encode()).hexdigest(),
                        "family_id": family,
                        "expires_at": expires,
                    }
                )
                access = tokens.encode_access(
                    secret, row["id"], family, device, MINTED_ACCESS_TTL_S
                )
                out.append(
                    PhoneSession(str(row["id"]), device, str(row["org_id"]), access, refresh)
                )
            for start in range(0, len(grants), 2000):
                await session.execute(insert(RefreshToken), grants[start : start + 2000])
    finally:
        await engine.dispose()
    return out


def populate(
    url: str,
    secret: str,
    phones: int,
    units: int,
    path: Path,
    *,
    first: int = 0,
    first_unit: int = 0,
) -> int:
    """Create `units` linked units (numbered from `first_unit`) and `phones` responders
    (numbered from `first`; phone i in the i % units-th of those units), each with a device
    session; write the sessions to `path` (JSON lines). Returns the count. Call it again with
    later numbers for another group of phones in units of their own."""
    sessions = asyncio.run(
        _populate(url, secret, phones, range(first_unit, first_unit + units), first)
    )
    with path.open("w") as fh:
        for s in sessions:
            fh.write(json.dumps(asdict(s)) + "\n")
    return len(sessions)
