"""Every marked string has Chinese; language negotiation follows RFC 9110 q-values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import i18n

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "sync", "server", "media", "push", "mobile", "i18n")
KEYWORDS = {
    "N_": None,
    "_": None,
    "gettext": (2,),
    "ngettext": (2, 3),  # i18n.ngettext(lang, singular, plural, n)
    "N_plural": (1, 2),
    "n_": (1, 2),  # the app's tr.n_(singular, plural, n)
}
METHOD_MAP = [("**.py", "python"), ("**.kv", "python")]


def extracted(folder: Path, plurals: bool | None = None) -> dict[str, str]:
    """msgid -> where it was found, for every string marked in `folder` (a singular and
    plural pair by its singular, the catalogue's key); `plurals` True or False keeps only
    pairs or only single strings."""
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(folder), method_map=METHOD_MAP, keywords=KEYWORDS
    ):
        pair = isinstance(message, tuple)
        msgid = message[0] if pair else message
        if msgid and plurals in (None, pair):
            found.setdefault(msgid, f"{folder.name}/{filename}:{lineno}")
    return found


# a count followed by an English plural noun: "{n} photos", "{done}/{total} photos",
# "{n} failed items" (not a unit: "{n} s ago", "{kb} KB"; not a verb: "{record} is retired")
VERBS = r"(?:is|was|has|does|needs|takes|belongs|goes)\b"
COUNTED_NOUN = re.compile(r"\{\w+\}(?:/\{\w+\})?\s+(?!" + VERBS + r")(?:[a-z-]+\s+)?[a-z-]+s\b")


def untranslated(messages: dict[str, str], lang: str = "zh_CN") -> list[str]:
    """The marked messages the `lang` catalogue does not translate (missing, empty or fuzzy)."""
    po = i18n.LOCALE_DIR / lang / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with po.open("rb") as fh:
        catalog = read_po(fh)
    missing = []
    for msgid, where in sorted(messages.items()):
        entry = catalog.get(msgid)
        strings = entry.string if entry is not None else None
        if isinstance(strings, tuple | list):
            ok = all(strings)
        else:
            ok = bool(strings)
        if entry is None or not ok or entry.fuzzy:
            missing.append(f"{where}: {msgid!r}")
    return missing


def test_every_marked_string_has_chinese() -> None:
    messages: dict[str, str] = {}
    for package in PACKAGES:
        messages.update(extracted(ROOT / package))
    assert untranslated(messages) == []


def test_a_count_with_a_noun_is_a_plural_pair() -> None:
    """ "1 self-checks due": a text whose count is followed by a noun has a singular and a
    plural form (gettext's ngettext: `N_plural`, `tr.n_`, `ngettext`), not one string."""
    single: dict[str, str] = {}
    for package in ("mobile", "i18n"):
        single.update(extracted(ROOT / package, plurals=False))
    counted = sorted(f"{where}: {m!r}" for m, where in single.items() if COUNTED_NOUN.search(m))
    assert counted == []


def test_plural_forms_in_english_and_chinese() -> None:
    from mobile.core import i18n as core_i18n

    forms = [i18n.ngettext("en", "{n} photo", "{n} photos", n).format(n=n) for n in (0, 1, 2)]
    assert forms == ["0 photos", "1 photo", "2 photos"]
    assert i18n.ngettext("zh_CN", "{n} photo", "{n} photos", 1) == "{n} 张照片"  # one form
    assert i18n.ngettext("zh_CN", "{n} photo", "{n} photos", 5) == "{n} 张照片"
    sent = core_i18n.count_text("photos", 1, "en", done=0, total=1)
    assert sent == "0 of 1 photo sent"
    assert core_i18n.count_text("photos", 3, "zh_CN", done=2, total=3) == "照片 2/3 已发送"


def test_the_check_catches_a_string_without_chinese(tmp_path: Path) -> None:
    (tmp_path / "module.py").write_text(
        'from i18n import N_, gettext\nA = N_("A text nobody translated, 7f3a")\n'
        'B = gettext(lang, "Another one, 7f3b")\n'
    )
    messages = extracted(tmp_path)
    assert set(messages) == {"A text nobody translated, 7f3a", "Another one, 7f3b"}
    assert len(untranslated(messages)) == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh_CN"),
        ("zh-Hans-CN,zh;q=0.9", "zh_CN"),
        ("en-GB,en;q=0.8,zh;q=0.9", "en"),
        ("fr-FR, zh;q=0.5, en;q=0.4", "zh_CN"),
        ("en;q=0.2, zh-TW;q=0.8", "zh_CN"),
        ("de, fr", "en"),
        ("zh;q=0, en", "en"),
        ("*", "en"),
        ("zh;q=abc, en;q=0.1", "en"),
    ],
)
def test_negotiate(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected


def test_unknown_language_reads_the_english_source() -> None:
    assert i18n.gettext("fr", "Not found") == "Not found"
    assert i18n.normalize("pt-BR") == i18n.DEFAULT_LANG
