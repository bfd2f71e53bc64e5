"""The field app's figures (issue 14), under Xvfb against a real `liandong serve`:

- `app_cold_start_s`: process start to the first interactive screen (home, its list loaded,
  no core call pending), signed in, the phone's store holding 10,000 hazards; the baseline is
  the same start with an empty store.
- `ui_max_frame_gap_ms_during_sync`: the longest time between two drawn frames while 10,000
  records are pulled and the start list is shown (the sync indicator animates, so every frame
  is drawn); the baseline is the same list shown with no sync running.
- `app_rss_mb`: the app's resident memory after that sync.
- `next_page_s`: after it, the list scrolled to its end once until the next page shows.

The hazards are reported through sync pushes (`content.many_hazards`); the app's bytecode is
cached as an installed app's is (`harness.app_env`). `BENCH_APP_HAZARDS` (default 10000) sets
the size.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.app import content
from tests.app.harness import PASSWORD, demo_server, run_app, xvfb


def run() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_APP_HAZARDS", "10000"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        root = Path(tmp)
        with demo_server(root / "server") as base, xvfb() as display:
            login = ("--user", "inspector1", "--password", PASSWORD)
            # baselines: an empty store (the hazards come after)
            empty = root / "empty-phone"
            run_app(display, "bench_pull", server=base, data_dir=empty, args=login)
            cold_empty = [
                run_app(display, "bench_cold", server=base, data_dir=empty)["cold_start_s"]
                for _ in range(3)
            ]
            idle_gap = run_app(display, "bench_idle", server=base, data_dir=empty)
            t0 = time.perf_counter()
            content.many_hazards(base, n)
            made_s = time.perf_counter() - t0
            phone = root / "phone"
            pull = run_app(
                display, "bench_pull", server=base, data_dir=phone, args=login, timeout=900
            )
            cold = [
                run_app(display, "bench_cold", server=base, data_dir=phone)["cold_start_s"]
                for _ in range(3)
            ]
    best, best_empty = min(cold), min(cold_empty)
    gap, idle = pull["max_frame_gap_ms"], idle_gap["max_frame_gap_ms"]
    return {
        "hazards": n,
        "app_cold_start_s": round(best, 3),
        "app_cold_start_s_runs": [round(x, 3) for x in cold],
        "app_cold_start_s_baseline_empty_store": round(best_empty, 3),
        "app_cold_start_ratio_to_baseline": round(best / best_empty, 2),
        "ui_max_frame_gap_ms_during_sync": round(gap, 1),
        "ui_frames_during_sync": pull["frames"],
        "sync_seconds": pull["sync_s"],
        "records_pulled": pull["pulled"],
        "list_rows_shown": pull["rows"],
        "list_rows_after_scroll_to_end": pull["rows_after_scroll"],
        "next_page_s": pull["next_page_s"],
        "ui_max_frame_gap_ms_baseline_idle": round(idle, 1),
        "ui_frame_gap_ratio_to_baseline": round(gap / idle, 2) if idle else None,
        "app_rss_mb": pull["rss_mb"],
        "hazards_created_s": round(made_s, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "note": (
            "desktop under Xvfb with software GL (llvmpipe) on a shared 2-core machine; the"
            " server runs in the benchmark's process; the app's bytecode is cached"
        ),
    }
