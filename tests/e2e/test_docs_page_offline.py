"""The API docs page works on a closed network: a real browser renders /schema with every
request to another host refused, and shows no "Ask AI" (Scalar's cloud agent).

Uses the system Chromium (`/usr/bin/chromium`, installed by `.ci/run`) through Playwright.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, sync_playwright

from server.app import create_app
from tests.conftest import fresh_database, make_settings
from tests.servers import serve_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("docs")
    app = create_app(make_settings(fresh_database("sqlite", tmp), tmp))
    with serve_in_thread(app) as base:
        yield base


def test_docs_page_renders_offline_without_ask_ai(base_url: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (.ci/run installs it)")
    ours = urlsplit(base_url).netloc
    outside: list[str] = []

    def closed_network(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == ours:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)  # a busy CI machine renders slowly
            page.route("**/*", closed_network)
            page.goto(f"{base_url}/schema", wait_until="networkidle")
            # The document rendered: an operation's summary from /schema/openapi.json shows.
            page.get_by_text("Liandong API").first.wait_for()
            page.get_by_text("/api/v1/sync/push").first.wait_for()
            text = page.inner_text("body")
        finally:
            browser.close()
    assert outside == []
    assert "Ask AI" not in text
