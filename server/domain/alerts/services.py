"""Public warnings: publish with CAP fields; severity follows the colour unless given."""

from __future__ import annotations

from geoalchemy2.shape import to_shape
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import alerts as s
from schemas.ids import uuid7
from server import audit, changes, geo
from server.auth.principal import Principal
from server.domain.reference.services import ensure_in_my_area, locate_area
from server.models import Alert, utcnow

COLOR_SEVERITY = {
    s.AlertColor.BLUE: s.CapSeverity.MINOR,
    s.AlertColor.YELLOW: s.CapSeverity.MODERATE,
    s.AlertColor.ORANGE: s.CapSeverity.SEVERE,
    s.AlertColor.RED: s.CapSeverity.EXTREME,
}


def alert_out(row: Alert) -> s.Alert:
    """Wire form of an alert."""
    area = geo.area_required(row.area)
    return s.Alert(
        id=row.id,
        identifier=row.identifier,
        msg_type=s.MsgType(row.msg_type),
        references=row.references,
        event=row.event,
        color=s.AlertColor(row.color),
        urgency=s.Urgency(row.urgency),
        severity=s.CapSeverity(row.severity),
        certainty=s.Certainty(row.certainty),
        headline=row.headline,
        description=row.description,
        instruction=row.instruction,
        language=row.language,
        area_desc=row.area_desc,
        area=area,
        sent=row.sent,
        expires=row.expires,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def create_alert(session: AsyncSession, p: Principal, data: s.AlertCreate) -> Alert:
    """Publish a warning inside the dispatcher's area."""
    area = geo.multipolygon_to_db(data.area, "area")
    centre = to_shape(area).representative_point()
    area_id = await locate_area(session, centre.x, centre.y)
    await ensure_in_my_area(session, p, area_id, "alert area")
    ident = data.id or uuid7()
    severity = data.severity if isinstance(data.severity, s.CapSeverity) else None
    row = Alert(
        id=ident,
        identifier=f"urn:liandong:alert:{ident}",
        msg_type=data.msg_type.value,
        references=data.references,
        event=data.event,
        color=data.color.value,
        urgency=data.urgency.value,
        severity=(severity or COLOR_SEVERITY[data.color]).value,
        certainty=data.certainty.value,
        headline=data.headline,
        description=data.description,
        instruction=data.instruction,
        language=data.language,
        area_desc=data.area_desc,
        area=area,
        sent=utcnow(),
        expires=data.expires,
        area_id=area_id,
        created_by=p.user_id,
    )
    session.add(row)
    await session.flush()
    changes.record(session, row)
    audit.record(session, p, "publish", "alert", row.id, color=row.color, event=row.event)
    return row
