"""The Litestar application: routes, auth, problem details, one transaction per request."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, get
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from i18n import N_
from schemas.common import Output
from server.admission import (
    EXEMPT_PATHS,
    AdmissionMiddleware,
    admission_from,
    pool_size,
    watching_lag,
)
from server.auth.middleware import EXCLUDE_REGEX, AuthMiddleware
from server.auth.tokens import ACCOUNT
from server.blobs import build_blob_store, build_upload_manager, media_limits
from server.config import Settings
from server.db import ReadOne, make_engine, make_sessionmaker
from server.domain.admin.controllers import (
    AuditController,
    EnterpriseAdminController,
    GridAdminController,
    OrganisationAdminController,
    UserController,
)
from server.domain.alerts.controllers import (
    AlertAuthorityController,
    AlertController,
    AlertFeedController,
)
from server.domain.alerts.feeds import alert_feeds_lifespan
from server.domain.alerts.public import PublicAlertController
from server.domain.auth.controllers import AuthController, DeviceController
from server.domain.checks.controllers import (
    CheckAssignmentController,
    CheckDueController,
    CheckSubmissionController,
    CheckTemplateController,
)
from server.domain.dispatch.controllers import (
    IncidentController,
    PlanController,
    PositionController,
    TaskController,
)
from server.domain.hazards.controllers import HazardController
from server.domain.media.controllers import MediaController, UploadController
from server.domain.media.services import MediaRuntime
from server.domain.reference.controllers import (
    AreaController,
    ContactController,
    EnterpriseController,
    GridController,
    OrganisationController,
    ResourceController,
)
from server.domain.residents import audience as resident_audience
from server.domain.residents.audience import WARNINGS_FLAG
from server.domain.residents.controllers import (
    DeliveryReportController,
    PublicWarningController,
    ResidentController,
)
from server.domain.stats.controllers import StatsController
from server.domain.sync.controllers import SyncController
from server.domain.sync.lifespan import sync_lifespan, synced_sessionmaker
from server.errors import EXCEPTION_HANDLERS, ServiceUnavailable
from server.jobs import hazard_jobs_lifespan
from server.openapi import AppWide, document_app
from server.outbox import OUTBOX_FLAG
from server.strict import strict_request

log = logging.getLogger("liandong")

# The API docs page works on a closed network: its script is served from server/static (pinned,
# vendored from npm, see server/static/README.md), never from a CDN.
STATIC_DIR = Path(__file__).parent / "static"
SCHEMA_STATIC = "/schema/static"
SCALAR_VERSION = "1.76.0"


def docs_page() -> ScalarRenderPlugin:
    """Scalar with local assets, no web fonts, no telemetry, no request proxy: nothing the page
    loads or sends leaves this server."""
    return ScalarRenderPlugin(
        js_url=f"{SCHEMA_STATIC}/scalar-api-reference-{SCALAR_VERSION}.js",
        css_url=f"{SCHEMA_STATIC}/scalar.css",
        favicon="",
        options={
            "withDefaultFonts": False,
            "telemetry": False,
            # Unset, "try it" requests from a browser go through Scalar's public proxy.
            "proxyUrl": "",
            "hideClientButton": True,
            "showDeveloperTools": "never",
            # "Ask AI" talks to Scalar's cloud, and turns itself on for hosts such as
            # localhost or *.local; the MCP button likewise. Neither works on a closed network.
            "agent": {"disabled": True},
            "mcp": {"disabled": True},
            # Scalar's own services (dashboard, registry, request proxy, API): none is reached.
            "externalUrls": {
                "dashboardUrl": "",
                "registryUrl": "",
                "proxyUrl": "",
                "apiBaseUrl": "",
            },
        },
    )


async def provide_db(state: State) -> AsyncGenerator[AsyncSession]:
    """The request's transaction: committed when the handler returns, rolled back if it raises.

    Services flush but never commit; this is the one place that does.
    """
    async with state.sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()
            # Push jobs committed with this request: wake this process's outbox worker now.
            background = state.get("background")
            if session.info.get(OUTBOX_FLAG) and background is not None:
                background.notify()
            # A warning published: the residents' live streams in this process look now.
            feed = state.get("warning_feed")
            if session.info.get(WARNINGS_FLAG) and feed is not None:
                feed.poke()


class Health(Output):
    """Liveness or readiness."""

    status: str
    database: str | None = None


@get("/healthz", operation_id="Healthz", tags=["health"])
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@get("/readyz", operation_id="Readyz", tags=["health"])
async def readyz(request: Request[Any, Any, Any]) -> Health:
    """The database answers."""
    try:
        async with request.app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailable(N_("database unreachable")) from exc
    return Health(status="ready", database=request.app.state.engine.dialect.name)


#: `gc.set_threshold` while serving: a young collection after 10,000 net new containers (the
#: default is 700), a middle one every 10 young ones, and a full one considered only every 100
#: middle ones (about every 40 minutes under a surge's load).
YOUNG_COLLECTION_AFTER = (10_000, 10, 100)


@asynccontextmanager
async def frozen_heap(_app: Litestar) -> AsyncIterator[None]:
    """Move what start-up built (modules, models, the app) out of the garbage collector's way.

    A full collection walks every tracked object; a serving process holds ~160,000 of them
    from start-up alone, and a sync pull page allocates enough to trigger several full
    collections, which cost more than building the page (measured in tests/bench/bench_sync).
    `gc.freeze` after a `gc.collect` parks the survivors in a permanent generation; shutdown
    gives them back so a process that builds many apps (the tests) does not keep them forever.

    Then the young collections: with Python's default threshold (700 net new containers) a
    5,000-record pull page started ~60 of them, each walking what the page had built so far
    and finding nothing to free (a request's objects are freed by reference counting when it
    ends): 15-25 % of the server's CPU for a 100,000-record pull. `YOUNG_COLLECTION_AFTER`
    lets a request's working set come and go between collections; what does need the
    collector (reference cycles) still triggers one every 10,000 containers left behind.

    Not more than 10,000: each request leaves some cycles behind (the SQLAlchemy session and
    its transaction and connection, about 60 containers per pull), and a young collection
    stops the process for as long as it walks them. At 50,000 a worker under a 4,000-phone
    surge stopped for 100-150 ms every 12 s (250 ms for a middle collection), the largest stalls
    of its event loop; at 10,000, ~20 ms every 2.4 s, and its loop rarely stalls over 100 ms
    (docs/capacity.md, "The phones' clock, and the collector's pauses").
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*YOUNG_COLLECTION_AFTER)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def allow_every_method(app: Litestar) -> None:
    """Make Litestar's automatic OPTIONS answers list every method of their path.

    The automatic handler answers `Allow` from the route object it was made with; a controller's
    handlers are registered one at a time, so that is the path's first route, which lacks the
    methods registered after it (`OPTIONS /api/v1/users` answered `Allow: OPTIONS, POST`).
    Each is pointed at its path's final route."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        fn = route.route_handler_map["OPTIONS"][0].fn
        code = getattr(fn, "__code__", None)
        closure = getattr(fn, "__closure__", None)
        if getattr(fn, "__name__", "") != "options_handler" or not code or not closure:
            continue
        if "self" in code.co_freevars:
            closure[code.co_freevars.index("self")].cell_contents = route


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app for `settings` (default: from the environment)."""
    settings = settings or Settings.from_env()
    # Published warnings queue their deliveries (residents, staff, duty contacts) in the
    # publishing transaction: attach that hook explicitly, never by an import's side effect.
    resident_audience.install()
    admission = admission_from(settings)
    engine = make_engine(settings.database_url, pool_size=pool_size(admission))

    async def _dispose() -> None:
        await engine.dispose()

    async def _close_feed(app: Litestar) -> None:
        feed = app.state.get("warning_feed")
        if feed is not None:
            await feed.aclose()

    @asynccontextmanager
    async def _background_jobs(app: Litestar) -> AsyncIterator[None]:
        # The outbox worker and the escalation loop, when this process runs them (issue 5).
        if not settings.background_jobs:
            yield
            return
        from server.pushing import Background

        background = Background(settings, app.state.sessionmaker)
        app.state.background = background
        async with background.running():
            yield

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            SyncController,
            AuthController,
            DeviceController,
            UserController,
            AuditController,
            OrganisationAdminController,
            EnterpriseAdminController,
            GridAdminController,
            AreaController,
            OrganisationController,
            GridController,
            EnterpriseController,
            ResourceController,
            ContactController,
            IncidentController,
            TaskController,
            PlanController,
            PositionController,
            StatsController,
            HazardController,
            UploadController,
            MediaController,
            AlertController,
            AlertAuthorityController,
            AlertFeedController,
            PublicAlertController,
            ResidentController,
            DeliveryReportController,
            PublicWarningController,
            CheckTemplateController,
            CheckSubmissionController,
            CheckAssignmentController,
            CheckDueController,
            # The residents' page (issue 15): plain files, public, no build step.
            create_static_files_router(
                "/residents",
                directories=[STATIC_DIR / "residents"],
                name="residents",
                html_mode=True,
                include_in_schema=False,
                cache_control=CacheControlHeader(no_cache=True),
            ),
            create_static_files_router(
                SCHEMA_STATIC,
                directories=[STATIC_DIR],
                name="schema-static",
                include_in_schema=False,
                # Versioned file names: a new version is a new URL.
                cache_control=CacheControlHeader(max_age=31_536_000, public=True),
            ),
        ],
        state=State(
            {
                "settings": settings,
                "engine": engine,
                "account_read": ReadOne(engine, ACCOUNT),
                "admission": admission,
                # Synced sessions: a REST write enters the sync change log in its transaction.
                **synced_sessionmaker(make_sessionmaker(engine)),
                "media": MediaRuntime(
                    manager=build_upload_manager(settings),
                    store=build_blob_store(settings),
                    limits=media_limits(settings),
                ),
            }
        ),
        dependencies={
            "db": Provide(provide_db),
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
        },
        # Admission first: a request shed under overload costs no database round trip.
        middleware=[
            AdmissionMiddleware(admission),
            DefineMiddleware(AuthMiddleware, exclude=EXCLUDE_REGEX),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=strict_request,
        request_max_body_size=settings.max_body_bytes,
        on_shutdown=[_close_feed, _dispose],
        lifespan=[
            hazard_jobs_lifespan,
            _background_jobs,
            sync_lifespan,
            alert_feeds_lifespan,
            frozen_heap,
            watching_lag,
        ],
        openapi_config=OpenAPIConfig(
            title="Liandong API",
            version="1.0.0",
            path="/schema",
            render_plugins=[docs_page()],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
            security=[{"BearerToken": []}],
        ),
    )
    # Every operation's real answers (401, 403, 404, 409, 415, 422, ... as problem+json).
    shed = AppWide(503, "overloaded: shed by admission (server/admission.py)", EXEMPT_PATHS)
    document_app(app, public_paths=EXCLUDE_REGEX, app_wide=[shed])
    allow_every_method(app)
    return app
