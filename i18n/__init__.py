"""One gettext catalogue per language, shared by the server, push texts, exports and the app.

Source strings are English. `i18n/locale/<lang>/LC_MESSAGES/liandong.po` is the catalogue a
translator edits; `make setup` compiles it to `.mo` (Babel). A process that finds no `.mo`, or
one older than its `.po` (a fresh checkout, an edit not yet compiled), reads the `.po` itself,
so a missing build step never shows English to a Chinese reader.

Machine-readable parts (problem `type`, codes, field names, enum values) are never passed
through here. Mark a string for extraction where it is defined with `N_` and translate it where
it is shown with `gettext(lang, ...)`; a text with a count in it ("1 photo", "3 photos") is a
singular and plural pair, marked with `N_plural` and shown with `ngettext(lang, s, p, n)`.
`tests/unit/test_i18n.py` fails when a marked string has no Chinese.
"""

from __future__ import annotations

import gettext as _gettext
from functools import cache
from pathlib import Path
from typing import Final

LOCALE_DIR: Final = Path(__file__).parent / "locale"
DOMAIN: Final = "liandong"
LANGS: Final = ("zh_CN", "en")
#: what the app, pushes and exports use when the person has saved no preference
DEFAULT_LANG: Final = "zh_CN"
#: what the API answers in when a request names no language it knows (CONVENTIONS)
API_DEFAULT_LANG: Final = "en"

_ALIASES: Final = {
    "zh": "zh_CN",
    "zh_cn": "zh_CN",
    "zh_hans": "zh_CN",
    "zh_hans_cn": "zh_CN",
    "zh_sg": "zh_CN",
    "en": "en",
}


def N_(message: str) -> str:  # the gettext name for "mark now, translate later"
    """Mark a string for extraction without translating it here."""
    return message


def N_plural(singular: str, plural: str) -> tuple[str, str]:
    """Mark a count-bearing text (its singular and plural English source) for extraction;
    show it with `ngettext(lang, *pair, n)`."""
    return singular, plural


def normalize(lang: str | None, default: str = DEFAULT_LANG) -> str:
    """A language tag (`zh-CN`, `zh_Hans`, `en-GB`, `zh`) as one of `LANGS`, else `default`."""
    if not lang:
        return default
    key = lang.strip().replace("-", "_").lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith("zh"):
        return "zh_CN"
    if key.startswith("en"):
        return "en"
    return default


def negotiate(accept_language: str | None, default: str = API_DEFAULT_LANG) -> str:
    """The best of `LANGS` for an `Accept-Language` header (RFC 9110 q-values), else `default`."""
    if not accept_language:
        return default
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0 or not tag.strip() or tag.strip() == "*":
            continue
        lang = normalize(tag, default="")
        if lang and (best is None or (quality, -position) > (best[0], best[1])):
            best = (quality, -position, lang)
    return best[2] if best else default


@cache
def translations(lang: str) -> _gettext.NullTranslations:
    """The catalogue for `lang` (one of `LANGS`; anything else gets the English source)."""
    if lang not in LANGS:
        return _gettext.NullTranslations()
    folder = LOCALE_DIR / lang / "LC_MESSAGES"
    po, mo = folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"
    if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as fh:
            return _gettext.GNUTranslations(fh)
    if not po.exists():
        return _gettext.NullTranslations()
    return _compile_in_memory(po)


def _compile_in_memory(po: Path) -> _gettext.NullTranslations:
    import io

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as fh:
        catalog = read_po(fh)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def gettext(lang: str, message: str) -> str:
    """`message` (English source) in `lang`; the source itself where no translation exists."""
    return translations(lang).gettext(message)


def ngettext(lang: str, singular: str, plural: str, n: int) -> str:
    """The form of a count-bearing text for `n` in `lang` (gettext's plural rules from the
    catalogue's `Plural-Forms`: English has two forms, Chinese one); the English source's
    form for `n` where no translation exists."""
    return translations(lang).ngettext(singular, plural, n)
