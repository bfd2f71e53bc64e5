"""Contacts (通讯录) over REST, and which areas' reference data each user reads (issue 9).

Three districts are added beside the demo's Huangpu (a rectangle): one sharing its western
edge, one to the south with a 5 m digitising gap (both neighbours), and one 1.8 km to the east
(not a neighbour). Each has a dispatcher of its own where a test needs one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from schemas.common import Role
from server.auth.principal import Principal
from server.db import make_engine, make_sessionmaker
from server.domain.sync.reference_scopes import reference_reads
from tests import factories as f
from tests.conftest import Sessions
from tests.snapshots import DatabaseState

T = TypeVar("T")

HUANGPU = f.did("area:huangpu")
WEST = f.did("area:test-west")
WEST_STREET = f.did("area:test-west-street")
SOUTH = f.did("area:test-south-gap")
FAR = f.did("area:test-far-east")
IN_FAR = (121.550, 31.220)
PASSWORD = "correct horse battery"


def _rect(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


# Huangpu is (121.460, 31.195) - (121.512, 31.250).
AREAS = [
    (WEST, "T-WEST", "district", f.did("area:shanghai"), (121.420, 31.200, 121.460, 31.245)),
    (WEST_STREET, "T-WEST-1", "street", WEST, (121.430, 31.210, 121.450, 31.230)),
    (SOUTH, "T-SOUTH", "district", f.did("area:shanghai"), (121.470, 31.170, 121.500, 31.19495)),
    (FAR, "T-FAR", "district", f.did("area:shanghai"), (121.530, 31.200, 121.570, 31.245)),
]


@pytest.fixture(scope="module")
def districts(
    client: TestClient[Any], auth: Sessions, database_state: DatabaseState
) -> Iterator[dict[str, str]]:
    """The three extra districts, and a dispatcher for the far one (username -> password),
    kept for this module's tests."""
    for ident, code, level, parent, box in AREAS:
        body = {
            "id": str(ident),
            "name": f"测试 {code}",
            "code": code,
            "level": level,
            "parent_id": str(parent),
            "boundary": _rect(*box),
        }
        r = client.post("/api/v1/areas", headers=auth("admin"), json=body)
        assert r.status_code in (201, 409), r.text
    far = f.user("dispatcher", area_id=str(FAR))
    r = client.post("/api/v1/users", headers=auth("admin"), json=far)
    assert r.status_code == 201, r.text
    with database_state.kept():
        yield {"far_dispatcher": far["username"]}


def contact(**kw: Any) -> dict[str, Any]:
    """A contact body serving Huangpu."""
    body: dict[str, Any] = {
        "kind": "person",
        "name": f"联系人 {uuid.uuid4().hex[:6]}",
        "name_en": "Contact",
        "phone": "+86 138-0000-0000",
        "area_ids": [str(HUANGPU)],
    }
    body.update(kw)
    return body


