"""buildozer.spec checked offline with buildozer's own parser and token check, and buildozer's
own source selection run into a scratch directory: what the APK would carry (the app's
packages, the font, the compiled catalogues, the kv files) and what it must not (the server,
tests, tools). The APK itself is not built here (the build downloads the SDK and NDK)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from buildozer import Buildozer

try:  # the names the core's Android adapters use
    from mobile.core.android import FILE_PROVIDER_AUTHORITY_SUFFIX
except ImportError:  # pragma: no cover - before the core's adapters are on this branch
    FILE_PROVIDER_AUTHORITY_SUFFIX = ".fileprovider"

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "buildozer.spec"


@pytest.fixture(scope="module")
def spec() -> Buildozer:
    return Buildozer(filename=str(SPEC))  # reads and runs check_configuration_tokens()


def test_token_check_passes_and_catches_a_broken_spec(spec: Buildozer, tmp_path: Path) -> None:
    assert spec.config.get("app", "package.name") == "liandong"
    broken = tmp_path / "buildozer.spec"
    text = SPEC.read_text("utf-8").replace("title = ", "#title = ", 1)
    broken.write_text(text, "utf-8")
    with pytest.raises(SystemExit):
        Buildozer(filename=str(broken))


def test_requirements_permissions_and_service(spec: Buildozer) -> None:
    reqs = {r.split("==")[0] for r in spec.config.getlist("app", "requirements")}
    assert {"python3", "kivy", "msgspec", "httpx", "pillow", "pyjnius", "sqlite3"} <= reqs
    perms = set(spec.config.getlist("app", "android.permissions"))
    assert {
        "INTERNET",
        "CAMERA",
        "ACCESS_FINE_LOCATION",
        "POST_NOTIFICATIONS",
        "FOREGROUND_SERVICE",
        "FOREGROUND_SERVICE_LOCATION",
        "FOREGROUND_SERVICE_DATA_SYNC",
    } <= perms
    # no service entry until a service process is wired (docs/app.md, Android)
    assert spec.config.getlist("app", "services", []) == []
    assert spec.config.getdefault("buildozer", "warn_on_root", "1") == "0"
    assert {"otf", "mo", "kv", "py"} <= set(spec.config.getlist("app", "source.include_exts"))
    for key in ("android.res_xml", "p4a.hook"):
        assert (ROOT / spec.config.get("app", key)).exists(), key


def test_buildozer_copies_the_app_and_nothing_else(spec: Buildozer, tmp_path: Path) -> None:
    spec.config.set("buildozer", "build_dir", str(tmp_path / "build"))
    spec.targetname = "android"
    spec._copy_application_sources()  # buildozer's own selection (include_exts, exclusions)
    app = Path(spec.app_dir)
    copied = {str(p.relative_to(app)) for p in app.rglob("*") if p.is_file()}
    must = {
        "main.py",
        "mobile/app.py",
        "mobile/gui.py",
        "mobile/ui.kv",
        "mobile/assets/fonts/NotoSansSC-Liandong.otf",
        "mobile/assets/fonts/OFL.txt",
        "mobile/core/phone.py",
        "i18n/__init__.py",
        "i18n/locale/zh_CN/LC_MESSAGES/liandong.mo",
        "i18n/locale/en/LC_MESSAGES/liandong.mo",
        "sync/store.py",
        "schemas/states.py",
    }
    kv = {str(p.relative_to(ROOT)) for p in (ROOT / "mobile").rglob("*.kv")}
    assert must | kv <= copied, sorted((must | kv) - copied)
    for banned in ("server/", "tests/", "push/", "media/", "infra/", "var/", "docs/", ".venv/"):
        assert not [c for c in copied if c.startswith(banned)], banned
    assert not [c for c in copied if c.endswith((".po", ".pyc", ".lock"))]
    # what the app imports at start is all there
    for module in ("mobile.gui", "mobile.screens.home", "mobile.core.phone"):
        assert module.replace(".", "/") + ".py" in copied or (
            module.replace(".", "/") + "/__init__.py" in copied
        ), module
    assert os.path.getsize(app / "mobile/assets/fonts/NotoSansSC-Liandong.otf") > 1_000_000


def test_the_build_hook_declares_the_file_provider() -> None:
    path = ROOT / "infra/android/p4a_hook.py"
    spec_ = importlib.util.spec_from_file_location("p4a_hook", path)
    assert spec_ is not None and spec_.loader is not None
    hook = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(hook)
    manifest = '<manifest><application android:label="x"><activity/></application></manifest>'
    out = hook.add_provider(manifest, "cn.liandong.liandong")
    assert 'android:authorities="cn.liandong.liandong.fileprovider"' in out
    assert out.index("<provider") < out.index("</application>")
    assert hook.add_provider(out, "cn.liandong.liandong") == out  # once
    assert FILE_PROVIDER_AUTHORITY_SUFFIX == ".fileprovider"
