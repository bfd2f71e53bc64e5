"""The residents' page routes under load: streams at one place share one answer per change of
the published warnings (drafts change nothing), `/areas` is built once per change of the areas
and revalidated by its ETag, and every public route counts against the public rate limit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from litestar.testing import TestClient

from server.config import Settings
from server.db import make_engine, make_sessionmaker
from server.demo import did
from server.domain.alerts.public import RateLimiter
from server.domain.residents.public import WarningFeed
from tests import factories as f

PUBLIC = "/api/v1/public"
HOME = (121.4855, 31.2375)


def test_streams_at_one_place_share_one_query_and_drafts_do_not_wake_them(
    client: TestClient[Any], auth: Any, settings: Settings
) -> None:
    def post(path: str, who: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = client.post(path, headers=auth(who), json=body)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    async def main() -> None:
        engine = make_engine(settings.database_url)
        feed = WarningFeed(make_sessionmaker(engine))
        try:
            # 30 streams in one village (points within the same 0.001°) and one just apart.
            near = [(121.4841 + i * 1e-5, 31.2371 - i * 1e-5) for i in range(30)]
            answers = await asyncio.gather(*(feed.answer(p) for p in near))
            assert feed.queries == 1 and len(set(answers)) == 1
            await feed.answer((HOME[0] + 0.01, HOME[1]))
            assert feed.queries == 2

            before = await feed.version()
            draft = await asyncio.to_thread(
                post, "/api/v1/alerts", "dispatcher", f.alert(area=f.square(*HOME), color="blue")
            )
            assert await feed._version_now() == before  # a draft wakes no stream
            await asyncio.to_thread(post, f"/api/v1/alerts/{draft['id']}/publish", "chief")
            assert await feed._version_now() != before
            feed.poke()  # what the app does when this process published
            again = await feed.answer(HOME)
            assert feed.queries == 3 and draft["id"] in again.decode()
        finally:
            await feed.aclose()
            await engine.dispose()

    asyncio.run(main())


def test_areas_are_built_once_per_change_and_revalidated_by_etag(
    client: TestClient[Any], auth: Any
) -> None:
    first = client.get(f"{PUBLIC}/areas")
    assert first.status_code == 200 and first.headers["content-type"].startswith(
        "application/geo+json"
    )
    tag = first.headers["etag"]
    assert first.json()["type"] == "FeatureCollection" and first.json()["features"]
    same = client.get(f"{PUBLIC}/areas", headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.content == b""
    cache = client.app.state.areas_cache
    builds = cache.builds
    assert client.get(f"{PUBLIC}/areas").content == first.content and cache.builds == builds

    area = {
        "id": str(uuid.uuid4()), "name": "测试社区", "code": f"T{uuid.uuid4().hex[:8]}",
        "level": "community", "parent_id": str(did("area:guizhoulu")),
        "boundary": f.square(121.50, 31.20, d=0.001),
    }  # fmt: skip
    r = client.post("/api/v1/areas", headers=auth("admin"), json=area)
    assert r.status_code == 201, r.text
    changed = client.get(f"{PUBLIC}/areas", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert area["id"] in {feature["id"] for feature in changed.json()["features"]}
    assert cache.builds == builds + 1


@pytest.mark.parametrize(
    "path",
    ["/alerts/stream", "/areas", "/shelters?lon=121.4855&lat=31.2375", "/texts/en"],
)
def test_the_pages_routes_count_against_the_public_rate_limit(
    client: TestClient[Any], path: str
) -> None:
    state = client.app.state
    saved = state.get("public_limiter")
    state.public_limiter = limiter = RateLimiter(1)
    try:
        limiter.take("testclient")  # this client's one request a minute is spent
        r = client.get(f"{PUBLIC}{path}")
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
    finally:
        state.public_limiter = saved
