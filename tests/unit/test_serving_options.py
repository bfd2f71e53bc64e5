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


def test_connections_stay_open_longer_than_the_phone_keeps_them(tmp_path: Path) -> None:
    """A polling phone reuses its connection: the server keeps an idle one open longer than
    the phone does (else the server may close it just as the phone sends), and longer than a
    30-s poll (uvicorn's 5 s made every poll a new connection, accepted slowly under load)."""
    settings = Settings(database_url="sqlite+aiosqlite:///x.db", secret_key="k", var_dir=tmp_path)
    opts = uvicorn_options(settings, host="127.0.0.1", port=8000, workers=2, log_level="info")
    assert opts["timeout_keep_alive"] == KEEP_ALIVE_S
    assert KEEP_ALIVE_S > transport.KEEPALIVE_S > 30
    for client in (transport.http_client(5), transport.async_http_client(5)):
        parts = client._transport.parts  # type: ignore[union-attr]  # the phone's transports
        pool = parts.plain._pool
        assert pool._keepalive_expiry == transport.KEEPALIVE_S
