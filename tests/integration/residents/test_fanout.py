"""A published warning reaches every subscription inside its area once, and nobody outside:
publish through the API, the real SQL outbox and senders, loopback push services that verify
and decrypt, and the Tencent SMS stand-in behind the real SDK."""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from push.base import Channel
from schemas.common import Polygon
from server.config import Settings
from server.demo import did
from server.domain.residents.audience import duty_contacts_inside
from server.models import PushJobRow, ResidentSubscription
from tests import factories as f
from tests.integration.dispatch_helpers import in_db, register_device
from tests.integration.residents.fanout_helpers import (
    AREA,
    CENTRE,
    SMS_ID,
    SMS_KEY,
    at,
    drain,
    publish,
    sms_sender,
    subscribe,
)
from tests.peers.sms_standin import TencentSmsStandIn
from tests.peers.webpush_receiver import WebPushReceiver

OUTSIDE = (121.4990, 31.2200)
AREA_GEOMETRY = msgspec.convert(AREA, Polygon)


@pytest.fixture
def receiver() -> Any:
    with WebPushReceiver() as r:
        yield r


@pytest.fixture
def sms() -> Any:
    with TencentSmsStandIn(secret_id=SMS_ID, secret_key=SMS_KEY) as s:
        yield s


def test_publish_reaches_everyone_inside_once_and_nobody_outside(
    client: TestClient[Any], auth: Any, settings: Settings, receiver: WebPushReceiver
) -> None:
    inside = subscribe(client, receiver, at(*CENTRE))
    twice = subscribe(client, receiver, at(121.4850, 31.2370), at(121.4860, 31.2380))  # 2 places in
    english = subscribe(client, receiver, at(121.4870, 31.2390), lang="en")
    # A UnifiedPush distributor's endpoint (ntfy and others): plain Web Push, same path.
    unified = subscribe(client, receiver, at(121.4840, 31.2360), channel="unifiedpush")
    outside = subscribe(client, receiver, at(*OUTSIDE))
    village = subscribe(client, receiver, {"area_id": str(did("area:guizhoulu"))})  # overlaps
    far_village = subscribe(client, receiver, {"area_id": str(did("area:yuyuan"))})  # does not

    alert = publish(client, auth)
    report = drain(settings.database_url)
    assert report["delivered"] == 5  # (staff devices' FCM jobs have no sender here)

    got = {p.sub_id: p for p in receiver.pushes()}
    assert set(got) == {inside, twice, english, unified, village}
    assert outside not in got and far_village not in got
    assert receiver.rejections == [] and receiver.duplicates == 0
    push = got[inside]
    assert push.headers["urgency"] == "high"  # red
    assert push.headers["topic"] == uuid.UUID(alert["id"]).hex  # the chain's root
    assert 7000 < int(push.headers["ttl"]) <= 7200  # seconds until expiry
    body = push.json()
    assert body["data"]["event_id"] == f"alert:{alert['id']}" and "红色预警" in body["title"]
    assert "Red warning" in got[english].json()["title"]

    # A second run of the worker sends nothing more.
    assert drain(settings.database_url)["claimed"] == 0
    assert len(receiver.pushes()) == 5

    # The publisher's delivery report.
    r = client.get(f"/api/v1/alerts/{alert['id']}/delivery", headers=auth("dispatcher"))
    assert r.status_code == 200, r.text
    assert r.json()["channels"]["webpush"] == {
        "targeted": 5,
        "delivered": 5,
        "failed": 0,
        "pending": 0,
        "superseded": 0,
    }
    with client.stream(
        "GET", f"/api/v1/alerts/{alert['id']}/delivery/stream", headers=auth("dispatcher")
    ) as live:
        text = "".join(live.iter_text())
    assert "event: delivery" in text and '"done":true' in text
    assert client.get(f"/api/v1/alerts/{alert['id']}/delivery").status_code == 401
    assert (
        client.get(f"/api/v1/alerts/{alert['id']}/delivery", headers=auth("fire1")).status_code
        == 403
    )


