"""The client's address: one rule for every per-address limit (login throttling, the public
warning routes' rate limit).

It is the peer address of the connection as the ASGI server reports it. `liandong serve`
(`server/serving.py`) lets uvicorn replace it with the X-Forwarded-For client only when the
peer is a proxy listed in `LIANDONG_TRUSTED_PROXIES`; with none listed, a forwarded header is
ignored, so a client cannot pick its own address to dodge a limit.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The address per-address limits count against."""
    return connection.client.host if connection.client else "unknown"
