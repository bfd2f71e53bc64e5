"""How each notification reads: one `Notice` in, one `PushMessage` per recipient language out.

The server decides *who* receives a notice (`server.notify`: audiences need the database);
this module decides *what* they read, and is pure: a notice kind has a title and a body in the
shared gettext catalogue (`i18n`, source strings English), filled with the notice's `params`
(people's own words, such as a hazard's description or a reopening reason, stay as typed).

Every message carries, whatever the language, the machine-readable parts the phone acts on:
`data.kind`, `data.event_id` (the phone drops a duplicate it has shown), and the record to open
(`data.record` and `data.record_id`, e.g. `hazard` and its id). A visible notice has a
notification `title` and `body`; a data-only one (task assignments: the app decides how to
ring) carries the same texts in `data.notice_title` and `data.notice_body`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import msgspec

import i18n
from i18n import N_
from push.base import PushMessage

__all__ = ["TEXTS", "VALUE_TEXTS", "Notice", "build", "colour_text", "kinds"]

#: kind -> (title, body): the English source of each notification's texts. `{name}` fields are
#: filled from `Notice.params`; a kind's title and body may use any of them.
TEXTS: Final[Mapping[str, tuple[str, str]]] = {
    # tasks (dispatch)
    "task.assigned": (N_("New task: {title}"), N_("Priority {priority}. Open it to accept.")),
    "task.cancelled": (N_("Task cancelled: {title}"), N_("Dispatch cancelled this task.")),
    "task.declined": (
        N_("Task declined: {title}"),
        N_("The unit declined; choose another unit."),
    ),
    "task.escalated": (
        N_("Task not accepted: {title}"),
        N_("Nobody accepted this task in time; reassign it."),
    ),
    # the hazard loop
    "hazard.reported": (
        N_("New hazard in your grid"),
        N_("{category_text} ({severity_text}): {description}"),
    ),
    "hazard.rectification_assigned": (
        N_("Hazard to rectify by {deadline}"),
        N_("{category_text}: {description}"),
    ),
    "hazard.deadline_soon": (
        N_("Rectification due by {deadline}"),
        N_("{category_text}: {description}"),
    ),
    "hazard.rectified": (
        N_("Rectified: please re-inspect"),
        N_("{category_text}: {description}"),
    ),
    "hazard.reopened": (
        N_("Hazard reopened: rectify again"),
        N_("Reason: {reason}"),
    ),
    "hazard.overdue": (
        N_("Rectification overdue"),
        N_("{category_text}: {description}"),
    ),
    # self-checks
    "check.due_soon": (
        N_("Weekly safety check due {due_on}"),
        N_("{template}: submit it by the end of {due_on}."),
    ),
    "check.missed": (
        N_("Weekly safety check missed"),
        N_("{enterprise} did not submit {template} for week {week}."),
    ),
    # public warnings (issue 15): residents inside the area and staff; params come from the
    # warning's own texts (its English ones in `localized["en"]`), `colour` shows as its level
    "warning.alert": (N_("{event}: {colour_text}"), N_("{headline}\n{instruction}")),
    "warning.update": (N_("Updated: {event}: {colour_text}"), N_("{headline}\n{instruction}")),
    "warning.cancel": (N_("Cancelled: {event}: {colour_text}"), N_("{headline}\n{instruction}")),
}

#: Enum values shown inside texts: the machine value stays in `data`, the reader sees these.
VALUE_TEXTS: Final[Mapping[str, str]] = {
    "severity:low": N_("low severity"),
    "severity:medium": N_("medium severity"),
    "severity:high": N_("high severity"),
    "severity:critical": N_("critical severity"),
    "category:fire": N_("fire hazard"),
    "category:electrical": N_("electrical hazard"),
    "category:gas": N_("gas hazard"),
    "category:hazardous_chemicals": N_("hazardous chemicals"),
    "category:structural": N_("structural hazard"),
    "category:flood": N_("flood hazard"),
    "category:landslide": N_("landslide hazard"),
    "category:road": N_("road hazard"),
    "category:other": N_("other hazard"),
    "colour:blue": N_("Blue warning"),
    "colour:yellow": N_("Yellow warning"),
    "colour:orange": N_("Orange warning"),
    "colour:red": N_("Red warning"),
    "colour:": N_("Warning"),
}


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One notification, before it is put in anyone's language.

    - `kind`: a key of `TEXTS` (machine-readable; also `data.kind`);
    - `event_id`: unique per event; the outbox sends it once per device (at most 128 chars);
    - `record`, `record_id`: what the phone opens (entity name and id);
    - `params`: the values the texts name; `severity` and `category` values are also shown
      translated as `severity_text` and `category_text`;
    - `data`: further machine-readable fields for the app (strings);
    - `visible`: False for data-only messages (the app shows them itself).
    """

    kind: str
    event_id: str
    record: str
    record_id: str
    params: dict[str, str] = msgspec.field(default_factory=dict)
    data: dict[str, str] = msgspec.field(default_factory=dict)
    visible: bool = True
    ttl_seconds: int = 86_400
    priority: Literal["high", "normal"] = "high"
    # Per-language values overriding `params` (a warning's English event and headline).
    localized: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    # What replaces what at the push service (Web Push Topic, FCM collapse key); the event id
    # when unset. A warning's messages share their chain's id.
    collapse_key: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TEXTS:
            raise ValueError(f"no texts for notice kind {self.kind!r}")
        if len(self.event_id) > 128:
            raise ValueError("event_id is longer than the outbox keeps (128)")


def kinds() -> frozenset[str]:
    """Every notice kind this module can build."""
    return frozenset(TEXTS)


def colour_text(colour: str | None) -> str:
    """A warning level's name (English source; `i18n.gettext` shows it): "Red warning", or
    "Warning" for a message without a colour."""
    return VALUE_TEXTS.get(f"colour:{colour or ''}", VALUE_TEXTS["colour:"])


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:  # a text naming a value the notice lacks
        return ""


def _shown(lang: str, params: Mapping[str, str]) -> _Fields:
    fields = _Fields(params)
    for name in ("severity", "category", "colour"):
        value = params.get(name)
        if value is not None:
            source = VALUE_TEXTS.get(f"{name}:{value}", value)
            fields[f"{name}_text"] = i18n.gettext(lang, source)
    return fields


def texts(notice: Notice, lang: str) -> tuple[str, str]:
    """The notice's title and body in `lang` (one of `i18n.LANGS`; others read English)."""
    title, body = TEXTS[notice.kind]
    fields = _shown(lang, {**notice.params, **notice.localized.get(lang, {})})
    return (
        i18n.gettext(lang, title).format_map(fields)[:200],
        i18n.gettext(lang, body).format_map(fields)[:1000],
    )


def build(notice: Notice, lang: str) -> PushMessage:
    """The message one recipient reading `lang` gets."""
    title, body = texts(notice, lang)
    data = {
        **notice.data,
        "event_id": notice.event_id,
        "kind": notice.kind,
        "record": notice.record,
        "record_id": notice.record_id,
        "lang": lang,
    }
    if not notice.visible:
        data["notice_title"] = title
        data["notice_body"] = body
    return PushMessage(
        data=data,
        title=title if notice.visible else None,
        body=body if notice.visible else None,
        collapse_key=notice.collapse_key or notice.event_id[:64],
        ttl_seconds=notice.ttl_seconds,
        priority=notice.priority,
    )
