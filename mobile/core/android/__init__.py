"""Android adapters behind the core's interfaces (unverified on a device: see README).

Every Java call goes through a `Bridge` (`bridge.py`): on a phone `JniusBridge`, which
imports `jnius` and `android` (python-for-android) when it is made, and only then; in tests a
recorded stand-in of the same calls. Nothing in this package imports `jnius` at import time,
so the core imports it on any platform.

Public surface (the app's buildozer.spec and screens rely on these names):
`android_parts(data_dir, bridge=None)`, `AndroidGeolocator`, `AndroidCamera`,
`AndroidNotifier`, `KeystoreSecretStore`, `AndroidForegroundService`, `AndroidConnectivity`,
`FILE_PROVIDER_AUTHORITY_SUFFIX`, `SERVICE_NAME`, `EXTRA_DATA`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mobile.core.android.adapters import (
    EXTRA_DATA,
    FILE_PROVIDER_AUTHORITY_SUFFIX,
    SERVICE_NAME,
    AndroidCamera,
    AndroidConnectivity,
    AndroidForegroundService,
    AndroidGeolocator,
    AndroidNotifier,
    KeystoreSecretStore,
)
from mobile.core.android.bridge import Bridge

if TYPE_CHECKING:
    from mobile.core.platform import PlatformParts

__all__ = [
    "EXTRA_DATA",
    "FILE_PROVIDER_AUTHORITY_SUFFIX",
    "SERVICE_NAME",
    "AndroidCamera",
    "AndroidConnectivity",
    "AndroidForegroundService",
    "AndroidGeolocator",
    "AndroidNotifier",
    "Bridge",
    "KeystoreSecretStore",
    "android_parts",
]


def android_parts(data_dir: Path, bridge: Bridge | None = None) -> PlatformParts:
    """The Android adapters, sharing one bridge (the real one unless given)."""
    from mobile.core.platform import PlatformParts

    if bridge is None:  # pragma: no cover - needs a device
        from mobile.core.android.bridge import JniusBridge

        bridge = JniusBridge()
    return PlatformParts(
        secrets=KeystoreSecretStore(bridge, data_dir / "secrets.bin"),
        notifier=AndroidNotifier(bridge),
        service=AndroidForegroundService(bridge),
        connectivity=AndroidConnectivity(bridge),
        camera=AndroidCamera(bridge),
        geolocator=AndroidGeolocator(bridge),
    )
