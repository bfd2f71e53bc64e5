"""Access tokens: a verified token is kept per process (`server.auth.tokens._verified`), but
its expiry is checked at every use and nothing that failed a check is kept."""

from __future__ import annotations

import time
import uuid

import pytest

from server.auth import tokens
from server.errors import Unauthenticated

SECRET = "access-token-test-key-0123456789abcdef0123456789"
OTHER = "another-servers-key-0123456789abcdef0123456789ab"


def _token(ttl_s: int = 60, secret: str = SECRET) -> tuple[str, uuid.UUID, uuid.UUID]:
    user, session = uuid.uuid4(), uuid.uuid4()
    return tokens.encode_access(secret, user, session, "phone-1", ttl_s), user, session


def test_a_valid_token_gives_its_claims_every_time() -> None:
    token, user, session = _token()
    for _ in range(3):
        claims = tokens.decode_access(SECRET, token)
        assert (claims.user_id, claims.session_id, claims.device_id) == (user, session, "phone-1")


def test_a_kept_token_stops_working_when_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token, _user, _session = _token(ttl_s=30)
    tokens.decode_access(SECRET, token)  # verified and kept
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthenticated):
        tokens.decode_access(SECRET, token)


def test_a_token_of_another_key_or_tampered_is_refused_and_not_kept() -> None:
    token, _user, _session = _token(secret=OTHER)
    tokens.decode_access(OTHER, token)  # kept under the other key only
    with pytest.raises(Unauthenticated):
        tokens.decode_access(SECRET, token)
    mine, _user, _session = _token()
    head, body, sig = mine.split(".")
    tampered = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    before = tokens._verified.cache_info().currsize
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            tokens.decode_access(SECRET, tampered)
    assert tokens._verified.cache_info().currsize == before


def test_an_expired_token_is_refused_on_first_sight() -> None:
    token, _user, _session = _token(ttl_s=-1)
    with pytest.raises(Unauthenticated):
        tokens.decode_access(SECRET, token)
