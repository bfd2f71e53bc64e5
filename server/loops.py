"""The event loop `liandong serve` and `liandong worker` run on: uvloop, or asyncio's own.

uvloop (libuv, Cython) runs the same asyncio programs with less CPU per I/O callback; the push
fan-out's worker spends a good part of each message in the loop and its TLS transport
(docs/push.md). The choice is explicit (`LIANDONG_EVENT_LOOP`, `--loop`): uvicorn's own
`loop="auto"` would take uvloop silently whenever it is installed, and an operator who meets a
uvloop problem must be able to fall back to asyncio without reinstalling anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

EVENT_LOOPS = ("uvloop", "asyncio")
"""The loops a server or worker process can run on; the first is the default."""

DEFAULT_EVENT_LOOP = EVENT_LOOPS[0]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
"""What makes a new event loop (asyncio.Runner's and anyio.run's `loop_factory`)."""


class EventLoopUnavailable(RuntimeError):
    """The configured event loop cannot run here (uvloop is not installed on this platform)."""


def loop_factory(name: str) -> LoopFactory:
    """A factory of new event loops of kind `name` (one of `EVENT_LOOPS`).

    `asyncio` is the standard library's selector loop, whatever event loop policy is set (as
    uvicorn's `loop="asyncio"` picks it). Raises `EventLoopUnavailable` for uvloop where it is
    not installed (it has no Windows build) and `ValueError` for an unknown name.
    """
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            raise EventLoopUnavailable(
                "uvloop is not installed here; set LIANDONG_EVENT_LOOP=asyncio (or --loop asyncio)"
            ) from exc
        return uvloop.new_event_loop
    raise ValueError(f"unknown event loop {name!r}: one of {', '.join(EVENT_LOOPS)}")


def running_loop_name() -> str:
    """The class of the running event loop, e.g. `uvloop.Loop` (for a process's start line)."""
    cls = type(asyncio.get_running_loop())
    return f"{cls.__module__}.{cls.__qualname__}"
