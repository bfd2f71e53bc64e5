"""Run every benchmark: each `tests/bench/bench_<name>.py` exposes `run() -> dict[str, object]`.

The figures are printed and written to `var/bench/<name>.json`. Pass names to run only some:
`python -m tests.bench sync media`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import tests.bench as pkg


def main(argv: list[str]) -> int:
    out = Path("var/bench")
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name.startswith("bench_")
    )
    wanted = [n for n in names if not argv or n in argv]
    try:
        for name in wanted:
            module = importlib.import_module(f"tests.bench.bench_{name}")
            print(f"== {name}", flush=True)
            figures = module.run()
            text = json.dumps(figures, indent=2, sort_keys=True, default=str)
            print(text, flush=True)
            (out / f"{name}.json").write_text(text + "\n")
    finally:
        from tests.conftest import drop_scratch_databases

        drop_scratch_databases()  # the PostGIS scratch databases the benchmarks made
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
