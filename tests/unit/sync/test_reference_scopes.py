"""Scope keys and synced values of reference data (resources, contacts, plans); no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.common import Point
from schemas.merge import REGISTRY
from server import geo
from server.domain.sync.mapping import fields_of
from server.domain.sync.reference_scopes import reference_record_scopes
from server.models import Contact, EmergencyPlan, Resource

A = uuid.UUID("0190f0e0-0000-7000-8000-000000000001")
B = uuid.UUID("0190f0e0-0000-7000-8000-000000000002")
AT = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


def test_resources_and_contacts_go_to_their_areas() -> None:
    assert reference_record_scopes("resource", {"area_id": str(A)}) == [f"refarea:{A}", "refall"]
    assert reference_record_scopes("resource", {"area_id": None}) == ["ref"]
    both = reference_record_scopes("contact", {"area_ids": [str(B), str(A), str(A)]})
    assert both == [*sorted({f"refarea:{A}", f"refarea:{B}"}), "refall"]
    assert reference_record_scopes("contact", {"area_ids": []}) == ["ref"]
    assert reference_record_scopes("contact", {}) == ["ref"]


def test_plans_go_to_dispatch_and_to_the_unit_kinds_they_dispatch() -> None:
    templates = [{"key": "a", "unit_kind": "fire"}, {"key": "b", "unit_kind": "ems"}]
    templates.append({"key": "c", "unit_kind": "fire"})
    active = {"active": True, "templates": templates}
    assert reference_record_scopes("plan", active) == ["plans", "plankind:ems", "plankind:fire"]
    # An old (inactive) version stays with dispatch only.
    assert reference_record_scopes("plan", {**active, "active": False}) == ["plans"]


def test_alerts_go_to_the_areas_they_cover_and_to_administrators() -> None:
    b = "0190f0e0-0000-7000-8000-000000000002"
    assert reference_record_scopes("alert", {"area_ids": [b, str(A)]}) == [
        f"refarea:{A}",
        f"refarea:{b}",
        "refall",
    ]
    # A warning nobody can place reaches administrators only, not every phone.
    assert reference_record_scopes("alert", {"area_ids": []}) == ["refall"]


def test_other_entities_are_not_scoped_here() -> None:
    for entity in ("task", "hazard", "grid", "nonsense"):
        assert reference_record_scopes(entity, {"area_id": str(A)}) is None


def _fits(entity: str, values: dict[str, object]) -> None:
    spec = REGISTRY[entity]
    assert set(values) <= set(spec.fields), set(values) - set(spec.fields)
    for name, value in values.items():
        assert spec.fields[name].check(value) is None, (name, value)


def test_synced_values_are_wire_forms_the_specs_accept() -> None:
    res = Resource(
        id=A,
        kind="shelter",
        name="人民广场应急避难场所",
        location=geo.point_to_db(Point(coordinates=(121.4737, 31.2304))),
        capacity=20000,
        contact_name="管理处",
        phone="021-63272222",
        address=None,
        area_id=B,
    )
    values = fields_of(res)
    assert values["area_id"] == str(B) and values["contact"] == "管理处"
    assert values["location"] == {"type": "Point", "coordinates": [121.4737, 31.2304]}
    _fits("resource", values)
    assert reference_record_scopes("resource", values) == [f"refarea:{B}", "refall"]

    con = Contact(
        id=B,
        kind="unit_duty",
        name="黄浦消防救援支队值班室",
        name_en="Huangpu Fire 119 duty desk",
        phone="021-63210119",
        org_id=A,
        user_id=None,
        role_title=None,
        area_ids=[str(A)],
        duty=True,
        notes=None,
        created_at=AT,
        updated_at=AT,
    )
    values = fields_of(con)
    assert values["org_id"] == str(A) and values["duty"] is True
    assert values["created_at"] == "2026-11-24T08:30:00Z"
    _fits("contact", values)

    plan = EmergencyPlan(
        id=A,
        code="hazmat",
        version=2,
        name="危化品泄漏",
        description=None,
        incident_type="hazmat_leak",
        min_level=2,
        active=True,
        templates=[{"key": "fire", "unit_kind": "fire", "title": "堵漏"}],
        created_at=AT,
        updated_at=AT,
    )
    values = fields_of(plan)
    assert values["unit_kinds"] == ["fire"] and values["version"] == 2
    _fits("plan", values)
    assert reference_record_scopes("plan", values) == ["plans", "plankind:fire"]