def test_update_reaches_the_same_people_plus_the_newly_inside_and_cancel_only_receivers(
    client: TestClient[Any], auth: Any, settings: Settings, receiver: WebPushReceiver
) -> None:
    first_in = subscribe(client, receiver, at(*CENTRE))
    dead = subscribe(client, receiver, at(121.4850, 31.2370))
    later_in = subscribe(client, receiver, at(121.4920, 31.2375))  # east of the first square
    receiver.gone(dead)
    alert = publish(client, auth)
    drain(settings.database_url)
    assert {p.sub_id for p in receiver.pushes()} == {first_in}

    # 410 Gone: the subscription is deleted with its places.
    async def count(session: Any) -> int:
        return len((await session.execute(select(ResidentSubscription.id))).all())

    assert in_db(settings.database_url, count) == 2

    moved = f.square(121.4920, 31.2375, d=0.002)  # no longer covers first_in's place
    body = {"msg_type": "Update", "references": [alert["id"]], "area": moved, "color": "orange"}
    update_alert = publish(client, auth, body)
    drain(settings.database_url)
    second = [
        p
        for p in receiver.pushes()
        if p.json()["data"]["event_id"] == f"alert:{update_alert['id']}"
    ]
    assert {p.sub_id for p in second} == {first_in, later_in}  # the same people + newly inside
    assert {p.headers["topic"] for p in second} == {uuid.UUID(alert["id"]).hex}  # one chain

    newcomer = subscribe(client, receiver, at(121.4921, 31.2376))  # inside, but received nothing
    cancelled = publish(client, auth, {"msg_type": "Cancel", "references": [update_alert["id"]]})
    drain(settings.database_url)
    third = [
        p for p in receiver.pushes() if p.json()["data"]["event_id"] == f"alert:{cancelled['id']}"
    ]
    assert {p.sub_id for p in third} == {first_in, later_in}
    assert newcomer not in {p.sub_id for p in receiver.pushes()}


def test_staff_inside_get_a_push_with_the_level_and_duty_contacts_an_sms(
    client: TestClient[Any], auth: Any, settings: Settings, sms: TencentSmsStandIn
) -> None:
    token = register_device(client, auth("fire1"), "fire1-warning")
    r = client.post("/api/v1/positions", headers=auth("fire1"), json={"location": f.point(*CENTRE)})
    assert r.status_code == 204, r.text
    contact = client.post(
        "/api/v1/contacts",
        headers=auth("admin"),
        json={"kind": "person", "name": "贵州路社区值班", "phone": "139 0000 0001", "duty": True,
              "area_ids": [str(did("area:guizhoulu"))]},
    )  # fmt: skip
    assert contact.status_code in (200, 201), contact.text
    alert = publish(client, auth)

    async def jobs(session: Any) -> list[Any]:
        rows = await session.execute(
            select(PushJobRow.channel, PushJobRow.address, PushJobRow.message).where(
                PushJobRow.event_id == f"alert:{alert['id']}"
            )
        )
        return list(rows.all())

    queued = {(c, a): json.loads(m) for c, a, m in in_db(settings.database_url, jobs)}
    staff = queued[("fcm", token)]
    assert staff["data"]["kind"] == "warning.alert" and staff["data"]["audience"] == "staff"
    assert staff["data"]["colour"] == "red" and "红色预警" in staff["title"]
    assert ("sms", "+8613900000001") in queued  # a mainland mobile number, as E.164

    drain(settings.database_url, {Channel.SMS: sms_sender(sms)})
    assert sms.numbers() == ["+8613900000001"]
    assert sms.requests[0].template_id == "200001" and "红色预警" in sms.requests[0].params[0]


def test_update_and_cancel_replace_the_chains_unsent_messages(
    client: TestClient[Any], auth: Any, settings: Settings, receiver: WebPushReceiver
) -> None:
    """Nothing sent yet (the fan-out is pending, backing off or stopped): the Update replaces
    the Alert, the Cancel replaces both, and the Cancel reaches everyone who had a job, so
    nobody receives the withdrawn warning after (or instead of) its Cancel."""
    one = subscribe(client, receiver, at(*CENTRE))
    two = subscribe(client, receiver, at(121.4850, 31.2370))
    alert = publish(client, auth)
    body = {"msg_type": "Update", "references": [alert["id"]], "area": AREA, "color": "orange"}
    updated = publish(client, auth, body)
    cancelled = publish(client, auth, {"msg_type": "Cancel", "references": [updated["id"]]})
    drain(settings.database_url)

    got = [(p.sub_id, p.json()["data"]["event_id"]) for p in receiver.pushes()]
    assert sorted(got) == sorted(
        [(one, f"alert:{cancelled['id']}"), (two, f"alert:{cancelled['id']}")]
    )
    for replaced in (alert, updated):
        r = client.get(f"/api/v1/alerts/{replaced['id']}/delivery", headers=auth("dispatcher"))
        assert r.json()["channels"]["webpush"] == {
            "targeted": 2, "delivered": 0, "failed": 0, "pending": 0, "superseded": 2,
        }  # fmt: skip
        assert r.json()["done"] is True


