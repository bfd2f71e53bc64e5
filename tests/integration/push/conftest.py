"""Loopback peers and a firebase-admin app that can only reach them."""

from __future__ import annotations

import random
from collections.abc import Iterator

import firebase_admin
import pytest

from push.fcm import FcmSender, firebase_app
from tests.clocks import ManualClock
from tests.peers.fcm_standin import FcmStandIn
from tests.peers.webpush_receiver import WebPushReceiver

PROJECT = "liandong-test"


@pytest.fixture(scope="session")
def fcm_standin() -> Iterator[FcmStandIn]:
    with FcmStandIn() as standin:
        yield standin


@pytest.fixture
def fcm(fcm_standin: FcmStandIn) -> FcmStandIn:
    fcm_standin.reset()
    return fcm_standin


@pytest.fixture(scope="session")
def fcm_sender(fcm_standin: FcmStandIn) -> Iterator[FcmSender]:
    # Anonymous credentials: no OAuth token fetch, no Authorization header, no Google.
    app = firebase_app(PROJECT, name=f"push-tests-{random.getrandbits(32)}", http_timeout=5)
    sender = FcmSender(app, endpoint=fcm_standin.base_url, max_concurrency=16)
    assert sender.send_url.startswith("http://127.0.0.1:")
    yield sender
    firebase_admin.delete_app(app)


@pytest.fixture
def webpush_receiver() -> Iterator[WebPushReceiver]:
    with WebPushReceiver() as receiver:
        yield receiver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
