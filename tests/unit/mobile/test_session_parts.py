"""Secrets on desktop are owner-only; the device id is made once per installation; every
reason the core shows has Chinese (in the shared catalogue) and English, placeholders kept."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import i18n as catalogue
from mobile.core import i18n
from mobile.core.secret_store import FileSecretStore
from mobile.core.session import device_id


def test_file_secret_store_is_owner_only(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path / "secrets" / "tokens.json")
    store.put("tokens", "abc")
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600
    assert FileSecretStore(store.path).get("tokens") == "abc"
    store.delete("tokens")
    assert store.get("tokens") is None and not store.path.exists()


def test_device_id_is_made_once(tmp_path: Path) -> None:
    first = device_id(tmp_path)
    assert first.startswith("app-") and device_id(tmp_path) == first
    assert device_id(tmp_path / "reinstalled") != first  # a new installation, a new device


def test_every_reason_and_state_has_chinese_and_english() -> None:
    for key, en in {**i18n.REASONS, **i18n.STATES}.items():
        zh = catalogue.gettext("zh_CN", en)
        assert catalogue.gettext("en", en) == en, key
        assert zh != en and any("\u4e00" <= ch <= "\u9fff" for ch in zh), key
        assert sorted(re.findall(r"{\w+}", zh)) == sorted(re.findall(r"{\w+}", en)), key
    for key, (one, many) in i18n.PLURALS.items():
        zh = catalogue.ngettext("zh_CN", one, many, 2)
        assert catalogue.ngettext("en", one, many, 1) == one, key
        assert catalogue.ngettext("en", one, many, 2) == many, key
        assert zh != many and any("\u4e00" <= ch <= "\u9fff" for ch in zh), key
        assert sorted(re.findall(r"{\w+}", zh)) == sorted(re.findall(r"{\w+}", many)), key
    assert i18n.count_text("photos", 3, "zh_CN", done=2, total=3) == "照片 2/3 已发送"
    assert i18n.reason("reason_required", "rule", lang="en") == "A reason is required"
    newer = i18n.reason("a_rule_from_a_newer_server", "rule", "server words", lang="en")
    assert newer == "Refused by a business rule: server words"
    assert i18n.reason(None, "forbidden") == "您没有权限执行此操作"
