"""CSV downloads: the same rows as the JSON answer, headed in the reader's language.

A download is CSV with `?format=csv` or `Accept: text/csv` (and not `application/json`). The
header row names each column in the request's language (`Accept-Language`, as problem details;
without one, the signed-in reader's saved language): the labels are marked with `N_` in
`LABELS`, so the catalogue test holds them to having Chinese. The body is UTF-8 with a
byte-order mark: Excel, which a county office opens these files with, reads a CSV without one
in the system's ANSI code page (GBK on Chinese Windows) and shows the Chinese as mojibake; with
it, Excel, LibreOffice and Python's `utf-8-sig` all read it right. Cells that a spreadsheet
would run as a formula are defused.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures.headers import Accept

import i18n
from i18n import N_
from server.errors import request_lang

#: The media type as given to Litestar, which adds `; charset=utf-8` to `text/*` itself (giving
#: it here too made the header say the charset twice).
CSV_MEDIA_TYPE = "text/csv"
BOM = "\ufeff"


class Format(enum.StrEnum):
    """Response format."""

    JSON = "json"
    CSV = "csv"


#: Column labels by field name, shared by every export.
LABELS: dict[str, str] = {
    "period_start": N_("Period"),
    "type": N_("Type"),
    "incident_type": N_("Incident type"),
    "level": N_("Level"),
    "count": N_("Count"),
    "unit_kind": N_("Unit kind"),
    "unit_id": N_("Unit"),
    "unit_name": N_("Unit name"),
    "tasks": N_("Tasks"),
    "accepted": N_("Accepted"),
    "on_scene": N_("On scene"),
    "accept_p50_s": N_("Accept p50 (s)"),
    "accept_p90_s": N_("Accept p90 (s)"),
    "on_scene_p50_s": N_("On scene p50 (s)"),
    "on_scene_p90_s": N_("On scene p90 (s)"),
    "task_id": N_("Task"),
    "incident_id": N_("Incident"),
    "title": N_("Title"),
    "status": N_("Status"),
    "assignee_unit_id": N_("Assigned unit"),
    "assignee_user_id": N_("Assigned person"),
    "dispatched_at": N_("Dispatched at"),
    "deadline": N_("Deadline"),
    "escalated_at": N_("Escalated at"),
    "source": N_("Source"),
    "category": N_("Category"),
    "grid_id": N_("Grid"),
    "grid_name": N_("Grid name"),
    "total": N_("Total"),
    "open": N_("Open"),
    "rectification_assigned": N_("Rectification assigned"),
    "rectified": N_("Rectified"),
    "closed": N_("Closed"),
    "overdue": N_("Overdue"),
    "rectification_rate": N_("Rectification rate"),
    "enterprise_id": N_("Enterprise"),
    "enterprise_name": N_("Enterprise name"),
    "week": N_("Week"),
    "due": N_("Checks due"),
    "done": N_("Checks done"),
    "late": N_("Done late"),
    "submitted": N_("Submitted"),
    "missed": N_("Missed"),
    "failed_items": N_("Failed items"),
    "completion_rate": N_("Completion rate"),
    "id": N_("Id"),
    "at": N_("Time"),
    "actor_id": N_("Actor"),
    "action": N_("Action"),
    "entity": N_("Record type"),
    "entity_id": N_("Record"),
    "area_id": N_("Area"),
    "detail": N_("Detail"),
}


_REFUSED = re.compile(r";\s*q\s*=\s*0(\.0{0,3})?\s*(;|$)", re.I)


def wants_csv(request: Request[Any, Any, Any], fmt: Format | None) -> bool:
    """CSV when `format=csv`, or when no format is named and `Accept` prefers text/csv to JSON
    (RFC 9110 q-values; a tie goes to the type listed first, JSON when neither is named)."""
    if fmt is not None:
        return fmt is Format.CSV
    return prefers_csv(request.headers.get("accept", ""))


def prefers_csv(accept: str) -> bool:
    """Whether an `Accept` header prefers text/csv to application/json."""
    # `q=0` means "not this one" (Litestar's Accept would still match it).
    acceptable = ",".join(p for p in accept.split(",") if p.strip() and not _REFUSED.search(p))
    choice = Accept(acceptable).best_match(["application/json", CSV_MEDIA_TYPE], "application/json")
    return choice == CSV_MEDIA_TYPE


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = msgspec.json.encode(value).decode()
    # A spreadsheet runs a cell that starts like a formula; user text (titles) must not.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(
    rows: Iterable[msgspec.Struct | Mapping[str, Any]], fields: Sequence[str], lang: str
) -> str:
    """CSV text: a header row of `fields` labelled in `lang`, then one line per row (times ISO
    8601 UTC, empty cells for None, objects as JSON, formulas defused)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([i18n.gettext(lang, LABELS[f]) if f in LABELS else f for f in fields])
    for row in rows:
        plain = msgspec.to_builtins(row)
        writer.writerow([_cell(plain.get(f)) for f in fields])
    return out.getvalue()


def export_lang(request: Request[Any, Any, Any]) -> str:
    """The language of a download: the one the request asks for, else the signed-in
    person's saved language (a script or a spreadsheet's web query sends none), else
    English as for every answer."""
    if request.headers.get("accept-language"):
        return request_lang(request)
    saved = getattr(request.scope.get("user"), "language", None)
    return saved if saved in i18n.LANGS else request_lang(request)


def csv_response(
    request: Request[Any, Any, Any],
    rows: Iterable[msgspec.Struct | Mapping[str, Any]],
    fields: Sequence[str],
    name: str,
) -> Response[Any]:
    """A CSV download named `name`.csv, headed in the request's language (`Accept-Language`;
    without one, the reader's saved language), with a BOM."""
    lang = export_lang(request)
    body = (BOM + to_csv(rows, fields, lang)).encode("utf-8")
    return Response(
        body,
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{name}.csv"',
            "Content-Language": lang.replace("_", "-"),
            "Vary": "Accept, Accept-Language",
        },
    )


def answer(
    request: Request[Any, Any, Any],
    fmt: Format | None,
    rows: Sequence[msgspec.Struct],
    row_type: type[msgspec.Struct],
    name: str,
) -> Response[Any]:
    """The rows as JSON, or as a CSV download (see `wants_csv`)."""
    if wants_csv(request, fmt):
        return csv_response(request, rows, row_type.__struct_fields__, name)
    return Response(msgspec.to_builtins(list(rows)))
