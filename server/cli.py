"""The `liandong` command: serve, migrate, seed-demo, user create|list|disable|enable|
reset-password|set, org deactivate|reactivate|add-member|remove-member, and the jobs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from server.loops import (
    DEFAULT_EVENT_LOOP,
    EVENT_LOOPS,
    EventLoopUnavailable,
    LoopFactory,
    loop_factory,
    running_loop_name,
)

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
    _install_delivery()


def _install_delivery() -> None:
    """Every command that can publish a warning (seed-demo, worker, jobs) queues its deliveries
    with it, as the server does (`audience.install`, idempotent)."""
    from server.domain.residents import audience

    audience.install()


_LOOP_OPTION = click.option(
    "--loop",
    "event_loop",
    type=click.Choice(EVENT_LOOPS),
    default=None,
    help=f"event loop (LIANDONG_EVENT_LOOP, default {DEFAULT_EVENT_LOOP})",
)


def _with_loop(settings: Settings, event_loop: str | None) -> tuple[Settings, LoopFactory]:
    """The settings with `--loop` applied, and the chosen loop's factory (which also proves the
    loop is available here: a clear error otherwise)."""
    if event_loop:
        settings = dataclasses.replace(settings, event_loop=event_loop)
    try:
        return settings, loop_factory(settings.event_loop)
    except EventLoopUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--host", default=None, help="bind address (LIANDONG_HOST, default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (LIANDONG_PORT, default 8000)")
@click.option("--workers", type=int, default=1, show_default=True)
@_LOOP_OPTION
@click.pass_obj
def serve(
    settings: Settings, host: str | None, port: int | None, workers: int, event_loop: str | None
) -> None:
    """Serve the API."""
    import uvicorn

    from server.serving import APP_FACTORY, uvicorn_options

    settings, _ = _with_loop(settings, event_loop)  # uvicorn makes its loop from the name
    host = host or settings.host
    port = port or settings.port
    base = f"http://{host}:{port}"
    click.echo(f"Liandong serving on {base}")
    click.echo(f"  API docs   {base}/schema   (OpenAPI JSON: {base}/schema/openapi.json)")
    click.echo(f"  health     {base}/healthz  {base}/readyz")
    click.echo(f"  database   {settings.database_url}")
    click.echo(f"  loop       {settings.event_loop}")
    uvicorn.run(
        APP_FACTORY,
        **uvicorn_options(
            settings,
            host=host,
            port=port,
            workers=workers,
            log_level=os.environ.get("LIANDONG_LOG_LEVEL", "info"),
        ),
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

    summary = _in_transaction(settings, lambda s: seed(s, settings.demo_password, settings))
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


def _by_username(username: str) -> Callable[[AsyncSession], Awaitable[Any]]:
    """A loader of the user named `username` (a ClickException when there is none)."""

    async def load(session: AsyncSession) -> Any:
        from server.models import User

        row = (
            await session.execute(select(User).where(User.username == username))
        ).scalar_one_or_none()
        if row is None:
            raise click.ClickException(f"no user {username}")
        return row

    return load


def _refused(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _admin_action(
    settings: Settings, username: str, act: Callable[[AsyncSession, Any], Any]
) -> Any:
    """Run `act(session, user)` for the user named `username` in one transaction; a refusal
    (`DomainError`) becomes the command's error message."""
    from server.errors import DomainError

    async def run(session: AsyncSession) -> Any:
        return await act(session, await _by_username(username)(session))

    try:
        return _in_transaction(settings, run)
    except DomainError as exc:
        raise _refused(exc) from exc


@user.command("disable")
@click.argument("username")
@click.pass_obj
def user_disable(settings: Settings, username: str) -> None:
    """Disable a user: sessions end, devices stop receiving pushes."""
    from server.domain.auth.services import disable_user

    _admin_action(settings, username, lambda s, u: disable_user(s, None, u))
    click.echo(f"disabled {username}")


@user.command("enable")
@click.argument("username")
@click.pass_obj
def user_enable(settings: Settings, username: str) -> None:
    """Re-enable a disabled user."""
    from server.domain.admin.services import enable_user

    _admin_action(settings, username, lambda s, u: enable_user(s, None, u))
    click.echo(f"enabled {username}")


@user.command("reset-password")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.pass_obj
def user_reset_password(settings: Settings, username: str, password: str) -> None:
    """Set a new password (prompted, or `--password`); the user is signed out everywhere."""
    from server.domain.admin.services import reset_password

    if len(password) < 8:
        raise click.BadParameter("at least 8 characters", param_hint="--password")
    _admin_action(settings, username, lambda s, u: reset_password(s, None, u, password))
    click.echo(f"password reset for {username}; every session ended")


