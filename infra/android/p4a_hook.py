"""python-for-android build hook (buildozer.spec: `p4a.hook`): declares the app's FileProvider.

p4a has no option for a `<provider>` inside `<application>`, so before the APK is assembled
this adds one (authority `<package>.fileprovider`, the suffix `mobile.core.android` uses) with
its paths (`android.res_xml = infra/android/file_paths.xml`). Unverified on a device: the APK
is not built on these machines; tests/unit/test_buildozer_spec.py tests `add_provider`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROVIDER = """
        <provider
            android:name="androidx.core.content.FileProvider"
            android:authorities="{package}.fileprovider"
            android:exported="false"
            android:grantUriPermissions="true">
            <meta-data
                android:name="android.support.FILE_PROVIDER_PATHS"
                android:resource="@xml/file_paths" />
        </provider>
"""


def add_provider(manifest: str, package: str) -> str:
    """The manifest with the FileProvider inside `<application>` (once)."""
    if "androidx.core.content.FileProvider" in manifest:
        return manifest
    head, sep, tail = manifest.rpartition("</application>")
    if not sep:
        raise ValueError("no </application> in the manifest")
    return head + PROVIDER.format(package=package) + sep + tail


def before_apk_assemble(toolchain: Any) -> None:  # pragma: no cover - runs inside p4a
    """p4a calls this with the build's toolchain once the dist is ready."""
    dist = Path(toolchain._dist.dist_dir)
    manifest = dist / "src" / "main" / "AndroidManifest.xml"
    text = manifest.read_text("utf-8")
    package = toolchain.args.package
    manifest.write_text(add_provider(text, package), "utf-8")
