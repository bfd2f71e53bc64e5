"""`liandong serve`'s uvicorn options that matter under load (server/serving.py)."""

from __future__ import annotations

from pathlib import Path

from server.config import Settings
from server.serving import APP_FACTORY, uvicorn_options


def test_a_busy_worker_is_not_killed_as_hung_and_workers_run_the_tuned_app(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///x.db", secret_key="k", var_dir=tmp_path)
    opts = uvicorn_options(settings, host="127.0.0.1", port=8000, workers=2, log_level="info")
    # uvicorn's 5 s default killed workers that were busy or still starting under load.
    assert opts["timeout_worker_healthcheck"] >= 30
    assert APP_FACTORY == "server.serving:create_served_app"
