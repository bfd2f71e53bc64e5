"""HTTP for public warnings, staff side: drafts, approval, publishing, imports, authorities."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas import alerts as s
from schemas.common import Problem, Role
from server import crud
from server.auth.principal import Principal
from server.config import Settings
from server.crud import ListQuery, Page, provide_list_query
from server.domain.alerts import capdoc
from server.domain.alerts import services as svc
from server.domain.alerts.feeds import poll_feed
from server.models import Alert, AlertAuthority, AlertFeed, utcnow
from server.openapi import Doc
from server.scope import require
from server.strict import UnsupportedMediaType

CAP_TYPES = ("application/cap+xml", "application/xml", "text/xml")
IMPORT_MAX_BODY = 4 * 1024 * 1024


async def _out(db: AsyncSession, row: Alert) -> s.Alert:
    return svc.alert_out(row, await svc.authority_of(db, row))


class AlertController(Controller):
    """Warnings: everyone signed in reads the published ones (all statuses, marked); dispatch
    drafts and publishes within its area; orange and red need a second person to publish."""

    path = "/api/v1/alerts"
    tags = ["alerts"]
    dependencies = {"q": Provide(provide_list_query)}

    @get("/", operation_id="ListAlerts")
    async def list_alerts(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
        alert_state: Annotated[s.AlertState | None, QueryParameter(name="state")] = None,
        status: Annotated[s.AlertStatus | None, QueryParameter()] = None,
        chain_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        current: Annotated[bool | None, QueryParameter(description="only current ones")] = None,
    ) -> Response[Page[s.Alert]]:
        """Messages newest first (drafts: dispatch of their area only); `near` as everywhere."""
        filters: list[Any] = []  # drafts: server.scope.visible
        if alert_state is not None:
            filters.append(Alert.state == alert_state.value)
        if status is not None:
            filters.append(Alert.status == status.value)
        if chain_id is not None:
            filters.append(Alert.chain_id == chain_id)
        if current:
            filters.extend(svc.current_filter(utcnow(), public=False))
        rows, nxt = await crud.list_page(db, request.user, Alert, q, "area", filters)
        authorities = await svc.authorities_of(db, [r for r, _ in rows])
        items = [
            svc.alert_out(r, authorities.get(r.authority_id) if r.authority_id else None)
            for r, _ in rows
        ]
        return crud.respond(request, items, nxt, lambda a: a.area)

    @get("/{alert_id:uuid}", operation_id="GetAlert")
    async def get_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
    ) -> s.Alert:
        """One message."""
        return await _out(db, await svc.get_alert(db, request.user, alert_id))

    @get(
        "/{alert_id:uuid}/cap",
        operation_id="GetAlertCap",
        media_type="application/cap+xml",
        responses={404: ResponseSpec(Problem, media_type="application/problem+json")},
    )
    async def get_alert_cap(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        alert_id: FromPath[uuid.UUID],
    ) -> Response[bytes]:
        """The CAP document: as published, or for a draft as it would be (unsigned, sent = now:
        a preview for the approver)."""
        row = await svc.get_alert(db, request.user, alert_id)
        if row.cap_xml is not None:
            return Response(row.cap_xml, media_type="application/cap+xml")
        authority = await svc.authority_of(db, row)
        names = capdoc.SenderNames(
            zh=authority.name if authority else row.sender,
            en=authority.name_en if authority else None,
        )
        preview = svc.preview(row)
        doc = capdoc.document(capdoc.to_cap(preview, names, ZoneInfo(settings.local_tz)), None)
        return Response(doc, media_type="application/cap+xml")

    @post("/", operation_id="CreateAlert")
    async def create_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.AlertDraft],
    ) -> Response[s.Alert]:
        """Draft a warning (an Alert, or an Update/Cancel naming what it supersedes)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row, authority, fresh = await svc.create_draft(db, request.user, data)
        return crud.created(svc.alert_out(row, authority), fresh)

    @patch("/{alert_id:uuid}", operation_id="PatchAlertDraft")
    async def patch_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
        data: JSONBody[s.AlertPatch],
    ) -> s.Alert:
        """Edit a draft (a published message never changes: send an Update)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row = await svc.get_alert(db, request.user, alert_id)
        row, authority = await svc.patch_draft(db, request.user, row, data)
        return svc.alert_out(row, authority)

    @delete("/{alert_id:uuid}", operation_id="DiscardAlertDraft")
    async def discard_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        alert_id: FromPath[uuid.UUID],
    ) -> None:
        """Drop a draft (a published warning is ended by a Cancel)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        await svc.discard_draft(db, request.user, await svc.get_alert(db, request.user, alert_id))

    @post("/{alert_id:uuid}/publish", operation_id="PublishAlert", status_code=200)
    async def publish_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        alert_id: FromPath[uuid.UUID],
    ) -> s.Alert:
        """Publish a draft. For orange and red this is the approval: a second person with the
        right to approve (not its author) publishes it."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row = await svc.get_alert(db, request.user, alert_id)
        row, authority = await svc.publish(db, request.user, settings, row)
        return svc.alert_out(row, authority)

    @post(
        "/import",
        operation_id="ImportAlert",
        status_code=200,
        opt={"doc": Doc(body=bytes, body_media_types=CAP_TYPES)},  # read by hand
        request_max_body_size=IMPORT_MAX_BODY,
        responses={
            201: ResponseSpec(s.ImportResult, description="Imported"),
            415: ResponseSpec(Problem, media_type="application/problem+json"),
            422: ResponseSpec(Problem, media_type="application/problem+json"),
        },
    )
    async def import_alert(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[s.ImportResult]:
        """Import another authority's CAP 1.2 alert (body: the XML, `application/cap+xml`),
        administrators only: an import is public at once, without the approval of our own
        warnings (docs/alerts.md). 201 when new; 200 when this document was imported before."""
        require(request.user, Role.ADMIN)
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in CAP_TYPES:
            raise UnsupportedMediaType(detail="send the CAP document as application/cap+xml")
        row, fresh = await svc.import_document(db, request.user, settings, await request.body())
        return Response(
            s.ImportResult(alert=await _out(db, row), created=fresh),
            status_code=201 if fresh else 200,
        )


class AlertAuthorityController(Controller):
    """Warning authorities: who sends (CAP sender id) and who approves (administrators)."""

    path = "/api/v1/alerts/authorities"
    tags = ["alerts"]

    @get("/", operation_id="ListAlertAuthorities")
    async def list_authorities(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> list[s.Authority]:
        """Every authority (dispatch and administrators)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        rows = (
            await db.execute(select(AlertAuthority).where(AlertAuthority.deleted_at.is_(None)))
        ).scalars()
        return [svc.authority_out(r) for r in rows]

    @put("/{org_id:uuid}", operation_id="PutAlertAuthority", status_code=200)
    async def put_authority(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        org_id: FromPath[uuid.UUID],
        data: JSONBody[s.AuthorityPut],
    ) -> s.Authority:
        """Make an organisation a warning authority or change it (administrators)."""
        require(request.user, Role.ADMIN)
        return svc.authority_out(await svc.put_authority(db, request.user, org_id, data))


