"""Make the app's Chinese font: Noto Sans CJK SC (OFL 1.1) subset to the characters the app can
show.

Kivy's own Roboto has no Chinese glyphs, and the full Noto Sans CJK collection is 20 MB, so the
app ships a subset: every character of GB 2312 (the 6,763 common hanzi and its symbols), ASCII
and Latin-1, CJK and fullwidth punctuation, and every character used in the gettext catalogue,
the app's kv and Python files and the demo data. The source is Debian's `fonts-noto-cjk`
(`/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc`, face 2 is SC).

    .venv/bin/python infra/subset_font.py          # write mobile/assets/fonts/…
    .venv/bin/python infra/subset_font.py --check  # exit 1 when the font lacks a needed char

`tests/unit/test_app_font.py` runs the check, so a new Chinese text outside GB 2312 fails CI
until the font is made again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SC_FACE = 2  # JP, KR, SC, TC, HK, then the Mono faces
FONT = ROOT / "mobile" / "assets" / "fonts" / "NotoSansSC-Liandong.otf"
#: files whose characters the app shows (besides user data, which GB 2312 covers mostly)
TEXT_SOURCES = (
    "i18n/locale/*/LC_MESSAGES/*.po",
    "mobile/**/*.kv",
    "mobile/**/*.py",
    "server/demo.py",
    "tests/app/*.py",
)
EXTRA_RANGES = (
    (0x20, 0x7E),  # ASCII
    (0xA0, 0xFF),  # Latin-1
    (0x2010, 0x2027),  # dashes, quotes, ellipsis
    (0x2030, 0x203A),
    (0x2190, 0x2193),  # arrows
    (0x2460, 0x2473),  # circled numbers
    (0x3000, 0x303F),  # CJK punctuation
    (0xFF01, 0xFF5E),  # fullwidth forms
    (0xFFE0, 0xFFE5),
)


def gb2312() -> set[str]:
    """Every character GB 2312 encodes (rows 0xA1-0xF7, cells 0xA1-0xFE)."""
    chars: set[str] = set()
    for hi in range(0xA1, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.add(bytes((hi, lo)).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return chars


def used_chars(root: Path = ROOT) -> set[str]:
    """Non-ASCII characters in the catalogue, the app's kv/Python files and the demo data."""
    chars: set[str] = set()
    for pattern in TEXT_SOURCES:
        for path in sorted(root.glob(pattern)):
            chars.update(c for c in path.read_text("utf-8") if ord(c) > 0x7E)
    return chars


def required(root: Path = ROOT) -> set[str]:
    """What the font must cover (control and private-use characters excluded)."""
    chars = gb2312() | used_chars(root)
    for lo, hi in EXTRA_RANGES:
        chars.update(chr(c) for c in range(lo, hi + 1))
    return {c for c in chars if c.isprintable() or c == "\u3000"}


def covered(font: Path = FONT) -> set[str]:
    """Characters the shipped font has glyphs for."""
    from fontTools.ttLib import TTFont

    with TTFont(font, lazy=True) as f:
        return {chr(c) for c in f.getBestCmap()}


def make(out: Path = FONT, chars: Iterable[str] | None = None) -> int:
    """Write the subset; returns how many characters it covers."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    wanted = set(chars) if chars is not None else required()
    font = TTFont(SOURCE, fontNumber=SC_FACE, lazy=False)
    available = set(font.getBestCmap())
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.hinting = False  # phones render CJK unhinted; saves about a fifth
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in wanted if ord(c) in available))
    subsetter.subset(font)
    out.parent.mkdir(parents=True, exist_ok=True)
    font.save(out)
    return len(set(font.getBestCmap()))


def missing(font: Path = FONT, root: Path = ROOT) -> set[str]:
    """Needed characters the shipped font lacks but the source font has."""
    from fontTools.ttLib import TTFont

    need = required(root)
    with TTFont(SOURCE, fontNumber=SC_FACE, lazy=True) as src:
        available = {chr(c) for c in src.getBestCmap()}
    return (need & available) - covered(font)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the shipped font")
    args = parser.parse_args(argv)
    if args.check:
        lack = missing()
        if lack:
            print(f"{FONT.name} lacks {len(lack)} characters: {''.join(sorted(lack))[:80]}")
            print("run: .venv/bin/python infra/subset_font.py")
            return 1
        print(f"{FONT.name} covers every character the app needs")
        return 0
    n = make()
    print(f"wrote {FONT.relative_to(ROOT)}: {n} characters, {FONT.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
