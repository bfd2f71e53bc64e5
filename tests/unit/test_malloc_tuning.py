"""A serving process gives back the big buffers its threads free (`server.serving.tune_malloc`;
issue 13's soak: a server ingesting photos grew to 1.27 GB while Python's objects stayed small).

The mechanism, reproduced in a fresh interpreter per half (allocator settings are process-wide
and cannot be undone): one big block freed raises glibc's mmap threshold, after which threads
allocating blocks of that size (a decoded photo, a pull answer) take them from their own arenas
and keep them when freed. Eight threads freeing 8 MiB each then leave 64 MiB behind; tuned,
nothing is left.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import sys, threading

import psutil

from server.serving import tune_malloc

if sys.argv[1] == "tuned":
    assert tune_malloc()
me = psutil.Process()
size = 8 << 20
block = b"x" * size
del block  # untuned, glibc now serves blocks this size from the heaps of its arenas
start = me.memory_info().rss
together = threading.Barrier(8)  # eight threads at once: eight arenas


def work():
    block = b"y" * size
    together.wait()
    del block


threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print((me.memory_info().rss - start) / 2**20)
"""


def _kept_mb(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_big_blocks_freed_by_many_threads_go_back_to_the_system() -> None:
    tuned, plain = _kept_mb("tuned"), _kept_mb("plain")
    assert tuned < 8, (tuned, plain)
    # The probe itself still shows the hoarding without the tuning (else it proves nothing).
    assert plain > 32, (tuned, plain)