@user.command("set")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=None)
@click.option("--org-id", default=None, help="home organisation UUID ('none' to clear)")
@click.option("--area-id", default=None, help="area UUID ('none' to clear)")
@click.option("--display-name", default=None)
@click.pass_obj
def user_set(
    settings: Settings,
    username: str,
    role: str | None,
    org_id: str | None,
    area_id: str | None,
    display_name: str | None,
) -> None:
    """Change a user's role, organisation, area or name."""
    import uuid

    import msgspec

    from schemas.auth import UserPatch
    from server.domain.admin.services import update_user

    def ident(value: str | None, hint: str) -> Any:
        if value is None:
            return msgspec.UNSET
        if value.lower() == "none":
            return None
        try:
            return uuid.UUID(value)
        except ValueError as exc:
            raise click.BadParameter("not a UUID", param_hint=hint) from exc

    patch = UserPatch(
        role=Role(role) if role else msgspec.UNSET,
        org_id=ident(org_id, "--org-id"),
        area_id=ident(area_id, "--area-id"),
        display_name=display_name if display_name is not None else msgspec.UNSET,
    )
    row = _admin_action(settings, username, lambda s, u: update_user(s, None, u, patch))
    click.echo(f"{row.username} {row.role} org={row.org_id} area={row.area_id}")


@main.group()
def org() -> None:
    """Manage organisations and linked units."""


def _org_action(settings: Settings, org_id: str, act: Callable[[AsyncSession, Any], Any]) -> Any:
    import uuid

    from server.domain.admin.services import get_any
    from server.errors import DomainError
    from server.models import Organisation

    try:
        ident = uuid.UUID(org_id)
    except ValueError as exc:
        raise click.BadParameter("not a UUID", param_hint="ORG_ID") from exc

    async def run(session: AsyncSession) -> Any:
        return await act(session, await get_any(session, Organisation, ident))

    try:
        return _in_transaction(settings, run)
    except DomainError as exc:
        raise _refused(exc) from exc


@org.command("deactivate")
@click.argument("org_id")
@click.pass_obj
def org_deactivate(settings: Settings, org_id: str) -> None:
    """Deactivate an organisation (no task is dispatched to it any more)."""
    from server.domain.admin.services import set_active
    from server.models import Organisation

    _org_action(settings, org_id, lambda s, o: set_active(s, None, Organisation, o.id, False))
    click.echo(f"deactivated {org_id}")


@org.command("reactivate")
@click.argument("org_id")
@click.pass_obj
def org_reactivate(settings: Settings, org_id: str) -> None:
    """Reactivate an organisation."""
    from server.domain.admin.services import set_active
    from server.models import Organisation

    _org_action(settings, org_id, lambda s, o: set_active(s, None, Organisation, o.id, True))
    click.echo(f"reactivated {org_id}")


@org.command("add-member")
@click.argument("org_id")
@click.argument("username")
@click.option("--leader", is_flag=True, help="as the unit's leader")
@click.pass_obj
def org_add_member(settings: Settings, org_id: str, username: str, leader: bool) -> None:
    """Make a user a member of a unit (beyond their home organisation)."""
    from schemas.reference import MemberRole, MemberSet
    from server.domain.admin.services import add_member

    data = MemberSet(role=MemberRole.LEADER if leader else MemberRole.MEMBER)

    async def act(session: AsyncSession, o: Any) -> Any:
        return await add_member(session, None, o, await _by_username(username)(session), data)

    _org_action(settings, org_id, act)
    click.echo(f"{username} is a member of {org_id}")


@org.command("remove-member")
@click.argument("org_id")
@click.argument("username")
@click.pass_obj
def org_remove_member(settings: Settings, org_id: str, username: str) -> None:
    """End a user's membership of a unit."""
    from server.domain.admin.services import remove_member

    async def act(session: AsyncSession, o: Any) -> None:
        await remove_member(session, None, o, await _by_username(username)(session))

    _org_action(settings, org_id, act)
    click.echo(f"{username} is no longer a member of {org_id}")


@main.command("escalate")
@click.pass_obj
def escalate(settings: Settings) -> None:
    """Flag tasks not accepted within their window and notify dispatch (one pass; safe to run
    from cron beside the servers' own loops)."""
    from server.domain.dispatch.escalation import escalate_due
    from server.models import utcnow

    flagged = _in_transaction(settings, lambda s: escalate_due(s, utcnow()))
    click.echo(f"escalated {len(flagged)} task(s)")
    for task_id in flagged:
        click.echo(f"  {task_id}")


