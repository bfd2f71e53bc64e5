"""A warning's chain stays one line with one current message: another sender's import never
supersedes our messages, an imported Update that arrives late is superseded on arrival (and
reaches nobody), and two publishes racing for one head never fork the chain. Drafts are hidden
by the one scope rule (server/scope.py) on every route that reads an alert."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from push import cap
from schemas.common import Role
from server.auth.principal import Principal
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.alerts import services as svc
from server.errors import Conflict
from server.models import Alert, User
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.test_alert_imports import SENDER, foreign, upload
from tests.integration.test_alerts import draft, public_ids, publish


def test_a_foreign_import_never_supersedes_or_cancels_our_warning(
    client: TestClient[Any], auth: Sessions
) -> None:
    d = auth("dispatcher")
    ours = publish(client, d, draft(client, d)["id"])
    ref = cap.Reference(ours["sender"], ours["identifier"], datetime.fromisoformat(ours["sent"]))
    for n, kind in enumerate(("Update", "Cancel")):
        r = upload(client, auth, foreign(f"PD-HIJACK-{n}", kind, (ref,)))
        assert r.status_code == 201, r.text
        got = r.json()["alert"]
        assert got["chain_id"] != ours["chain_id"]  # a chain of its own
        (kept,) = got["references"]  # the reference stays, pointing at nothing of ours
        assert kept["identifier"] == ours["identifier"] and kept["id"] is None
    again = client.get(f"/api/v1/alerts/{ours['id']}", headers=d).json()
    assert again["superseded_by"] is None and again["current"]
    assert ours["id"] in public_ids(client)


def test_an_imported_update_arriving_late_is_superseded_on_arrival(
    client: TestClient[Any], auth: Sessions
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    first = upload(client, auth, foreign("PD-OOO-1", sent=t0)).json()["alert"]
    ref = cap.Reference(SENDER, "PD-OOO-1", t0)
    newer = upload(
        client, auth, foreign("PD-OOO-3", "Update", (ref,), sent=t0 + timedelta(minutes=2))
    )
    newer_id = newer.json()["alert"]["id"]
    delivered: list[uuid.UUID] = []

    async def record(_session: AsyncSession, row: Alert) -> None:
        delivered.append(row.id)

    svc.PUBLISHED_HOOKS.append(record)
    try:
        late = upload(
            client, auth, foreign("PD-OOO-2", "Update", (ref,), sent=t0 + timedelta(minutes=1))
        )
    finally:
        svc.PUBLISHED_HOOKS.remove(record)
    assert late.status_code == 201, late.text
    got = late.json()["alert"]
    assert got["superseded_by"] == newer_id and not got["current"]
    assert delivered == []  # already superseded: delivered to nobody
    current = client.get(
        "/api/v1/alerts",
        headers=auth("admin"),
        params={"chain_id": first["chain_id"], "current": "true"},
    ).json()["items"]
    assert [a["id"] for a in current] == [newer_id]


async def _principal(session: AsyncSession, username: str) -> Principal:
    user = await session.get(User, did(f"user:{username}"))
    assert user is not None
    return Principal(
        user.id, user.username, Role(user.role), user.org_id, user.area_id, uuid.uuid4(), "t"
    )


@pytest.mark.parametrize("same_draft", [False, True], ids=["two-updates", "one-draft-twice"])
def test_racing_publishes_never_fork_a_chain(
    client: TestClient[Any], auth: Sessions, database_url: str, same_draft: bool
) -> None:
    """The first publish holds its transaction open; the second starts meanwhile, waits on the
    locked rows (PostgreSQL; SQLite serialises writers) and, once the first commits, is
    refused 409."""
    d = auth("dispatcher")
    head = publish(client, d, draft(client, d)["id"])
    body = {"msg_type": "Update", "references": [head["id"]], "color": "blue"}
    one = client.post("/api/v1/alerts", headers=d, json=body).json()["id"]
    two = one if same_draft else client.post("/api/v1/alerts", headers=d, json=body).json()["id"]

    async def interleaved() -> None:
        e1, e2 = make_engine(database_url), make_engine(database_url)
        try:
            async with make_sessionmaker(e1)() as first:
                await first.begin()
                p = await _principal(first, "dispatcher")
                await svc.publish(first, p, None, await svc.get_alert(first, p, uuid.UUID(one)))
                async with make_sessionmaker(e2)() as second, second.begin():

                    async def again() -> None:
                        row = await svc.get_alert(second, p, uuid.UUID(two))
                        await svc.publish(second, p, None, row)

                    late = asyncio.create_task(again())
                    await asyncio.sleep(0.5)  # the second reads, then waits on the locks
                    await first.commit()
                    with pytest.raises(Conflict):
                        await late
        finally:
            await e1.dispose()
            await e2.dispose()

    asyncio.run(interleaved())
    current = client.get(
        "/api/v1/alerts", headers=d, params={"chain_id": head["chain_id"], "current": "true"}
    ).json()["items"]
    assert [a["id"] for a in current] == [one]


def test_a_draft_is_hidden_from_dispatch_of_other_areas_on_every_route(
    client: TestClient[Any], auth: Sessions
) -> None:
    a = draft(client, auth("dispatcher"))  # in Nanjing Rd E
    body = f.user("dispatcher", org="command", area_id=str(did("area:yuyuan")))
    r = client.post("/api/v1/users", headers=auth("admin"), json=body)
    assert r.status_code == 201, r.text
    elsewhere, here = auth(body["username"], body["password"]), auth("chief")
    for path in (f"/api/v1/alerts/{a['id']}", f"/api/v1/alerts/{a['id']}/delivery"):
        assert client.get(path, headers=elsewhere).status_code == 404, path
        assert client.get(path, headers=here).status_code == 200, path
    listed = client.get("/api/v1/alerts", headers=elsewhere, params={"state": "draft"})
    assert a["id"] not in {x["id"] for x in listed.json()["items"]}
    listed = client.get("/api/v1/alerts", headers=here, params={"state": "draft"})
    assert a["id"] in {x["id"] for x in listed.json()["items"]}
