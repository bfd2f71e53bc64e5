"""Residents' subscriptions without an account: register, secret, places, SSRF, limits, lapse."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select, update

from push.base import Channel
from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.residents import services as svc
from server.models import PushJobRow, ResidentPlace, ResidentSubscription, utcnow
from server.outbox import unseal
from tests.integration.residents.fanout_helpers import SMS_ID, SMS_KEY, drain, sms_sender
from tests.peers.sms_standin import TencentSmsStandIn
from tests.peers.webpush_receiver import WebPushReceiver

API = "/api/v1/public"
PEOPLES_SQUARE = {"lon": 121.47537, "lat": 31.23288}


@pytest.fixture(scope="module")
def receiver() -> Any:
    with WebPushReceiver() as r:
        yield r


@pytest.fixture
def sms() -> Any:
    with TencentSmsStandIn(secret_id=SMS_ID, secret_key=SMS_KEY) as s:
        yield s


def webpush(receiver: WebPushReceiver, **extra: Any) -> dict[str, Any]:
    _, sub = receiver.subscribe()
    return {
        "channel": "webpush",
        "subscription": json.loads(sub),
        "places": [PEOPLES_SQUARE],
        **extra,
    }


def register(client: TestClient[Any], body: dict[str, Any], **headers: str) -> Any:
    return client.post(f"{API}/subscriptions", json=body, headers=headers)


def run_db(settings: Settings, fn: Any) -> Any:
    async def main() -> Any:
        engine = make_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await fn(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_push_key_is_served(client: TestClient[Any]) -> None:
    r = client.get(f"{API}/push-key")
    assert r.status_code == 200
    assert r.json()["vapid_public_key"].startswith("B")  # an uncompressed P-256 point


def test_register_returns_a_secret_once_and_never_shows_places(
    client: TestClient[Any], receiver: WebPushReceiver, settings: Settings
) -> None:
    body = webpush(receiver, lang="en")
    body["places"].append({"area_id": str(did("area:yuyuan"))})
    r = register(client, body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert set(out) == {"id", "channel", "lang", "confirmed", "places", "renew_by", "secret"}
    assert out["places"] == 2 and out["confirmed"] and out["lang"] == "en"
    assert len(out["secret"]) >= 40
    sub_id, secret = out["id"], out["secret"]

    got = client.get(f"{API}/subscriptions/{sub_id}", headers={"X-Subscription-Secret": secret})
    assert got.status_code == 200 and "secret" not in got.json()
    assert "lon" not in got.text and "121.47" not in got.text  # places are never shown back

    async def stored(session: Any) -> Any:
        row = await session.get(ResidentSubscription, uuid.UUID(sub_id))
        places = (
            await session.execute(
                select(func.ST_X(ResidentPlace.location), func.ST_Y(ResidentPlace.location)).where(
                    ResidentPlace.subscription_id == row.id, ResidentPlace.location.is_not(None)
                )
            )
        ).all()
        return row.secret_hash, places

    secret_hash, places = run_db(settings, stored)
    assert secret not in secret_hash and len(secret_hash) == 64  # only a hash is kept
    assert places == [(121.475, 31.233)]  # rounded to 0.001 degree (~100 m)


@pytest.mark.parametrize("secret", [None, "wrong-secret"])
def test_without_the_secret_nothing_can_be_read_moved_or_deleted(
    client: TestClient[Any], receiver: WebPushReceiver, secret: str | None
) -> None:
    sub_id = register(client, webpush(receiver)).json()["id"]
    headers = {"X-Subscription-Secret": secret} if secret else {}
    url = f"{API}/subscriptions/{sub_id}"
    assert client.get(url, headers=headers).status_code == 404
    assert client.put(url, json={"lang": "en"}, headers=headers).status_code == 404
    assert client.delete(url, headers=headers).status_code == 404
    # ... and an unknown id answers exactly the same.
    other = client.get(
        f"{API}/subscriptions/{uuid.uuid4()}", headers={"X-Subscription-Secret": "x"}
    )
    assert other.status_code == 404


def test_move_renew_and_delete_with_the_secret(
    client: TestClient[Any], receiver: WebPushReceiver, settings: Settings
) -> None:
    out = register(client, webpush(receiver)).json()
    url, headers = f"{API}/subscriptions/{out['id']}", {"X-Subscription-Secret": out["secret"]}

    async def age(session: Any) -> None:
        await session.execute(
            update(ResidentSubscription)
            .where(ResidentSubscription.id == uuid.UUID(out["id"]))
            .values(renewed_at=utcnow() - timedelta(days=80))
        )

    run_db(settings, age)
    moved = client.put(url, json={"places": [{"lon": 121.49, "lat": 31.22}] * 3}, headers=headers)
    assert moved.status_code == 200 and moved.json()["places"] == 3
    assert moved.json()["renew_by"] > out["renew_by"]  # a move renews
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404


def test_subscriptions_not_renewed_for_90_days_lapse(
    client: TestClient[Any], receiver: WebPushReceiver, settings: Settings
) -> None:
    fresh = register(client, webpush(receiver)).json()["id"]
    old = register(client, webpush(receiver)).json()["id"]

    async def lapse(session: Any) -> tuple[int, set[str]]:
        await session.execute(
            update(ResidentSubscription)
            .where(ResidentSubscription.id == uuid.UUID(old))
            .values(renewed_at=utcnow() - timedelta(days=91))
        )
        gone = await svc.lapse(session)
        left = set(map(str, (await session.execute(select(ResidentSubscription.id))).scalars()))
        orphans = await session.scalar(
            select(func.count()).where(ResidentPlace.subscription_id == uuid.UUID(old))
        )
        assert orphans == 0
        return gone, left

    gone, left = run_db(settings, lapse)
    assert gone == 1 and fresh in left and old not in left


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://push.example.com/x", "not_https"),
        ("https://10.0.0.1/push/x", "private_address"),
        ("https://169.254.169.254/latest", "private_address"),
        ("https://localhost/push/x", "private_address"),
        ("https://[::1]/push/x", "private_address"),
        ("https://user:pw@push.example.com/x", "malformed"),
    ],
)
def test_endpoints_into_our_own_network_are_refused(
    client: TestClient[Any], receiver: WebPushReceiver, endpoint: str, reason: str
) -> None:
    body = webpush(receiver)
    body["subscription"]["endpoint"] = endpoint
    r = register(client, body)
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]


FCM = {"channel": "fcm", "fcm_token": "x" * 30}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # the declared shape refuses these (400) ...
        (400, {"channel": "sms", "phone": "13800000000", "places": [PEOPLES_SQUARE]}),  # not E.164
        (400, {**FCM, "places": []}),
        (400, {**FCM, "places": [PEOPLES_SQUARE] * 6}),
        (400, {**FCM, "places": [PEOPLES_SQUARE], "lang": "fr"}),
        # ... and the service's rules these (422)
        (422, {"channel": "webpush", "places": [PEOPLES_SQUARE]}),  # no subscription
        (422, {**FCM, "phone": "+8613800000000", "places": [PEOPLES_SQUARE]}),
        (422, {**FCM, "places": [{"lon": 121.4}]}),
        (422, {**FCM, "places": [{**PEOPLES_SQUARE, "area_id": str(uuid.uuid4())}]}),
        (422, {**FCM, "places": [{"area_id": str(uuid.uuid4())}]}),
    ],
)
def test_bad_registrations_get_a_problem_and_store_nothing(
    client: TestClient[Any], settings: Settings, status: int, body: dict[str, Any]
) -> None:
    r = register(client, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")

    async def count(session: Any) -> int:
        return int(await session.scalar(select(func.count()).select_from(ResidentSubscription)))

    assert run_db(settings, count) == 0


def test_registrations_are_rate_limited_per_address(
    client: TestClient[Any], receiver: WebPushReceiver, settings: Settings
) -> None:
    limit = settings.resident_register_limit
    bad = webpush(receiver)
    bad["subscription"]["endpoint"] = "https://10.0.0.1/x"
    answers = [register(client, bad).status_code for _ in range(limit)]  # refused ones count too
    assert answers == [422] * limit
    r = register(client, webpush(receiver))
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_the_same_address_registered_again_replaces_it(
    client: TestClient[Any], receiver: WebPushReceiver, settings: Settings
) -> None:
    body = webpush(receiver)
    first = register(client, body).json()
    second = register(client, body).json()
    assert first["id"] == second["id"] and first["secret"] != second["secret"]
    old = client.get(
        f"{API}/subscriptions/{first['id']}", headers={"X-Subscription-Secret": first["secret"]}
    )
    assert old.status_code == 404  # the old secret no longer works


def test_sms_needs_the_code_the_sms_brings(
    client: TestClient[Any], settings: Settings, sms: TencentSmsStandIn
) -> None:
    out = register(
        client, {"channel": "sms", "phone": "+8613800138000", "places": [PEOPLES_SQUARE]}
    ).json()
    assert out["confirmed"] is False
    url, headers = (
        f"{API}/subscriptions/{out['id']}/confirm",
        {"X-Subscription-Secret": out["secret"]},
    )

    async def queued(session: Any) -> list[Any]:
        return list((await session.execute(select(PushJobRow))).scalars())

    [job] = run_db(settings, queued)
    assert job.channel == "sms" and job.address == "+8613800138000"
    report = drain(settings.database_url, {Channel.SMS: sms_sender(sms)}, key=settings.secret_key)
    assert report["delivered"] == 1
    [sent] = sms.requests
    [code] = sent.params
    assert sent.template_id == "200002" and len(code) == 6
    # The outbox row holds the message sealed with the server's key: the code is nowhere in it.
    [row] = run_db(settings, queued)
    stored = " ".join(str(getattr(row, c.key)) for c in PushJobRow.__table__.columns)
    assert row.message.startswith("sealed:") and code not in stored
    assert code in json.loads(unseal(settings.secret_key, row.message))["body"]  # Chinese text
    wrong = "000000" if code != "000000" else "111111"
    assert client.post(url, json={"code": wrong}, headers=headers).status_code == 422
    assert (
        client.post(url, json={"code": code}, headers={"X-Subscription-Secret": "no"}).status_code
        == 404
    )
    ok = client.post(url, json={"code": code}, headers=headers)
    assert ok.status_code == 200 and ok.json()["confirmed"] is True


def test_a_worker_without_the_servers_key_sends_no_code(
    client: TestClient[Any], settings: Settings, sms: TencentSmsStandIn
) -> None:
    """A sealed message a worker cannot open (no key, another key) is dead, never sent."""
    for phone in ("+8613800138002", "+8613800138003"):
        body = {"channel": "sms", "phone": phone, "places": [PEOPLES_SQUARE]}
        assert register(client, body).status_code == 201
    senders = {Channel.SMS: sms_sender(sms)}
    report = drain(settings.database_url, senders, key="not the server's key")
    assert report["delivered"] == 0 and sms.requests == []

    async def states(session: Any) -> list[tuple[str, str | None]]:
        return list((await session.execute(select(PushJobRow.state, PushJobRow.last_error))).all())

    assert (
        run_db(settings, states)
        == [("dead", "sealed message: this worker lacks the server's key")] * 2
    )


def test_sms_code_attempts_are_limited(client: TestClient[Any]) -> None:
    out = register(
        client, {"channel": "sms", "phone": "+8613800138001", "places": [PEOPLES_SQUARE]}
    ).json()
    url, headers = (
        f"{API}/subscriptions/{out['id']}/confirm",
        {"X-Subscription-Secret": out["secret"]},
    )
    # Six wrong codes (the real one is a random six digits: one chance in 10^6 per try).
    answers = [client.post(url, json={"code": f"{n:06d}"}, headers=headers) for n in range(6)]
    if any(a.status_code == 200 for a in answers):
        pytest.skip("guessed the random code")
    assert [a.status_code for a in answers] == [422] * 6
    assert "wrong code" in answers[4].json()["detail"]
    assert "too often" in answers[5].json()["detail"]


def sms_code(settings: Settings, sub_id: str) -> str:
    """The code the SMS for this subscription carries (the last one queued, opened with the
    server's key)."""
    key = settings.secret_key

    async def read(session: Any) -> str:
        rows = await session.execute(
            select(PushJobRow.message)
            .where(PushJobRow.device_id == f"r:{uuid.UUID(sub_id).hex}")
            .order_by(PushJobRow.created_at)
        )
        sealed = rows.scalars().all()[-1]
        return str(json.loads(json.loads(unseal(key, sealed))["data"]["sms_params"])[0])

    return run_db(settings, read)


def test_knowing_a_number_does_not_switch_off_its_confirmed_warnings(
    client: TestClient[Any], settings: Settings
) -> None:
    phone = "+8613800138010"
    owner = register(client, {"channel": "sms", "phone": phone, "places": [PEOPLES_SQUARE] * 2})
    owner = owner.json()
    mine = {"X-Subscription-Secret": owner["secret"]}
    url = f"{API}/subscriptions/{owner['id']}"
    code = sms_code(settings, owner["id"])
    assert client.post(f"{url}/confirm", json={"code": code}, headers=mine).status_code == 200

    # Someone else registers the same number somewhere else: nothing changes until the code
    # sent to the number comes back.
    other = register(
        client, {"channel": "sms", "phone": phone, "places": [{"lon": 120, "lat": 30}]}
    )
    assert other.status_code == 201, other.text
    other = other.json()
    assert other["id"] != owner["id"] and other["confirmed"] is False
    still = client.get(url, headers=mine)
    assert still.status_code == 200 and still.json()["confirmed"] is True
    assert still.json()["places"] == 2

    # Whoever proves the number owns it: the earlier subscription goes.
    theirs = {"X-Subscription-Secret": other["secret"]}
    other_url = f"{API}/subscriptions/{other['id']}"
    code = sms_code(settings, other["id"])
    done = client.post(f"{other_url}/confirm", json={"code": code}, headers=theirs)
    assert done.status_code == 200 and done.json()["confirmed"] is True
    assert client.get(url, headers=mine).status_code == 404

    async def numbers(session: Any) -> list[Any]:
        rows = await session.execute(
            select(ResidentSubscription.id, ResidentSubscription.confirmed).where(
                ResidentSubscription.address == phone
            )
        )
        return list(rows.all())

    assert run_db(settings, numbers) == [(uuid.UUID(other["id"]), True)]


def test_a_new_push_address_counts_against_the_limit_and_a_taken_one_is_a_conflict(
    client: TestClient[Any], receiver: WebPushReceiver, settings: Settings
) -> None:
    first = register(client, webpush(receiver)).json()
    second = webpush(receiver)
    assert register(client, second).status_code == 201
    url, headers = f"{API}/subscriptions/{first['id']}", {"X-Subscription-Secret": first["secret"]}
    taken = client.put(url, json={"subscription": second["subscription"]}, headers=headers)
    assert taken.status_code == 409, taken.text
    assert taken.headers["content-type"].startswith("application/problem+json")

    left = settings.resident_register_limit - 3  # two registrations and the refused move
    answers = [
        client.put(url, json={"subscription": webpush(receiver)["subscription"]}, headers=headers)
        for _ in range(left + 1)
    ]
    assert [a.status_code for a in answers] == [200] * left + [429]
    assert client.put(url, json={"lang": "en"}, headers=headers).status_code == 200  # no address


def test_concurrent_wrong_codes_cannot_share_an_attempt(
    client: TestClient[Any], settings: Settings
) -> None:
    out = register(
        client, {"channel": "sms", "phone": "+8613800138011", "places": [PEOPLES_SQUARE]}
    )
    sub_id, secret = uuid.UUID(out.json()["id"]), out.json()["secret"]

    async def last_try(session: Any) -> None:
        await session.execute(
            update(ResidentSubscription)
            .where(ResidentSubscription.id == sub_id)
            .values(code_attempts=svc.CODE_MAX_ATTEMPTS - 1)
        )

    run_db(settings, last_try)
    wrong = "000000" if sms_code(settings, str(sub_id)) != "000000" else "111111"

    async def guesses() -> list[str]:
        engine = make_engine(settings.database_url)
        maker = make_sessionmaker(engine)

        async def guess() -> str:
            async with maker() as session:
                try:
                    await svc.confirm(session, sub_id, secret, wrong)
                except svc.InvalidInput as exc:
                    await session.commit()
                    return str(exc)
                return "confirmed"

        try:
            return sorted(await asyncio.gather(guess(), guess()))
        finally:
            await engine.dispose()

    answers = asyncio.run(guesses())
    assert ["expired" in a for a in answers].count(True) == 1, answers  # one try was left


def test_an_unexpected_error_while_confirming_commits_nothing(
    client: TestClient[Any], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = register(
        client, {"channel": "sms", "phone": "+8613800138012", "places": [PEOPLES_SQUARE]}
    )
    sub_id, secret = out.json()["id"], out.json()["secret"]
    code = sms_code(settings, sub_id)

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug after the confirmation was flushed")

    monkeypatch.setattr(svc, "out", broken)
    r = client.post(
        f"{API}/subscriptions/{sub_id}/confirm",
        json={"code": code},
        headers={"X-Subscription-Secret": secret},
    )
    assert r.status_code == 500

    async def confirmed(session: Any) -> bool:
        return bool(await session.scalar(select(ResidentSubscription.confirmed)))

    assert run_db(settings, confirmed) is False