class AlertFeedController(Controller):
    """Other authorities' CAP feeds this server polls (administrators)."""

    path = "/api/v1/alerts/feeds"
    tags = ["alerts"]

    @get("/", operation_id="ListAlertFeeds")
    async def list_feeds(
        self, request: Request[Principal, Any, Any], db: NamedDependency[AsyncSession]
    ) -> list[s.Feed]:
        """Every polled feed with its last result."""
        require(request.user, Role.ADMIN)
        rows = (await db.execute(select(AlertFeed).where(AlertFeed.deleted_at.is_(None)))).scalars()
        return [svc.feed_out(r) for r in rows]

    @post("/", operation_id="AddAlertFeed")
    async def add_feed(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        data: JSONBody[s.FeedCreate],
    ) -> s.Feed:
        """Poll this feed from now on (https; 422 `not_https` or `malformed` otherwise)."""
        require(request.user, Role.ADMIN)
        return svc.feed_out(
            await svc.add_feed(db, request.user, data, settings.alert_feed_test_hosts)
        )

    @delete("/{feed_id:uuid}", operation_id="DeleteAlertFeed")
    async def delete_feed(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        feed_id: FromPath[uuid.UUID],
    ) -> None:
        """Stop polling it (what it imported stays)."""
        require(request.user, Role.ADMIN)
        row = await crud.get_visible(db, request.user, AlertFeed, feed_id)
        await svc.delete_feed(db, request.user, row)

    @post("/{feed_id:uuid}/poll", operation_id="PollAlertFeed", status_code=200)
    async def poll(
        self,
        request: Request[Principal, Any, Any],
        settings: NamedDependency[Settings],
        feed_id: FromPath[uuid.UUID],
    ) -> s.PollResult:
        """Poll it now (409 `polling` while another poll of it runs)."""
        require(request.user, Role.ADMIN)
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        # Its own short transactions: no database transaction stays open while the feed and
        # its documents are fetched.
        result = await poll_feed(maker, request.user, settings, feed_id)
        assert result is not None  # a poll asked for now is claimed or refused  # noqa: S101
        return result