def _ids(client: TestClient[Any], headers: dict[str, str], **params: Any) -> set[str]:
    r = client.get("/api/v1/contacts", headers=headers, params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return {c["id"] for c in r.json()["items"]}


def test_demo_duty_lines_reach_huangpu(client: TestClient[Any], auth: Sessions) -> None:
    police = str(f.did("contact:police-duty"))
    for who in ("admin", "dispatcher", "fire1", "inspector1", "enterprise1"):
        assert police in _ids(client, auth(who)), who
    one = client.get(f"/api/v1/contacts/{police}", headers=auth("fire1")).json()
    assert one["duty"] is True and one["kind"] == "unit_duty"
    assert one["name_en"] == "Huangpu Police 110 duty desk"
    assert one["org_id"] == str(f.did("org:police"))
    duty = _ids(client, auth("dispatcher"), duty="true")
    assert police in duty and str(f.did("contact:zhang-wei")) not in duty
    people = _ids(client, auth("dispatcher"), kind="person")
    assert str(f.did("contact:li-na")) in people and police not in people


def test_create_is_idempotent_and_checked(client: TestClient[Any], auth: Sessions) -> None:
    admin = auth("admin")
    body = contact(id=str(uuid.uuid4()), org_id=str(f.did("org:fire")), duty=True)
    first = client.post("/api/v1/contacts", headers=admin, json=body)
    assert first.status_code == 201, first.text
    again = client.post("/api/v1/contacts", headers=admin, json={**body, "name": "另一个"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    # Someone else reusing the id is a conflict, not a read of another's record.
    taken = client.post("/api/v1/contacts", headers=auth("dispatcher"), json=body)
    assert taken.status_code == 409
    assert taken.headers["content-type"].startswith("application/problem+json")

    bad: list[tuple[dict[str, Any], int]] = [
        ({"phone": "call me"}, 400),
        ({"kind": "pager"}, 400),
        ({"area_ids": [str(uuid.uuid4())]}, 422),
        ({"org_id": str(uuid.uuid4())}, 422),
        ({"user_id": str(uuid.uuid4())}, 422),
    ]
    for change, status in bad:
        r = client.post("/api/v1/contacts", headers=admin, json=contact(**change))
        assert r.status_code == status, (change, r.text)


def test_update_and_delete(client: TestClient[Any], auth: Sessions) -> None:
    d = auth("dispatcher")
    made = client.post("/api/v1/contacts", headers=d, json=contact())
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    r = client.patch(
        f"/api/v1/contacts/{cid}",
        headers=d,
        json={"phone": "021-63210999", "role_title": "值班员", "duty": True},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["phone"], r.json()["role_title"], r.json()["duty"]) == (
        "021-63210999",
        "值班员",
        True,
    )
    assert client.patch(f"/api/v1/contacts/{cid}", headers=d, json={"x": 1}).status_code == 400
    assert client.delete(f"/api/v1/contacts/{cid}", headers=d).status_code == 204
    assert client.get(f"/api/v1/contacts/{cid}", headers=d).status_code == 404
    assert cid not in _ids(client, auth("admin"))


def test_who_may_write(client: TestClient[Any], auth: Sessions, districts: dict[str, str]) -> None:
    far = auth(districts["far_dispatcher"], PASSWORD)
    # A dispatcher of another area cannot add a contact for Huangpu, nor one serving everywhere.
    r = client.post("/api/v1/contacts", headers=far, json=contact())
    assert r.status_code == 403 and r.json()["status"] == 403
    assert (
        client.post("/api/v1/contacts", headers=far, json=contact(area_ids=[])).status_code == 403
    )
    mixed = contact(area_ids=[str(FAR), str(HUANGPU)])
    assert client.post("/api/v1/contacts", headers=far, json=mixed).status_code == 403
    # ... but can for their own.
    own = client.post("/api/v1/contacts", headers=far, json=contact(area_ids=[str(FAR)]))
    assert own.status_code == 201, own.text
    # Responders, inspectors and enterprise staff only read.
    for who in ("fire1", "inspector1", "enterprise1"):
        assert client.post("/api/v1/contacts", headers=auth(who), json=contact()).status_code == 403
    demo = f"/api/v1/contacts/{f.did('contact:police-duty')}"
    assert client.patch(demo, headers=auth("fire1"), json={"phone": "1"}).status_code == 403
    assert client.delete(demo, headers=auth("fire1")).status_code == 403
    # The Huangpu dispatcher does not see the far district's contact at all ...
    fid = own.json()["id"]
    assert client.get(f"/api/v1/contacts/{fid}", headers=auth("dispatcher")).status_code == 404
    assert (
        client.patch(
            f"/api/v1/contacts/{fid}", headers=auth("dispatcher"), json={"name": "x"}
        ).status_code
        == 404
    )
    # ... and sees a neighbour's (west) but may not change it: it is not their command area.
    west = client.post(
        "/api/v1/contacts", headers=auth("admin"), json=contact(area_ids=[str(WEST_STREET)])
    ).json()["id"]
    assert client.get(f"/api/v1/contacts/{west}", headers=auth("dispatcher")).status_code == 200
    moved = client.patch(
        f"/api/v1/contacts/{west}", headers=auth("dispatcher"), json={"area_ids": [str(HUANGPU)]}
    )
    assert moved.status_code == 403
    # Moving one of theirs out of their area is refused too.
    mine = client.post("/api/v1/contacts", headers=auth("dispatcher"), json=contact()).json()["id"]
    out = client.patch(
        f"/api/v1/contacts/{mine}", headers=auth("dispatcher"), json={"area_ids": [str(FAR)]}
    )
    assert out.status_code == 403


def test_reading_follows_neighbours_and_tasks(
    client: TestClient[Any], auth: Sessions, districts: dict[str, str]
) -> None:
    admin = auth("admin")

    def add(area: uuid.UUID) -> str:
        r = client.post("/api/v1/contacts", headers=admin, json=contact(area_ids=[str(area)]))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    west, south, far = add(WEST_STREET), add(SOUTH), add(FAR)
    made = client.post(
        "/api/v1/contacts", headers=admin, json=contact(area_ids=[], name="市应急热线")
    )
    assert made.status_code == 201, made.text
    everywhere = made.json()["id"]
    for who in ("dispatcher", "fire2"):
        seen = _ids(client, auth(who))
        assert {west, south, everywhere} <= seen and far not in seen, who
    assert far in _ids(client, auth(districts["far_dispatcher"], PASSWORD))
    assert {west, south, far, everywhere} <= _ids(client, admin)
    # `area_id` narrows to the contacts serving that area (and those serving everywhere).
    narrowed = _ids(client, auth("dispatcher"), area_id=str(WEST_STREET))
    assert west in narrowed and everywhere in narrowed and south not in narrowed

    # Cross-county aid: a task in the far district brings its contacts to the unit's phones,
    # for as long as the task is current.
    task = client.post("/api/v1/tasks", headers=admin, json=f.task(at=IN_FAR, unit="fire2")).json()
    assert task["area_id"] == str(FAR)
    assert far in _ids(client, auth("fire2"))
    assert far not in _ids(client, auth("fire1"))
    r = client.post(
        f"/api/v1/tasks/{task['id']}/transitions", headers=admin, json={"to_status": "cancelled"}
    )
    assert r.status_code in (200, 201), r.text
    assert far not in _ids(client, auth("fire2"))


# -- reads with real geometry (the sync scopes) --------------------------------------------


def _sync(database_url: str, fn: Callable[[Session], T]) -> T:
    async def run() -> T:
        engine = make_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                result: T = await session.run_sync(fn)
                return result
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _who(role: Role, area: uuid.UUID | None = None, org: str | None = None) -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        username="t",
        role=role,
        org_id=f.did(f"org:{org}") if org else None,
        area_id=area,
        session_id=uuid.uuid4(),
        device_id="t",
    )


def _areas(keys: set[str]) -> set[uuid.UUID]:
    return {uuid.UUID(k.split(":", 1)[1]) for k in keys if k.startswith("refarea:")}


def test_reference_reads_by_level(database_url: str, districts: dict[str, str]) -> None:
    city, street, community = (
        f.did("area:shanghai"),
        f.did("area:nanjingdong"),
        f.did("area:guizhoulu"),
    )
    yuyuan = f.did("area:yuyuan")

    def reads(p: Principal) -> set[str]:
        return _sync(database_url, lambda s: reference_reads(s, p))

    # A district's dispatcher: the district, its neighbours touching or 5 m away with what lies
    # below them, the city above; not a district 1.8 km away. And every plan.
    d = reads(_who(Role.DISPATCHER, HUANGPU))
    assert {HUANGPU, street, community, yuyuan, WEST, WEST_STREET, SOUTH, city} <= _areas(d)
    assert FAR not in _areas(d)
    assert {"ref", "plans"} <= d and not any(k.startswith("plankind:") for k in d)
    # A responder works from their unit's area; plans of their unit's kind.
    fire = reads(_who(Role.RESPONDER, org="fire"))
    assert _areas(fire) == _areas(d)
    assert "plankind:fire" in fire and "plans" not in fire
    assert "plankind:ems" in reads(_who(Role.RESPONDER, org="ems"))
    # A street: its subtree and the street it touches, not the neighbouring districts.
    s = _areas(reads(_who(Role.INSPECTOR, yuyuan)))
    assert {yuyuan, street, community, HUANGPU, city} <= s
    assert not s & {WEST, WEST_STREET, SOUTH}
    # A community (no demo community touches it): itself and the areas above it only.
    assert _areas(reads(_who(Role.INSPECTOR, community))) == {community, street, HUANGPU, city}
    # Administrators: every area.
    # Administrators read everything placed through one scope, not one cursor per area.
    assert reads(_who(Role.ADMIN)) == {"ref", "refall", "plans"}
    # No home area, no tasks: only what serves everyone.
    assert reads(_who(Role.ENTERPRISE_STAFF)) == {"ref"}


def test_a_new_neighbour_is_read_at_once(
    client: TestClient[Any], auth: Sessions, database_url: str, districts: dict[str, str]
) -> None:
    """The reach of an area is kept per process between pulls; a new area next to it counts
    from the next pull on, not after a restart."""
    east = f.did("area:test-far-east-neighbour")
    far_dispatcher = _who(Role.DISPATCHER, FAR)
    before = _areas(_sync(database_url, lambda s: reference_reads(s, far_dispatcher)))
    assert FAR in before and east not in before
    body = {
        "id": str(east),
        "name": "测试 T-FAR-EAST",
        "code": "T-FAR-EAST",
        "level": "district",
        "parent_id": str(f.did("area:shanghai")),
        "boundary": _rect(121.570, 31.200, 121.600, 31.245),  # touches T-FAR's east edge
    }
    r = client.post("/api/v1/areas", headers=auth("admin"), json=body)
    assert r.status_code == 201, r.text
    after = _areas(_sync(database_url, lambda s: reference_reads(s, far_dispatcher)))
    assert after == before | {east}
