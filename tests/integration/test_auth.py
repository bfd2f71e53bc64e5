"""Sign-in for phones that stay offline for days: rotation, revocation, throttling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from server.app import create_app
from tests import factories as f
from tests.conftest import Sessions, make_settings

PASSWORD = "correct horse battery"


def _login(
    client: TestClient[Any], username: str, device: str = "phone-1", pw: str = PASSWORD
) -> Any:
    return client.post(
        "/api/v1/auth/login", json={"username": username, "password": pw, "device_id": device}
    )


def _new_user(client: TestClient[Any], auth: Sessions, role: str = "responder") -> str:
    body = f.user(role, org="ems" if role == "responder" else None)
    r = client.post("/api/v1/users", headers=auth("admin"), json=body)
    assert r.status_code == 201, r.text
    return str(body["username"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_contract_and_me(client: TestClient[Any], auth: Sessions) -> None:
    name = _new_user(client, auth)
    r = _login(client, name)
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in"}
    assert body["expires_in"] == 6 * 3600  # the test settings' (tests/conftest.py)
    me = client.get("/api/v1/auth/me", headers=_bearer(body["access_token"]))
    assert me.json()["username"] == name and me.json()["role"] == "responder"


def test_wrong_password_is_401_problem(client: TestClient[Any], auth: Sessions) -> None:
    name = _new_user(client, auth)
    r = _login(client, name, pw="nope")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "unauthenticated"
    assert _login(client, "no-such-user").status_code == 401


def test_refresh_rotates_and_reuse_ends_the_session(
    client: TestClient[Any], auth: Sessions
) -> None:
    name = _new_user(client, auth)
    first = _login(client, name).json()
    r = client.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": first["refresh_token"], "device_id": "phone-1"},
    )
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/api/v1/auth/me", headers=_bearer(second["access_token"])).status_code == 200
    r = client.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": second["refresh_token"], "device_id": "phone-1"},
    )
    assert r.status_code == 200, r.text
    third = r.json()

    # A token whose successor was already used comes back (a stolen copy): the session ends.
    # (A spent token whose successor is unused is a lost answer retried: tests/integration/
    # test_refresh_retry.py.)
    replay = client.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": first["refresh_token"], "device_id": "phone-1"},
    )
    assert replay.status_code == 401
    assert client.get("/api/v1/auth/me", headers=_bearer(third["access_token"])).status_code == 401
    again = client.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": third["refresh_token"], "device_id": "phone-1"},
    )
    assert again.status_code == 401


def test_refresh_token_is_bound_to_its_device(client: TestClient[Any], auth: Sessions) -> None:
    name = _new_user(client, auth)
    pair = _login(client, name, device="phone-A").json()
    r = client.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": pair["refresh_token"], "device_id": "phone-B"},
    )
    assert r.status_code == 401


def test_logout_revokes_access_and_refresh_of_that_device_only(
    client: TestClient[Any], auth: Sessions
) -> None:
    name = _new_user(client, auth)
    a = _login(client, name, device="phone-A").json()
    b = _login(client, name, device="phone-B").json()
    assert client.post("/api/v1/auth/logout", headers=_bearer(a["access_token"])).status_code == 204
    assert client.get("/api/v1/auth/me", headers=_bearer(a["access_token"])).status_code == 401
    refresh = client.post(
        "/api/v1/auth/refresh", json={"refresh_token": a["refresh_token"], "device_id": "phone-A"}
    )
    assert refresh.status_code == 401
    assert client.get("/api/v1/auth/me", headers=_bearer(b["access_token"])).status_code == 200


def test_disable_ends_every_session_and_push_registration(
    client: TestClient[Any], auth: Sessions
) -> None:
    name = _new_user(client, auth)
    pair = _login(client, name).json()
    h = _bearer(pair["access_token"])
    reg = client.post(
        "/api/v1/devices", headers=h, json={"device_id": "phone-1", "channel": "fcm", "token": "t1"}
    )
    assert reg.status_code == 200 and reg.json()["channel"] == "fcm"
    uid = client.get("/api/v1/auth/me", headers=h).json()["id"]
    assert client.post(f"/api/v1/users/{uid}/disable", headers=auth("admin")).status_code == 200
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401
    assert _login(client, name).status_code == 401
    assert (
        client.post(
            "/api/v1/auth/refresh",
            json={"refresh_token": pair["refresh_token"], "device_id": "phone-1"},
        ).status_code
        == 401
    )


def test_tampered_or_expired_tokens_are_refused(client: TestClient[Any], auth: Sessions) -> None:
    token = auth("fire1")["Authorization"].split()[1]
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[::-1]}"
    assert client.get("/api/v1/tasks", headers=_bearer(forged)).status_code == 401
    assert client.get("/api/v1/tasks", headers={"Authorization": "Basic abc"}).status_code == 401


@pytest.fixture
def throttled_client(database_url: str, tmp_path: Path) -> Iterator[TestClient[Any]]:
    settings = make_settings(
        database_url, tmp_path, login_max_failures=3, login_window_s=600, login_delay_s=60
    )
    with TestClient(app=create_app(settings)) as c:
        yield c


def test_repeated_failures_are_throttled_even_with_the_right_password(
    throttled_client: TestClient[Any], client: TestClient[Any], auth: Sessions
) -> None:
    name = _new_user(client, auth)
    for _ in range(3):
        assert _login(throttled_client, name, pw="wrong").status_code == 401
    blocked = _login(throttled_client, name)
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert blocked.json()["code"] == "throttled"
