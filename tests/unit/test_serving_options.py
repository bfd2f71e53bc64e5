"""`liandong serve`'s uvicorn options that matter under load (server/serving.py)."""

from __future__ import annotations

from pathlib import Path

from uvicorn.importer import import_from_string

from mobile.core import transport
from server.config import Settings
from server.serving import APP_FACTORY, KEEP_ALIVE_S, create_served_app, uvicorn_options


def test_a_busy_worker_is_not_killed_as_hung_and_workers_run_the_tuned_app(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///x.db", secret_key="k", var_dir=tmp_path)
    opts = uvicorn_options(settings, host="127.0.0.1", port=8000, workers=2, log_level="info")
    # uvicorn's 5 s default killed workers that were busy or still starting under load.
    assert opts["timeout_worker_healthcheck"] >= 30
    # Workers import the app by name: the name must resolve to the tuned factory.
    assert import_from_string(APP_FACTORY) is create_served_app
    assert opts.get("factory") is True


def test_the_server_keeps_idle_connections_longer_than_the_phone_but_briefly(
    tmp_path: Path,
) -> None:
    """The server keeps an idle connection open longer than the phone does (else the server
    may close it just as the phone sends); briefly (kept open for every polling phone, the
    same load cost more CPU and twice the p99: docs/capacity.md)."""
    settings = Settings(database_url="sqlite+aiosqlite:///x.db", secret_key="k", var_dir=tmp_path)
    opts = uvicorn_options(settings, host="127.0.0.1", port=8000, workers=2, log_level="info")
    assert opts["timeout_keep_alive"] == KEEP_ALIVE_S
    assert 10 >= KEEP_ALIVE_S > transport.KEEPALIVE_S > 0
    for client in (transport.http_client(5), transport.async_http_client(5)):
        parts = client._transport.parts  # type: ignore[union-attr]  # the phone's transports
        pool = parts.plain._pool
        assert pool._keepalive_expiry == transport.KEEPALIVE_S
