"""The residents' page in a real browser (Debian's chromium, driven by Playwright's Python
package; no browser download): it shows a published warning on its map, follows the live stream,
switches to English, and its service worker turns a pushed warning into a notification that opens
the warning. The push is handed to the service worker through the DevTools protocol
(`ServiceWorker.deliverPushMessage`): `pushManager.subscribe()` itself needs Google's push
service, which this machine (and mainland China) cannot reach."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from push.webpush import webpush_payload
from server.app import create_app
from server.config import Settings
from server.domain.residents.audience import warning_message
from server.models import Alert
from tests import factories as f
from tests.integration.dispatch_helpers import in_db
from tests.servers import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOME = (121.4855, 31.2375)

pytestmark = pytest.mark.e2e


@pytest.fixture
def base(settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(settings)) as url:
        yield url


def publish(base: str, auth: Any, color: str, headline: str) -> dict[str, Any]:
    """Drafted by the dispatcher, published by the chief (a second person for orange/red)."""
    body = f.alert(
        area=f.square(*HOME, d=0.004), color=color, headline=headline,
        instruction="请立即转移到避难场所",
        expires=(datetime.now(UTC) + timedelta(hours=3)).isoformat(),
    )  # fmt: skip
    r = httpx.post(f"{base}/api/v1/alerts", headers=auth("dispatcher"), json=body, timeout=30)
    assert r.status_code == 201, r.text
    done = httpx.post(
        f"{base}/api/v1/alerts/{r.json()['id']}/publish", headers=auth("chief"), timeout=30
    )
    assert done.status_code == 200, done.text
    return done.json()


def notifications(page: Any, at_least: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    """The service worker's notifications, polled until there are `at_least` (a predicate that
    returns a promise cannot go to `wait_for_function`: a promise itself counts as true)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown: list[dict[str, Any]] = page.evaluate(
            "navigator.serviceWorker.ready.then(r => r.getNotifications())"
            ".then(ns => ns.map(n => ({title: n.title, body: n.body, data: n.data})))"
        )
        if len(shown) >= at_least or time.monotonic() > deadline:
            return shown
        page.wait_for_timeout(100)


def test_page_shows_the_warning_streams_updates_and_a_push_opens_it(
    base: str, auth: Any, settings: Settings
) -> None:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # CI installs it (.ci/run): a missing browser is a failure
        pytest.fail("chromium is not installed (.ci/run installs it)")
    red = publish(base, auth, "red", "黄浦区暴雨红色预警")

    async def alert_row(session: Any) -> Alert:
        return (
            await session.execute(select(Alert).where(Alert.id == uuid.UUID(red["id"])))
        ).scalar_one()

    row = in_db(settings.database_url, alert_row)
    # (Read before the browser starts: Playwright's sync API runs an event loop in this thread.)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            context = browser.new_context(
                viewport={"width": 390, "height": 844}, locale="zh-CN",  # a phone screen
                geolocation={"longitude": HOME[0], "latitude": HOME[1]},
            )  # fmt: skip
            context.grant_permissions(["notifications", "geolocation"], origin=base)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            registrations: list[dict[str, Any]] = []
            cdp.on(
                "ServiceWorker.workerRegistrationUpdated",
                lambda e: registrations.extend(e["registrations"]),
            )
            cdp.send("ServiceWorker.enable")

            page.goto(f"{base}/residents/")
            page.wait_for_selector("body[data-ready='1']")
            page.click("#locate")  # browser geolocation
            card = page.locator(f"#alert-{red['id']}")
            card.wait_for()
            assert "红色预警" in card.inner_text() and "请立即转移" in card.inner_text()
            assert "red" in (card.get_attribute("class") or "")
            # its area on the map (the demo's own current warning may be drawn beside it)
            assert page.locator(f"#map path.warning[data-alert='{red['id']}']").count() == 1
            assert page.locator("#map path.boundary").count() >= 3  # district boundaries
            page.locator("#shelters li").first.wait_for()  # nearest shelters

            # The live stream: a second warning appears without reloading.
            yellow = publish(base, auth, "yellow", "大风黄色预警")
            page.locator(f"#alert-{yellow['id']}").wait_for(timeout=15_000)
            assert page.locator("#live").inner_text().startswith("●")

            page.click("#lang")
            page.wait_for_function("document.documentElement.lang === 'en'")
            assert "Red warning" in page.locator(f"#alert-{red['id']}").inner_text()

            # A push to the service worker becomes a notification that opens the warning.
            page.evaluate("navigator.serviceWorker.ready.then(() => true)")
            deadline = time.monotonic() + 10
            scope = f"{base}/residents/"
            while (
                not any(r["scopeURL"] == scope for r in registrations)
                and time.monotonic() < deadline
            ):
                page.wait_for_timeout(100)
            registration_id = next(
                r["registrationId"] for r in registrations if r["scopeURL"] == scope
            )

            message = warning_message(row, "zh_CN", now=datetime.now(UTC))
            payload = webpush_payload(message).decode()
            for _ in range(2):  # the second delivery is a resend: the worker drops it
                cdp.send(
                    "ServiceWorker.deliverPushMessage",
                    {"origin": base, "registrationId": registration_id, "data": payload},
                )
            notifications(page, at_least=1)
            page.wait_for_timeout(500)  # time for the resend to show a second one, were it to
            shown = notifications(page, at_least=0)
            assert len(shown) == 1
            assert "红色预警" in shown[0]["title"] and "黄浦区暴雨红色预警" in shown[0]["body"]
            seen = page.evaluate(
                "caches.open('liandong-seen-events').then(c => c.keys()).then(k => k.length)"
            )
            assert seen == 1
            page.goto(base + shown[0]["data"]["url"])  # what the notification's click opens
            page.locator(f"#alert-{red['id']}.highlight").wait_for()
        finally:
            browser.close()
    assert json.loads(payload)["data"]["url"] == f"/residents/?alert={red['chain_id']}"
