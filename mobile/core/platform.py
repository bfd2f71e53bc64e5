"""The phone's platform parts behind small interfaces, and the factory that picks them.

Interface: desktop and tests / Android (`mobile.core.android`, unverified on a device):

- `geo.Geolocator`: `FixedGeolocator`, `TrackGeolocator` / `AndroidGeolocator`
  (`LocationManager` updates on the main looper, kept alive by the foreground service);
- `camera.Camera`: `FileCamera` / `AndroidCamera` (`ACTION_IMAGE_CAPTURE` with a
  `FileProvider` `content://` URI);
- `Notifier`: `RecordingNotifier` / `AndroidNotifier` (a channel, `Notification.Builder`, a
  tap opens the record through the `PendingIntent`'s extras);
- `secret_store.SecretStore`: `FileSecretStore` (0600) / `KeystoreSecretStore` (AES-GCM
  under a key in `AndroidKeyStore`);
- `ForegroundService`: `NoService` / `AndroidForegroundService` (the python-for-android
  service of the location type);
- `background.Connectivity`: `AlwaysOnline` / `AndroidConnectivity` (`ConnectivityManager`,
  validated internet).

`platform_parts(data_dir)` returns the set for the platform the code runs on; `jnius` is
imported only inside `mobile.core.android`, and only when running on Android.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mobile.core.background import AlwaysOnline, Connectivity
from mobile.core.camera import Camera, FileCamera
from mobile.core.geo import Geolocator
from mobile.core.secret_store import FileSecretStore, SecretStore


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification the phone shows. `data` is what a tap hands back to
    `BackgroundSync.open_from_notification` (the push's data: `task_id`, `hazard_id`, ...);
    `tag` replaces an earlier notification with the same tag (the push's `event_id`)."""

    tag: str
    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)
    channel: str = "tasks"  # "tasks" rings (new task, warnings); "updates" is quiet
    urgent: bool = True


class Notifier(Protocol):
    """Shows notifications."""

    def notify(self, note: Notification) -> None:
        """Show (or replace, by `tag`) a notification."""
        ...

    def cancel(self, tag: str) -> None:
        """Remove a notification (the record was opened)."""
        ...


class ForegroundService(Protocol):
    """Keeps the process alive with a visible notification while fixes must keep coming (a
    responder en route with the screen locked): Android's foreground service of the location
    type."""

    def start(self, title: str, text: str) -> None:
        """Start (or update) the service with its ongoing notification."""
        ...

    def stop(self) -> None:
        """Stop the service."""
        ...

    @property
    def running(self) -> bool:
        """True while started."""
        ...


class RecordingNotifier:
    """Desktop and tests: keeps what would be shown, newest last, replacing by tag."""

    def __init__(self) -> None:
        self.shown: dict[str, Notification] = {}

    def notify(self, note: Notification) -> None:
        """Keep it (replacing one with the same tag)."""
        self.shown.pop(note.tag, None)
        self.shown[note.tag] = note

    def cancel(self, tag: str) -> None:
        """Drop it."""
        self.shown.pop(tag, None)


class NoService:
    """Desktop: processes are not killed for being in the background; records start/stop."""

    def __init__(self) -> None:
        self._running = False
        self.texts: list[tuple[str, str]] = []

    def start(self, title: str, text: str) -> None:
        """Remember it runs."""
        self._running = True
        self.texts.append((title, text))

    def stop(self) -> None:
        """Remember it stopped."""
        self._running = False

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._running


@dataclass(slots=True)
class PlatformParts:
    """The adapters a `PhoneCore` and the app use on this platform."""

    secrets: SecretStore
    notifier: Notifier
    service: ForegroundService
    connectivity: Connectivity
    camera: Camera | None = None
    geolocator: Geolocator | None = None


def on_android() -> bool:
    """True inside a python-for-android app."""
    return "ANDROID_ARGUMENT" in os.environ or hasattr(sys, "getandroidapilevel")


def platform_parts(data_dir: Path) -> PlatformParts:
    """The adapters for the platform this runs on (Android's import `jnius`)."""
    if on_android():  # pragma: no cover - needs a device
        from mobile.core.android import android_parts

        return android_parts(data_dir)
    return PlatformParts(
        secrets=FileSecretStore(data_dir / "secrets.json"),
        notifier=RecordingNotifier(),
        service=NoService(),
        connectivity=AlwaysOnline(),
        camera=FileCamera(),
        geolocator=None,
    )
