"""The app's Chinese font covers every character the app can show, and ships with its licence.

Re-runs the check of `infra/subset_font.py`: a new text with a character outside the shipped
subset fails here until the font is made again.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("subset_font", ROOT / "infra/subset_font.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


font = _script()
needs_source = pytest.mark.skipif(
    not font.SOURCE.exists(), reason="fonts-noto-cjk is not installed (CI installs it)"
)


def test_font_and_licence_ship_with_the_app() -> None:
    assert font.FONT.stat().st_size > 1_000_000
    licence = (font.FONT.parent / "OFL.txt").read_text("utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence


def test_font_covers_gb2312_and_every_character_the_app_uses() -> None:
    have = font.covered()
    assert len(font.gb2312()) > 7000
    assert {"联", "动", "隐", "患", "预", "警", "蓝", "黄", "橙", "红", "（", "）", "·"} <= have
    lacking = font.required() - have
    # the source has no glyph for a handful of GB 2312 symbols; nothing the app uses is lacking
    assert not (lacking & font.used_chars()), sorted(lacking & font.used_chars())[:20]


@needs_source
def test_check_passes_and_catches_a_new_character(tmp_path: Path) -> None:
    assert font.missing() == set()
    # a catalogue with a character outside GB 2312 (龘, U+9F98) that the source font has
    po = tmp_path / "i18n/locale/zh_CN/LC_MESSAGES/liandong.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid "x"\nmsgstr "龘"\n', "utf-8")
    (tmp_path / "mobile").mkdir()
    shutil.copy(ROOT / "mobile/ui.kv", tmp_path / "mobile/ui.kv")
    assert font.missing(root=tmp_path) == {"龘"}