def _run_worker(settings: Settings, new_loop: LoopFactory) -> None:
    import anyio

    from server.pushing import Background, worker_engine

    _install_delivery()  # a spawned worker process does not run `main`

    async def run() -> None:
        engine = worker_engine(settings.database_url)
        try:
            background = Background(settings, make_sessionmaker(engine))
            if background.worker is None:
                raise click.ClickException(
                    "no push sender configured (LIANDONG_FCM_PROJECT_ID / LIANDONG_VAPID_*)"
                )
            async with background.running():
                click.echo(f"liandong worker {os.getpid()}: running on {running_loop_name()}")
                await anyio.sleep_forever()
        finally:
            await engine.dispose()

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(run, backend_options={"loop_factory": new_loop})


@main.command("worker")
@click.option("--processes", type=int, default=1, show_default=True)
@_LOOP_OPTION
@click.pass_obj
def worker(settings: Settings, processes: int, event_loop: str | None) -> None:
    """Deliver queued pushes and run escalation, without serving HTTP. Several processes (or
    hosts) may run this at once: outbox claims are leased, escalation wins once per task."""
    settings, new_loop = _with_loop(settings, event_loop)
    click.echo(
        f"liandong worker: {processes} process(es) on {settings.database_url}"
        f" ({settings.event_loop})"
    )
    if processes <= 1:
        _run_worker(settings, new_loop)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    # the factory travels to each child by name (uvloop.new_event_loop, the selector loop class)
    children = [
        ctx.Process(target=_run_worker, args=(settings, new_loop)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
            child.join(timeout=10)


@main.group()
def jobs() -> None:
    """Periodic jobs of the hazard loop and media (the server also runs them itself)."""


@jobs.command("run-once")
@click.option(
    "--now",
    default=None,
    help="pretend it is this ISO 8601 time with a zone (default: now), e.g. for a catch-up",
)
@click.pass_obj
def jobs_run_once(settings: Settings, now: str | None) -> None:
    """Mark overdue rectifications (one escalation each), remind rectifiers of deadlines within
    a day, run the self-check schedule (open weeks, reminders, missed checks), expire stale
    uploads, recover uploads a crash left complete, sweep temp blobs. Safe beside running
    servers."""
    from datetime import datetime

    from server.blobs import build_blob_store, build_upload_manager, media_limits
    from server.domain.checks.schedule import CheckPolicy
    from server.domain.media.services import MediaRuntime
    from server.domain.sync.lifespan import synced_sessionmaker
    from server.jobs import run_once

    moment = datetime.fromisoformat(now) if now else None
    if moment is not None and moment.tzinfo is None:
        raise click.BadParameter("--now needs a time zone, e.g. 2026-01-01T08:00:00+08:00")
    runtime = MediaRuntime(
        manager=build_upload_manager(settings),
        store=build_blob_store(settings),
        limits=media_limits(settings),
    )

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            # Synced sessions: what the jobs write (overdue hazards, the weeks' checks) reaches
            # the phones' change log as a server's own writes do.
            sessions = synced_sessionmaker(make_sessionmaker(engine))["sessionmaker"]
            report = await run_once(sessions, runtime, moment, CheckPolicy.from_settings(settings))
        finally:
            await engine.dispose()
        click.echo(f"escalated {len(report.escalated)} overdue hazard(s)")
        for hazard_id in report.escalated:
            click.echo(f"  {hazard_id}")
        checks = report.checks
        click.echo(
            f"deadline reminders: {len(report.deadline_reminders)}; self-checks: "
            f"{checks.opened} opened, {len(checks.reminded)} reminded, {len(checks.missed)} missed"
        )
        click.echo(
            f"uploads: {report.expired_uploads} expired, {report.recovered_uploads} recovered, "
            f"{report.discarded_uploads} discarded; temp blobs swept: {report.swept_temp}"
        )
        click.echo(f"resident subscriptions lapsed: {report.lapsed_subscriptions}")
        if report.failed:
            raise click.ClickException(f"jobs failed (see the log): {', '.join(report.failed)}")

    asyncio.run(run())


@main.group("sync")
def sync_group() -> None:
    """Delta sync maintenance."""


@sync_group.command("purge")
@click.option("--days", type=float, default=None, help="horizon (LIANDONG_SYNC_TOMBSTONE_DAYS)")
@click.pass_obj
def sync_purge(settings: Settings, days: float | None) -> None:
    """Forget tombstones and eviction markers older than the horizon (devices behind it resync)."""
    from server.domain.sync.lifespan import run_purge

    async def run() -> int:
        engine = make_engine(settings.database_url)
        try:
            return await run_purge(make_sessionmaker(engine), days or settings.sync_tombstone_days)
        finally:
            await engine.dispose()

    click.echo(f"sync horizon is now seq {asyncio.run(run())}")
