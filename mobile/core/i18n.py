"""Words for every text the core produces (refusal reasons, outbox states, sign-out notes,
notifications it builds), in the shared gettext catalogue `i18n/` (English source strings,
Chinese in `i18n/locale/zh_CN/LC_MESSAGES/liandong.po`). The Kivy app reads the same catalogue.

Machine-readable parts (the refusal's `code` and `rule`) are never translated; the phone
turns them into words here. The rule is the precise reason and is looked up first, then the
closed `code`; a rule this phone does not know yet (a newer server) shows the server's own
`message`, so nothing is ever shown as a bare "failed". The app starts in Chinese.
"""

from __future__ import annotations

import i18n as catalogue
from i18n import N_, N_plural

DEFAULT_LANG = catalogue.DEFAULT_LANG
LANGS = catalogue.LANGS

# rule or code -> English source string (translated through the catalogue)
REASONS: dict[str, str] = {
    # rules (the REST problem codes)
    "reason_required": N_("A reason is required"),
    "evidence_required": N_("After-photos are required"),
    "illegal_transition": N_("Not allowed in the record's current state"),
    "not_assignee": N_("The task is no longer assigned to you"),
    "use_task_step": N_("A task changes only through its steps"),
    "use_hazard_step": N_("A hazard's status changes only by steps"),
    "step_final": N_("A sent step cannot be changed"),
    "submission_final": N_("A submitted self-check cannot be changed"),
    "week_taken": N_("This week's self-check was already submitted"),
    "not_editable": N_("This cannot change after the report"),
    "unknown_photo": N_("The photo is not known to the server"),
    "location_required": N_("No position fix"),
    "assignee_required": N_("Name one organisation to rectify"),
    "being_sent": N_("Being sent: edit it when sending is done"),
    "invalid": N_("The input is not acceptable"),
    "validation_error": N_("The input is malformed"),
    # closed codes (schemas.sync.Reason)
    "forbidden": N_("You are not allowed to do this"),
    "read_only": N_("This record is read-only"),
    "server_owned": N_("This field is kept by the server"),
    "invalid_value": N_("A value is not acceptable"),
    "unknown_entity": N_("The server does not know this kind of record"),
    "unknown_field": N_("The server does not know this field"),
    "not_found": N_("Not found, or not yours to see"),
    "not_deletable": N_("This record cannot be deleted"),
    "rule": N_("Refused by a business rule"),
    # photo refusals (docs/media.md)
    "unsupported_type": N_("Unsupported image type"),
    "type_mismatch": N_("The image type does not match its content"),
    "too_large": N_("The image is too large"),
    "too_many_pixels": N_("The image has too many pixels"),
    "corrupt": N_("The image is damaged"),
    "sha256_mismatch": N_("The photo arrived damaged"),
}

# a state or message key -> English source string with `{placeholders}`
STATES: dict[str, str] = {
    "waiting": N_("Waiting"),
    "sending": N_("Sending"),
    "sent": N_("Sent"),
    "refused": N_("Refused"),
    # the background sender's state (mobile.core.background.LinkState)
    "online": N_("Online"),
    "offline": N_("Offline: items wait on the phone"),
    "backing_off": N_("Server busy: trying again in {seconds} s"),
    "upgrade_required": N_("Update the app to keep sending"),
    "sign_in_again": N_("Sign in again to keep sending"),
    "data_used": N_("Data used: {kb} KB sent, {kb_in} KB received"),
    # drafts (mobile.core.drafts)
    "draft_offer": N_("An unfinished form was saved {when}: continue it?"),
}


# a message key -> its singular and plural English source (a count in it: `count_text`)
PLURALS: dict[str, tuple[str, str]] = {
    "photos": N_plural("{done} of {total} photo sent", "{done} of {total} photos sent"),
    "unsent_kept": N_plural(
        "{n} unsent item stays on the phone and is sent at your next sign-in",
        "{n} unsent items stay on the phone and are sent at your next sign-in",
    ),
}


def reason(rule: str | None, code: str | None, message: str = "", lang: str = DEFAULT_LANG) -> str:
    """Words for a refusal: by `rule`; a rule this phone does not know yet (a newer server)
    shows the `code`'s words followed by the server's `message`."""
    if rule and rule in REASONS:
        return catalogue.gettext(lang, REASONS[rule])
    general = catalogue.gettext(lang, REASONS.get(code or "", REASONS["rule"]))
    return f"{general}: {message}" if message else general


def text(key: str, lang: str = DEFAULT_LANG, **values: object) -> str:
    """A state or message of the core in `lang`, with `{placeholders}` filled."""
    return catalogue.gettext(lang, STATES[key]).format(**values)


def count_text(key: str, n: int, lang: str = DEFAULT_LANG, **values: object) -> str:
    """A message with a count in it, in the form `n` takes in `lang` ("1 photo", "2 photos";
    Chinese has one form), with `{n}` and the other `{placeholders}` filled."""
    singular, plural = PLURALS[key]
    return catalogue.ngettext(lang, singular, plural, n).format(n=n, **values)
