"""A refresh whose answer was lost does not end the phone's session (issue 13).

Under load or on 2G the server can rotate a refresh token and commit while the phone never gets
the answer; the phone retries with the token it still holds. The successor is derived from the
spent token (`tokens.successor`), so the retry answers exactly what the lost answer carried, as
long as that successor is unused. A spent token whose successor was used is still a reuse and
ends the session; another device's token is still refused. Two refreshes of one token at the
same moment both get the successor (no unique-constraint crash). All on both databases.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from mobile.core.clock import ManualClock, utcnow
from mobile.core.secret_store import MemorySecretStore
from mobile.core.session import Session, Tokens
from schemas.auth import RefreshRequest
from schemas.sync import SCHEMA_VERSION
from server.auth import tokens
from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.domain.auth import services as svc
from tests.conftest import DEMO_PASSWORD, Sessions
from tests.integration.dispatch_helpers import in_db
from tests.integration.test_auth import _bearer
from tests.integration.test_phone_outbox_property import LossySwitch

REFRESH = "/api/v1/auth/refresh"


def _refresh(client: TestClient[Any], token: str, device: str = "phone-1") -> httpx.Response:
    return client.post(REFRESH, json={"refresh_token": token, "device_id": device})


def _session(database_url: str, settings: Settings, user_id: str, device: str) -> dict[str, str]:
    """A new session, as login opens it (`issue_refresh`, `encode_access`), without argon2."""

    async def issue(session: AsyncSession) -> tuple[str, uuid.UUID]:
        return await tokens.issue_refresh(
            session, uuid.UUID(user_id), device, settings.refresh_ttl_s
        )

    refresh, family = in_db(database_url, issue)
    access = tokens.encode_access(
        settings.secret_key, uuid.UUID(user_id), family, device, settings.access_ttl_s
    )
    return {"refresh_token": refresh, "access_token": access}


@pytest.fixture
def signed_in(
    client: TestClient[Any], auth: Sessions, database_url: str, settings: Settings
) -> Callable[[str], dict[str, str]]:
    """Open a new session of inspector1 on a device: its first token pair."""
    me = client.get("/api/v1/auth/me", headers=auth("inspector1")).json()
    return lambda device: _session(database_url, settings, me["id"], device)


def _pull(client: TestClient[Any], access: str) -> int:
    body = json.dumps({"v": SCHEMA_VERSION, "d": "phone-1"})
    headers = {**_bearer(access), "Content-Type": "application/json"}
    return client.post("/api/v1/sync/pull", content=body, headers=headers).status_code


def test_a_lost_answer_retried_gets_the_same_successor_and_the_session_stays(
    client: TestClient[Any], signed_in: Callable[[str], dict[str, str]]
) -> None:
    first = signed_in("phone-1")
    lost = _refresh(client, first["refresh_token"]).json()  # rotated, committed, never seen
    retry = _refresh(client, first["refresh_token"])
    assert retry.status_code == 200, retry.text
    again = retry.json()
    assert again["refresh_token"] == lost["refresh_token"] != first["refresh_token"]
    assert _pull(client, again["access_token"]) == 200
    # The session goes on from the successor: rotating it works, and then the first token's
    # successor is used, so the first token coming back once more is a reuse.
    third = _refresh(client, again["refresh_token"])
    assert third.status_code == 200, third.text
    assert _pull(client, third.json()["access_token"]) == 200
    assert _refresh(client, first["refresh_token"]).status_code == 401
    assert _pull(client, third.json()["access_token"]) == 401


def test_another_device_cannot_replay_a_spent_token(
    client: TestClient[Any], signed_in: Callable[[str], dict[str, str]]
) -> None:
    first = signed_in("phone-A")
    assert _refresh(client, first["refresh_token"], "phone-A").status_code == 200
    assert _refresh(client, first["refresh_token"], "phone-B").status_code == 401
    assert _refresh(client, first["refresh_token"], "phone-A").status_code == 200


def _phone_due_to_refresh(
    client: TestClient[Any], net: httpx.BaseTransport, tmp_path: Path
) -> tuple[Session, Tokens]:
    """A phone signed in through `net`, its clock 30 s before its access token expires (within
    the refresh margin): its next `access_token()` refreshes. Returns it and its tokens."""
    clock = ManualClock(utcnow())
    phone = Session(tmp_path, MemorySecretStore(), http=httpx.Client(transport=net), now=clock)
    phone.login(str(client.base_url), "inspector1", DEMO_PASSWORD)
    old = phone.tokens
    assert old is not None
    clock.advance((old.expires_at - clock()).total_seconds() - 30)
    return phone, old


def test_a_phone_whose_refresh_answer_was_lost_retries_with_the_old_token(
    client: TestClient[Any], settings: Settings, tmp_path: Path
) -> None:
    """The phone core keeps the old pair until an answer arrives, so its retry carries the
    spent token, which now answers the successor instead of ending the session."""
    net = LossySwitch(client)
    phone, old = _phone_due_to_refresh(client, net, tmp_path)
    net.lose_after = 0  # the server rotates the token; the phone gets a read error
    assert phone.access_token() == old.access_token
    assert phone.tokens == old and not phone.needs_login
    fresh = phone.access_token()
    sent = [b["refresh_token"] for b in net.bodies["/api/v1/auth/refresh"]]
    assert sent == [old.refresh_token, old.refresh_token]
    kept = phone.tokens
    assert not phone.needs_login and phone.refreshes == 1
    assert kept is not None
    assert kept.refresh_token == tokens.successor(settings.secret_key, old.refresh_token)
    assert _pull(client, fresh) == 200


class Gateway(LossySwitch):
    """A proxy in front of the server answering `status` to the next refresh without passing
    it on (a stand-in for a gateway: the only part here that is not the real server)."""

    def __init__(self, client: TestClient[Any]) -> None:
        super().__init__(client)
        self.refuse: int | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse is not None and request.url.path == REFRESH:
            status, self.refuse = self.refuse, None
            return httpx.Response(status, request=request)
        return super().handle_request(request)


@pytest.mark.parametrize("status", [408, 429, 401])
def test_a_gateways_timeout_or_rate_limit_does_not_sign_the_phone_out(
    status: int, client: TestClient[Any], tmp_path: Path
) -> None:
    net = Gateway(client)
    phone, old = _phone_due_to_refresh(client, net, tmp_path)
    net.refuse = status
    assert phone.access_token() == old.access_token  # refused by the gateway: the old pair
    if status == 401:  # the server's own refusal still means signing in again
        assert phone.needs_login
        return
    assert not phone.needs_login and phone.tokens == old
    fresh = phone.access_token()  # the next try reaches the server
    kept = phone.tokens
    assert phone.refreshes == 1 and kept is not None and kept.refresh_token != old.refresh_token
    assert _pull(client, fresh) == 200


def test_two_refreshes_of_one_token_at_once_both_get_the_successor(
    client: TestClient[Any],
    signed_in: Callable[[str], dict[str, str]],
    database_url: str,
    settings: Settings,
) -> None:
    """The second refresh starts while the first holds its transaction open (not committed):
    it waits (PostgreSQL: the row lock; SQLite: BEGIN IMMEDIATE), then answers the successor."""
    first = signed_in("phone-1")
    data = RefreshRequest(refresh_token=first["refresh_token"], device_id="phone-1")

    async def race() -> tuple[str, str]:
        engines = [make_engine(database_url) for _ in range(2)]
        makers = [make_sessionmaker(e) for e in engines]

        async def second() -> str:
            async with makers[1]() as session:
                pair = await svc.refresh(session, settings, data)
                await session.commit()
                return pair.refresh_token

        try:
            async with makers[0]() as session:
                pair = await svc.refresh(session, settings, data)
                waiting = asyncio.create_task(second())
                await asyncio.sleep(0.3)
                assert not waiting.done()  # it waits for the first one's transaction
                await session.commit()
            return pair.refresh_token, await waiting
        finally:
            for engine in engines:
                await engine.dispose()

    one, two = asyncio.run(race())
    assert one == two != first["refresh_token"]
    assert _pull(client, _refresh(client, one).json()["access_token"]) == 200


def test_concurrent_http_refreshes_of_one_token_all_answer_200(
    client: TestClient[Any], signed_in: Callable[[str], dict[str, str]]
) -> None:
    first = signed_in("phone-1")
    start = threading.Barrier(3)
    answers: list[httpx.Response] = []

    def go() -> None:
        start.wait()
        answers.append(_refresh(client, first["refresh_token"]))

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert len({r.json()["refresh_token"] for r in answers}) == 1


@hypothesis_settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(moves=st.lists(st.integers(0, 3), min_size=1, max_size=6))
def test_refresh_and_replay_sequences_follow_the_rule(
    moves: list[int], client: TestClient[Any], signed_in: Callable[[str], dict[str, str]]
) -> None:
    """A move `k` presents the token `k` rotations behind the newest one (0: the newest).
    The newest and the one just before it answer the newest's successor / the newest itself;
    anything older, or anything after that, is a reuse: 401 and the session is over."""
    first = signed_in("phone-1")
    chain = [first["refresh_token"]]
    access = first["access_token"]
    live = True
    for move in moves:
        back = min(move, len(chain) - 1)
        r = _refresh(client, chain[-1 - back])
        if live and back <= 1:
            assert r.status_code == 200, (moves, r.text)
            access = r.json()["access_token"]
            if back == 0:
                chain.append(r.json()["refresh_token"])
            else:
                assert r.json()["refresh_token"] == chain[-1]
        else:
            assert r.status_code == 401, (moves, r.text)
            live = False
    assert (_pull(client, access) == 200) is live
