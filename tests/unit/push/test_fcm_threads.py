"""`push.fcm._SendThreads`: the sender threads behind `FcmSender.send`."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from push.base import Delivered, DeliveryResult, PushMessage
from push.fcm import _SendThreads

MESSAGE = PushMessage(data={"k": "v"})


class _Recorder:
    """A blocking `send` that records how many calls overlap."""

    def __init__(self, pause: float = 0.01) -> None:
        self.pause = pause
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.done: list[str] = []

    def __call__(self, address: str, message: PushMessage) -> DeliveryResult:
        if address == "boom":
            raise ValueError("bad address")
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.pause)
        with self.lock:
            self.running -= 1
            self.done.append(address)
        return Delivered(provider_id=f"id-{address}")


def test_each_caller_gets_its_own_result_at_most_size_at_once() -> None:
    send = _Recorder()
    threads = _SendThreads(3, send)
    results: dict[str, DeliveryResult] = {}

    async def one(address: str) -> None:
        results[address] = await threads.run(address, MESSAGE)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(one, f"a{n}")

    for _ in range(2):  # a second event loop reuses the same threads
        results.clear()
        anyio.run(main)
        assert results == {f"a{n}": Delivered(provider_id=f"id-a{n}") for n in range(12)}
    assert send.most == 3


def test_a_burst_gets_a_thread_per_send_up_to_size() -> None:
    """Eight sends that can only finish together (a barrier of eight): the pool must run all
    eight at once, even though a thread from an earlier send is idle when the burst comes."""
    barrier = threading.Barrier(8, timeout=5)

    def together(address: str, message: PushMessage) -> DeliveryResult:
        if address != "warm-up":
            barrier.wait()  # BrokenBarrierError after 5 s if fewer than 8 run at once
        return Delivered(provider_id=address)

    threads = _SendThreads(8, together)

    async def main() -> list[DeliveryResult]:
        results: list[DeliveryResult] = []

        async def one(n: int) -> None:
            results.append(await threads.run(f"b{n}", MESSAGE))

        await threads.run("warm-up", MESSAGE)  # leaves one idle thread behind
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(one, n)
        return results

    assert len(anyio.run(main)) == 8
    assert len(anyio.run(main)) == 8  # again, with eight idle threads already there


def test_an_exception_reaches_the_caller_and_the_thread_survives() -> None:
    threads = _SendThreads(1, _Recorder(pause=0))

    async def main() -> DeliveryResult:
        with pytest.raises(ValueError, match="bad address"):
            await threads.run("boom", MESSAGE)
        return await threads.run("ok", MESSAGE)

    assert anyio.run(main) == Delivered(provider_id="id-ok")


def test_a_cancelled_caller_still_waits_for_its_send_to_finish() -> None:
    send = _Recorder(pause=0.2)
    threads = _SendThreads(1, send)

    async def main() -> None:
        with anyio.move_on_after(0.02):
            await threads.run("slow", MESSAGE)
        # The cancellation came in while the send ran; it was held until the send finished.
        assert send.done == ["slow"]

    anyio.run(main)


def test_idle_threads_end() -> None:
    threads = _SendThreads(4, _Recorder(pause=0), idle_seconds=0.05)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(threads.run, f"a{n}", MESSAGE)

    anyio.run(main)
    deadline = time.monotonic() + 5
    while threads._alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads._alive == 0
    assert anyio.run(threads.run, "again", MESSAGE) == Delivered(provider_id="id-again")
