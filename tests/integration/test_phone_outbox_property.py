"""Property: under random kills and drops, no acknowledged or queued item of the phone is ever
lost or applied twice (hypothesis, against the real app on both databases).

A program is a random list of moves on one inspector's phone: report a hazard with 0-2 photos,
queue a position fix, send a round while the link drops after k requests, send a round whose
k-th answer is lost after the server acted on it, send a round killed at the k-th upload step,
restart the app (a new `PhoneCore` on the same files). After every move each item written so
far is still visible in the outbox (queued, being sent, sent or refused, never gone). At the end
the link is good and rounds run until the outbox is empty: every hazard is on the server once
with its one report step, every photo stored once with its bytes, nothing refused.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from mobile.core.outbox import ItemState
from mobile.core.phone import PhoneCore
from mobile.core.photos import PhotoState
from mobile.core.secret_store import MemorySecretStore
from tests.conftest import DEMO_PASSWORD, Sessions
from tests.integration.test_phone_core import Switch, _core, _jpeg, _ok

MOVES = st.one_of(
    st.tuples(st.just("hazard"), st.integers(0, 2)),
    st.tuples(st.just("fix"), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 6)),
    st.tuples(st.just("lose"), st.integers(0, 6)),
    st.tuples(st.just("kill"), st.integers(1, 4)),
    st.tuples(st.just("restart"), st.just(0)),
)


class LossySwitch(Switch):
    """`Switch` that can also lose an answer: the `lose_after`-th request reaches the app,
    which acts on it, and the phone gets a read error instead of the answer."""

    def __init__(self, client: TestClient[Any]) -> None:
        super().__init__(client)
        self.lose_after: int | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if self.lose_after is not None:
            if self.lose_after <= 0:
                self.lose_after = None
                raise httpx.ReadError("answer lost", request=request)
            self.lose_after -= 1
        return response


def _round(core: PhoneCore) -> Any:
    return asyncio.run(core.send_now())


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(program=st.lists(MOVES, min_size=3, max_size=7))
def test_no_item_is_lost_or_applied_twice_under_kills_and_drops(
    program: list[tuple[str, int]],
    client: TestClient[Any],
    auth: Sessions,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("phone")
    net = LossySwitch(client)
    secrets = MemorySecretStore()
    core = _core(tmp, net, secrets=secrets)
    core.sign_in(str(client.base_url), "inspector1", DEMO_PASSWORD)
    hazards: dict[uuid.UUID, list[str]] = {}  # hazard -> its photos' hashes
    written: set[uuid.UUID] = set()

    def restart() -> PhoneCore:
        core.close()
        fresh = _core(tmp, net, secrets=secrets)
        fresh.open()
        return fresh

    for n, (move, k) in enumerate(program):
        if move == "hazard":
            pics = [core.add_photo(_jpeg(tmp, f"m{n}p{j}")) for j in range(k)]
            refs = [p for p in pics if p is not None]
            hid = core.actions.report_hazard(
                category="fire", severity="low", description=f"property {n}", photos=refs
            )
            hazards[hid] = [r.sha256 for r in refs]
            written.add(hid)
        elif move == "fix":
            fid = core.actions.report_position()
            assert fid is not None
            written.add(fid)
        elif move == "drop":
            net.fail_after = k
            _round(core)
            net.online, net.fail_after = True, None
        elif move == "lose":
            net.lose_after = k
            _round(core)
            net.lose_after = None
        elif move == "kill":
            steps = {"n": 0}

            def kill(step: str, at: int = k, steps: dict[str, int] = steps) -> None:
                steps["n"] += 1
                if steps["n"] == at:
                    raise KeyboardInterrupt("app killed")

            core.uploader.fault = kill
            try:
                _round(core)
            except KeyboardInterrupt:
                core = restart()
            core.uploader.fault = None
        else:
            core = restart()
        # Nothing written is ever gone from the outbox (queued, in flight, sent or refused).
        listed = {i.record_id for i in core.outbox.items()}
        assert written <= listed, (move, written - listed)

    for _ in range(4):  # a good link: everything goes out
        if _round(core).ok and core.store.pending_count() == 0:
            break
    items = core.outbox.items()
    assert {i.state for i in items} <= {ItemState.SENT}, [
        (i.entity, i.state, i.rule) for i in items
    ]
    assert written <= {i.record_id for i in items}
    assert {p.state for p in core.photos.all()} <= {PhotoState.STORED}
    d = auth("dispatcher")
    for hid, shas in hazards.items():
        row = _ok(client.get(f"/api/v1/hazards/{hid}", headers=d))
        assert sorted(p["status"] for p in row["photos"]) == ["stored"] * len(shas)
        timeline = _ok(client.get(f"/api/v1/hazards/{hid}/timeline", headers=d))
        assert [e["to_status"] for e in timeline] == ["reported"]  # applied once
        for sha in shas:
            media = _ok(client.get(f"/api/v1/media/{sha}", headers=auth("inspector1")))
            tracked = core.photos.get(sha)
            assert tracked is not None and media["id"] == tracked.media_id
            assert media["status"] == "stored" and media["size"] == tracked.size
    core.close()
