"""Every marked string has Chinese; language negotiation follows RFC 9110 q-values."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import i18n

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "sync", "server", "media", "push", "mobile", "i18n")
KEYWORDS = {"N_": None, "_": None, "gettext": (2,), "ngettext": (2, 3)}
METHOD_MAP = [("**.py", "python"), ("**.kv", "python")]


def extracted(folder: Path) -> dict[str, str]:
    """msgid -> where it was found, for every string marked in `folder`."""
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(folder), method_map=METHOD_MAP, keywords=KEYWORDS
    ):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"{folder.name}/{filename}:{lineno}")
    return found


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
