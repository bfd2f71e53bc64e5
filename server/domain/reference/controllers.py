"""HTTP for reference data: areas, organisations, grids, enterprises, resources, contacts."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import reference as s
from schemas.common import Role
from server import crud
from server.auth.principal import Principal
from server.crud import ListQuery, Page, provide_list_query
from server.domain.reference import services as svc
from server.models import AdminArea, Enterprise, Grid, Organisation, Resource
from server.scope import require

LIST_DEPS = {"q": Provide(provide_list_query)}


class AreaController(Controller):
    """Administrative areas (city → district → street → community)."""

    path = "/api/v1/areas"
    tags = ["reference"]
    dependencies = LIST_DEPS

    @get("/", operation_id="ListAreas")
    async def list_areas(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
    ) -> Response[Page[s.AdminArea]]:
        """Areas, with spatial filters on their boundaries."""
        rows, nxt = await crud.list_page(db, request.user, AdminArea, q, "boundary")
        return crud.respond(request, [svc.area_out(r) for r, _ in rows], nxt, lambda a: a.boundary)

    @post("/", operation_id="CreateArea")
    async def create_area(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.AdminAreaCreate],
    ) -> s.AdminArea:
        """Add an area (administrators)."""
        require(request.user, Role.ADMIN)
        return svc.area_out(await svc.create_area(db, request.user, data))


class OrganisationController(Controller):
    """Organisations: command centres, linked units, grid offices, enterprises."""

    path = "/api/v1/organisations"
    tags = ["reference"]
    dependencies = LIST_DEPS

    @get("/", operation_id="ListOrganisations")
    async def list_orgs(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
    ) -> Response[Page[s.Organisation]]:
        """Organisations; linked units with their station position."""
        rows, nxt = await crud.list_page(db, request.user, Organisation, q, "location")
        return crud.respond(request, [svc.org_out(r) for r, _ in rows], nxt, lambda o: o.location)

    @post("/", operation_id="CreateOrganisation")
    async def create_org(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.OrganisationCreate],
    ) -> s.Organisation:
        """Add an organisation (administrators)."""
        require(request.user, Role.ADMIN)
        return svc.org_out(await svc.create_org(db, request.user, data))


class GridController(Controller):
    """Patrol grids (网格)."""

    path = "/api/v1/grids"
    tags = ["reference"]
    dependencies = LIST_DEPS

    @get("/", operation_id="ListGrids")
    async def list_grids(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
    ) -> Response[Page[s.Grid]]:
        """Grids the user may see (an inspector: their own)."""
        rows, nxt = await crud.list_page(db, request.user, Grid, q, "boundary")
        return crud.respond(request, [svc.grid_out(r) for r, _ in rows], nxt, lambda g: g.boundary)

    @get("/{grid_id:uuid}", operation_id="GetGrid")
    async def get_grid(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        grid_id: FromPath[uuid.UUID],
    ) -> s.Grid:
        """One grid."""
        return svc.grid_out(await crud.get_visible(db, request.user, Grid, grid_id))

    @post("/", operation_id="CreateGrid")
    async def create_grid(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.GridCreate],
    ) -> s.Grid:
        """Add a grid (administrators)."""
        require(request.user, Role.ADMIN)
        return svc.grid_out(await svc.create_grid(db, request.user, data))

    @patch("/{grid_id:uuid}", operation_id="UpdateGrid")
    async def patch_grid(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        grid_id: FromPath[uuid.UUID],
        data: JSONBody[s.GridPatch],
    ) -> s.Grid:
        """Change a grid (administrators)."""
        require(request.user, Role.ADMIN)
        row = await crud.get_visible(db, request.user, Grid, grid_id)
        return svc.grid_out(await svc.patch_grid(db, request.user, row, data))


class EnterpriseController(Controller):
    """Enterprises under safety supervision."""

    path = "/api/v1/enterprises"
    tags = ["reference"]
    dependencies = LIST_DEPS

    @get("/", operation_id="ListEnterprises")
    async def list_enterprises(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
    ) -> Response[Page[s.Enterprise]]:
        """Enterprises the user may see."""
        rows, nxt = await crud.list_page(db, request.user, Enterprise, q, "location")
        return crud.respond(
            request, [svc.enterprise_out(r) for r, _ in rows], nxt, lambda e: e.location
        )

    @get("/{enterprise_id:uuid}", operation_id="GetEnterprise")
    async def get_enterprise(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        enterprise_id: FromPath[uuid.UUID],
    ) -> s.Enterprise:
        """One enterprise."""
        return svc.enterprise_out(
            await crud.get_visible(db, request.user, Enterprise, enterprise_id)
        )

    @post("/", operation_id="CreateEnterprise")
    async def create_enterprise(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.EnterpriseCreate],
    ) -> s.Enterprise:
        """Register an enterprise (administrators)."""
        require(request.user, Role.ADMIN)
        return svc.enterprise_out(await svc.create_enterprise(db, request.user, data))

    @patch("/{enterprise_id:uuid}", operation_id="UpdateEnterprise")
    async def patch_enterprise(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        enterprise_id: FromPath[uuid.UUID],
        data: JSONBody[s.EnterprisePatch],
    ) -> s.Enterprise:
        """Change an enterprise; a new location moves its grid and area (administrators)."""
        require(request.user, Role.ADMIN)
        row = await db.get(Enterprise, enterprise_id)
        if row is None:
            row = await crud.get_visible(db, request.user, Enterprise, enterprise_id)
        return svc.enterprise_out(await svc.patch_enterprise(db, request.user, row, data))


class ResourceController(Controller):
    """Shelters, supply depots and rescue teams, sorted by distance with `near`."""

    path = "/api/v1/resources"
    tags = ["reference"]
    dependencies = LIST_DEPS

    @get("/", operation_id="ListResources")
    async def list_resources(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        q: NamedDependency[ListQuery],
        kind: FromQuery[s.ResourceKind | None] = None,
    ) -> Response[Page[s.Resource]]:
        """Resources; with `near` nearest first and each with its distance."""
        filters = [Resource.kind == kind.value] if kind else []
        rows, nxt = await crud.list_page(db, request.user, Resource, q, "location", filters)
        items = [svc.resource_out(r, d) for r, d in rows]
        return crud.respond(request, items, nxt, lambda r: r.location)

    @get("/{resource_id:uuid}", operation_id="GetResource")
    async def get_resource(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        resource_id: FromPath[uuid.UUID],
    ) -> s.Resource:
        """One resource."""
        return svc.resource_out(await crud.get_visible(db, request.user, Resource, resource_id))

    @post("/", operation_id="CreateResource")
    async def create_resource(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.ResourceCreate],
    ) -> s.Resource:
        """Add a resource (administrators; dispatchers inside their area)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        return svc.resource_out(await svc.create_resource(db, request.user, data))

    @patch("/{resource_id:uuid}", operation_id="UpdateResource")
    async def patch_resource(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        resource_id: FromPath[uuid.UUID],
        data: JSONBody[s.ResourcePatch],
    ) -> s.Resource:
        """Change a resource."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row = await crud.get_visible(db, request.user, Resource, resource_id)
        return svc.resource_out(await svc.patch_resource(db, request.user, row, data))


class ContactController(Controller):
    """The contact book (通讯录): duty lines and people, for the areas the user reads."""

    path = "/api/v1/contacts"
    tags = ["reference"]

    @get("/", operation_id="ListContacts")
    async def list_contacts(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        cursor: Annotated[
            str | None, QueryParameter(description="opaque cursor from next_cursor")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="page size")] = 50,
        kind: FromQuery[s.ContactKind | None] = None,
        duty: FromQuery[bool | None] = None,
        area_id: Annotated[
            uuid.UUID | None,
            QueryParameter(description="only contacts serving this area (or everywhere)"),
        ] = None,
    ) -> Page[s.Contact]:
        """Contacts of the areas the user reads (their own, its neighbours, their tasks'),
        newest first."""
        rows, nxt = await svc.list_contacts(
            db, request.user, cursor=cursor, limit=limit, kind=kind, duty=duty, area_id=area_id
        )
        return Page(items=[svc.contact_out(r) for r in rows], next_cursor=nxt)

    @get("/{contact_id:uuid}", operation_id="GetContact")
    async def get_contact(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        contact_id: FromPath[uuid.UUID],
    ) -> s.Contact:
        """One contact."""
        return svc.contact_out(await svc.get_contact(db, request.user, contact_id))

    @post("/", operation_id="CreateContact")
    async def create_contact(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        data: JSONBody[s.ContactCreate],
    ) -> Response[s.Contact]:
        """Add a contact (administrators; dispatchers for areas inside their command area):
        201; a retry with the same id: 200, `Idempotent-Replayed`, the first result."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row, fresh = await svc.create_contact(db, request.user, data)
        return crud.created(svc.contact_out(row), fresh)

    @patch("/{contact_id:uuid}", operation_id="UpdateContact")
    async def patch_contact(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        contact_id: FromPath[uuid.UUID],
        data: JSONBody[s.ContactPatch],
    ) -> s.Contact:
        """Change a contact (administrators; dispatchers inside their command area)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row = await svc.get_contact(db, request.user, contact_id)
        return svc.contact_out(await svc.patch_contact(db, request.user, row, data))

    @delete("/{contact_id:uuid}", operation_id="DeleteContact")
    async def delete_contact(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[AsyncSession],
        contact_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete a contact (administrators; dispatchers inside their command area)."""
        require(request.user, Role.ADMIN, Role.DISPATCHER)
        row = await svc.get_contact(db, request.user, contact_id)
        await svc.delete_contact(db, request.user, row)
