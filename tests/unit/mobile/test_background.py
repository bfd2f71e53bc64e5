"""The background send loop without a server: a scripted `Sender` stand-in answers each round
(the real sender is driven against the app in tests/integration/test_phone_core.py), a manual
clock, no sleeps. Backoff grows, the server's Retry-After holds even against "send now", a
local write does not cut a backoff short, offline costs no attempt, pushes are deduplicated
and name the record to open, an upgrade-required answer stops the loop visibly."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import timedelta
from typing import Any

from mobile.core.background import (
    BackgroundSync,
    LinkState,
    ManualConnectivity,
    RecordRef,
)
from mobile.core.clock import ManualClock
from mobile.core.outbox import SendReport
from sync.client import UpgradeRequiredError


class ScriptedSender:
    """Answers rounds from a script: "ok", "fail", ("busy", seconds), "upgrade" or "bug"
    (an exception that is not the network's)."""

    def __init__(self, clock: ManualClock, script: list[Any]) -> None:
        self.clock = clock
        self.script = script
        self.at: list[float] = []
        self.start = clock()

    async def send_now(self) -> SendReport:
        self.at.append((self.clock() - self.start).total_seconds())
        step = self.script.pop(0) if self.script else "ok"
        if step == "ok":
            return SendReport()
        if step == "upgrade":
            raise UpgradeRequiredError(99, "update the app")
        if step == "bug":
            raise sqlite3.OperationalError("database or disk is full")
        if isinstance(step, tuple):
            return SendReport(error="sync: HTTP 503", retry_after_s=float(step[1]))
        return SendReport(error="sync: connect failed")


def _loop(clock: ManualClock, sender: ScriptedSender, **kw: Any) -> BackgroundSync:
    return BackgroundSync(
        sender,  # type: ignore[arg-type]
        now=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
        backoff_base_s=2.0,
        interval_s=300.0,
        **kw,
    )


def _run_until(loop: BackgroundSync, sender: ScriptedSender, rounds: int, during: Any = None):
    async def go() -> None:
        stop = asyncio.Event()

        def report(_r: SendReport) -> None:
            if during is not None:
                during(len(sender.at))
            if len(sender.at) >= rounds:
                stop.set()

        loop.on_report = report
        await asyncio.wait_for(loop.run(stop), timeout=5)

    asyncio.run(go())


def test_failures_back_off_exponentially_then_the_interval_resumes() -> None:
    clock = ManualClock()
    sender = ScriptedSender(clock, ["fail", "fail", "fail", "ok", "ok"])
    loop = _loop(clock, sender)
    _run_until(loop, sender, 5)
    gaps = [b - a for a, b in zip(sender.at, sender.at[1:], strict=False)]
    assert 1 <= gaps[0] <= 2 and 2 <= gaps[1] <= 4 and 4 <= gaps[2] <= 8  # equal jitter
    assert gaps[3] == 300  # after a success: the interval
    assert loop.status.state is LinkState.ONLINE and loop.status.failures == 0


def test_retry_after_holds_against_send_now_but_send_now_cuts_a_backoff() -> None:
    clock = ManualClock()
    sender = ScriptedSender(clock, [("busy", 120), "fail", "ok"])
    loop = _loop(clock, sender)
    statuses: list[str] = []

    def during(n: int) -> None:
        statuses.append(loop.status.text("en", clock()))
        loop.send_now()  # the user taps "send now" after every round

    _run_until(loop, sender, 3, during)
    assert sender.at[1] == 120  # the server's wait, not the user's
    assert sender.at[2] == 120  # "send now" skipped the exponential backoff after a failure
    assert statuses[0] == "Server busy: trying again in 120 s"
    assert loop.wakeups["send_now"] == 3


def test_a_local_write_waits_for_the_backoff_a_push_does_not() -> None:
    clock = ManualClock()
    sender = ScriptedSender(clock, ["fail", "fail", "ok"])
    loop = _loop(clock, sender, backoff_cap_s=64.0)
    loop.backoff_base_s = 64.0

    def during(n: int) -> None:
        if n == 1:
            loop.wake("write")
        if n == 2:
            loop.on_push({"event_id": "e1", "kind": "task.assigned", "task_id": "t-1"})

    _run_until(loop, sender, 3, during)
    assert sender.at[1] >= 32  # the write waited for the backoff
    assert sender.at[2] == sender.at[1]  # the push went at once


def test_offline_tries_nothing_and_the_network_coming_back_sends() -> None:
    clock = ManualClock()
    sender = ScriptedSender(clock, ["ok", "ok"])
    net = ManualConnectivity(online=False)
    loop = _loop(clock, sender, connectivity=net)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(loop.run(stop))
        for _ in range(20):
            await asyncio.sleep(0)
        assert sender.at == [] and loop.status.state is LinkState.OFFLINE
        net.is_online = True
        back = (clock() - sender.start).total_seconds()
        loop.network_changed(True)
        for _ in range(5):
            await asyncio.sleep(0)
        assert sender.at[0] == back  # at once, not at the next interval
        stop.set()
        await task

    asyncio.run(go())
    assert loop.status.state is LinkState.ONLINE and loop.wakeups["network"] == 1


def test_pushes_are_deduplicated_and_name_the_record() -> None:
    loop = _loop(ManualClock(), ScriptedSender(ManualClock(), []))
    data = {"event_id": "task:1:assigned", "kind": "task.assigned", "task_id": "t-1"}
    assert loop.on_push(data) == RecordRef("task", "t-1", "task.assigned")
    assert loop.on_push(data) is None  # the same event delivered twice
    assert loop.wakeups["push"] == 1
    tapped = BackgroundSync.open_from_notification({"hazard_id": "h-9", "kind": "hazard.overdue"})
    assert tapped == RecordRef("hazard", "h-9", "hazard.overdue")
    assert BackgroundSync.open_from_notification({"kind": "hello"}) is None


def test_upgrade_required_stops_the_loop_and_says_so() -> None:
    clock = ManualClock()
    sender = ScriptedSender(clock, ["ok", "upgrade", "ok"])
    loop = _loop(clock, sender)
    asyncio.run(asyncio.wait_for(loop.run(asyncio.Event()), timeout=5))
    assert len(sender.at) == 2
    assert loop.status.state is LinkState.UPGRADE_REQUIRED
    assert loop.status.text("en") == "Update the app to keep sending"
    assert loop.status.text() == "请更新应用以继续发送"
    assert clock() - sender.start == timedelta(seconds=300)


def test_a_round_that_raises_is_a_failed_round_and_the_loop_goes_on() -> None:
    clock = ManualClock()
    sender = ScriptedSender(clock, ["bug", "ok"])
    loop = _loop(clock, sender)
    started: list[int] = []
    loop.on_round = lambda: started.append(len(sender.at))
    _run_until(loop, sender, 2)
    assert 1 <= sender.at[1] <= 2  # backed off like any failed round, then went on
    assert started == [0, 1]
    assert loop.status.state is LinkState.ONLINE and loop.status.rounds == 2
