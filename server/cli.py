"""The `liandong` command: serve, migrate, seed-demo, user create|list|disable."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.auth import UserCreate
from schemas.common import Role
from server.config import Settings
from server.db import make_engine, make_sessionmaker

T = TypeVar("T")


def _in_transaction(settings: Settings, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = make_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await fn(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Liandong server administration."""
    ctx.obj = Settings.from_env()


@main.command()
@click.option("--host", default=None, help="bind address (LIANDONG_HOST, default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (LIANDONG_PORT, default 8000)")
@click.option("--workers", type=int, default=1, show_default=True)
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None, workers: int) -> None:
    """Serve the API."""
    import uvicorn

    host = host or settings.host
    port = port or settings.port
    base = f"http://{host}:{port}"
    click.echo(f"Liandong serving on {base}")
    click.echo(f"  API docs   {base}/schema   (OpenAPI JSON: {base}/schema/openapi.json)")
    click.echo(f"  health     {base}/healthz  {base}/readyz")
    click.echo(f"  database   {settings.database_url}")
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=os.environ.get("LIANDONG_LOG_LEVEL", "info"),
    )


@main.command()
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def migrate(settings: Settings, revision: str) -> None:
    """Bring the database schema up to date."""
    from server.migrate import upgrade

    upgrade(settings.database_url, revision)
    click.echo(f"migrated {settings.database_url} to {revision}")


@main.command("seed-demo")
@click.pass_obj
def seed_demo(settings: Settings) -> None:
    """Load the demo district, units, grids and one user per role (idempotent)."""
    from server.demo import seed

    summary = _in_transaction(settings, lambda s: seed(s, settings.demo_password))
    click.echo("demo data loaded" if summary.created else "demo data already present")
    click.echo(f"  demo logins ({', '.join(summary.users)}), password: {settings.demo_password}")


@main.group()
def user() -> None:
    """Manage users."""


@user.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--display-name", default=None)
@click.option("--org-id", default=None, help="organisation UUID")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.pass_obj
def user_create(
    settings: Settings,
    username: str,
    role: str,
    display_name: str | None,
    org_id: str | None,
    password: str,
) -> None:
    """Create a user."""
    import uuid

    import msgspec

    from server.domain.auth.services import create_user

    try:
        data = msgspec.convert(
            {
                "username": username,
                "display_name": display_name or username,
                "password": password,
                "role": role,
                "org_id": str(uuid.UUID(org_id)) if org_id else None,
            },
            UserCreate,
        )
    except (msgspec.ValidationError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    row = _in_transaction(settings, lambda s: create_user(s, None, data))
    click.echo(f"created {row.username} ({row.role}) {row.id}")


@user.command("list")
@click.pass_obj
def user_list(settings: Settings) -> None:
    """List users."""
    from server.models import User

    async def fetch(session: AsyncSession) -> list[Any]:
        return list((await session.execute(select(User).order_by(User.username))).scalars())

    for row in _in_transaction(settings, fetch):
        state = "disabled" if row.disabled else "active"
        click.echo(f"{row.username:16} {row.role:18} {state:9} {row.id}")


@user.command("disable")
@click.argument("username")
@click.pass_obj
def user_disable(settings: Settings, username: str) -> None:
    """Disable a user: sessions end, devices stop receiving pushes."""
    from server.domain.auth.services import disable_user
    from server.models import User

    async def run(session: AsyncSession) -> None:
        row = (
            await session.execute(select(User).where(User.username == username))
        ).scalar_one_or_none()
        if row is None:
            raise click.ClickException(f"no user {username}")
        await disable_user(session, None, row)

    _in_transaction(settings, run)
    click.echo(f"disabled {username}")