def test_duty_contacts_are_those_serving_an_intersecting_area_or_everywhere_with_a_mobile(
    client: TestClient[Any], auth: Any, settings: Settings
) -> None:
    def contact(name: str, phone: str, areas: list[str], duty: bool = True) -> None:
        body = {"kind": "person", "name": name, "phone": phone, "duty": duty, "area_ids": areas}
        r = client.post("/api/v1/contacts", headers=auth("admin"), json=body)
        assert r.status_code in (200, 201), r.text

    inside, elsewhere = str(did("area:guizhoulu")), str(did("area:yuyuan"))
    contact("inside", "13900000011", [inside])
    contact("everywhere", "+86 139 0000 0012", [])
    contact("both", "13900000013", [elsewhere, inside])
    contact("elsewhere", "13900000014", [elsewhere])
    contact("not on duty", "13900000015", [inside], duty=False)
    contact("landline", "021-6321 0000", [inside])

    async def chosen(session: Any) -> set[str]:
        return {c.name for c in await duty_contacts_inside(session, AREA_GEOMETRY)}

    assert in_db(settings.database_url, chosen) == {"inside", "everywhere", "both"}


def test_update_and_cancel_replace_staff_and_duty_contacts_unsent_messages_too(
    client: TestClient[Any], auth: Any, settings: Settings, sms: TencentSmsStandIn
) -> None:
    """The residents' rule for every audience: an Update or Cancel supersedes the chain's unsent
    staff pushes and duty-contact SMS, and reaches whoever had one of them (an Update also
    whoever is now inside; a Cancel nobody else), so no withdrawn message goes out after it."""
    token = register_device(client, auth("fire1"), "fire1-chain")
    r = client.post("/api/v1/positions", headers=auth("fire1"), json={"location": f.point(*CENTRE)})
    assert r.status_code == 204, r.text

    def contact(name: str, phone: str) -> None:
        body = {"kind": "person", "name": name, "phone": phone, "duty": True,
                "area_ids": [str(did("area:guizhoulu"))]}  # fmt: skip
        r = client.post("/api/v1/contacts", headers=auth("admin"), json=body)
        assert r.status_code in (200, 201), r.text

    contact("贵州路社区值班", "13900000021")
    alert = publish(client, auth)
    # fire1 leaves the area and the Update moves away from it: fire1 had the Alert, so gets
    # the Update (as a resident would); a contact on duty after the Alert gets no Cancel.
    moved = f.square(*OUTSIDE, d=0.002)
    away = {"location": f.point(121.6, 31.4)}
    r = client.post("/api/v1/positions", headers=auth("fire1"), json=away)
    assert r.status_code == 204, r.text
    body = {"msg_type": "Update", "references": [alert["id"]], "area": moved, "color": "orange"}
    updated = publish(client, auth, body)
    contact("后来的值班", "13900000022")
    cancelled = publish(client, auth, {"msg_type": "Cancel", "references": [updated["id"]]})

    async def jobs(session: Any) -> set[tuple[str, str, str]]:
        rows = await session.execute(
            select(PushJobRow.event_id, PushJobRow.address, PushJobRow.state).where(
                PushJobRow.channel.in_(["fcm", "sms"])
            )
        )
        return {(e.removeprefix("alert:"), a, s) for e, a, s in rows.all()}

    staff_contact = "+8613900000021"
    assert in_db(settings.database_url, jobs) == {
        (alert["id"], token, "superseded"),
        (alert["id"], staff_contact, "superseded"),
        (updated["id"], token, "superseded"),
        (updated["id"], staff_contact, "superseded"),
        (cancelled["id"], token, "pending"),
        (cancelled["id"], staff_contact, "pending"),
    }
    drain(settings.database_url, {Channel.SMS: sms_sender(sms)})
    assert sms.numbers() == [staff_contact]  # the Cancel only, once
