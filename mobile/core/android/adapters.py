"""The Android adapters. Unverified on a device: each is tested against a recorded stand-in of
the Java calls it makes (tests/unit/mobile/test_android_adapters.py), which proves the calls
and their order, not that Android accepts them.

What the app's build must provide (buildozer.spec, the `app` helper's part):
- permissions `ACCESS_FINE_LOCATION`, `ACCESS_COARSE_LOCATION`, `CAMERA`, `POST_NOTIFICATIONS`
  (API 33+), `FOREGROUND_SERVICE`, `FOREGROUND_SERVICE_LOCATION` (API 34+), `INTERNET`,
  `ACCESS_NETWORK_STATE`; asked at run time where Android requires it;
- a python-for-android service named `SERVICE_NAME` (`services = Sync:service.py:foreground`)
  declared with `android:foregroundServiceType="location"`;
- an `androidx.core.content.FileProvider` with authority `<package>` +
  `FILE_PROVIDER_AUTHORITY_SUFFIX`, whose paths include the app's files directory
  (`<files-path name="data" path="." />`), and the `androidx.core:core` Gradle dependency.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import i18n as catalogue
from i18n import N_
from mobile.core.android.bridge import Bridge, to_bytes
from mobile.core.geo import Fix
from mobile.core.secret_store import FileSecretStore

FILE_PROVIDER_AUTHORITY_SUFFIX = ".fileprovider"
SERVICE_NAME = "Sync"  # python-for-android makes <package>.ServiceSync
EXTRA_DATA = "liandong.data"  # the intent extra a tapped notification carries (JSON)
ACTIVITY = "org.kivy.android.PythonActivity"
CAMERA_REQUEST = 0x4C44
RESULT_OK = -1  # android.app.Activity.RESULT_OK


class AndroidGeolocator:
    """Fixes from `LocationManager` (GPS, and the network provider for a quick coarse first
    fix), requested on the main looper as Android requires; the newest fix wins. Fixes keep
    coming with the screen locked while the foreground service runs. No Google services
    needed (phones without them are common here)."""

    PROVIDERS = ("gps", "network")

    def __init__(
        self, bridge: Bridge, *, min_time_ms: int = 1000, min_distance_m: float = 0.0
    ) -> None:
        self.bridge = bridge
        self.min_time_ms = min_time_ms
        self.min_distance_m = min_distance_m
        self._lock = threading.Lock()
        self._fix: Fix | None = None
        self._listener: Any = None
        self._manager: Any = None

    def _location_manager(self) -> Any:
        if self._manager is None:
            context = self.bridge.autoclass("android.content.Context")
            service = self.bridge.context.getSystemService(context.LOCATION_SERVICE)
            self._manager = self.bridge.cast("android.location.LocationManager", service)
        return self._manager

    def start(self) -> None:
        """Ask for updates (warm-up); the last known fix is used until a new one arrives."""
        if self._listener is not None:
            return
        manager = self._location_manager()
        for provider in self.PROVIDERS:
            known = manager.getLastKnownLocation(provider)
            if known is not None:
                self.on_location(known)
        self._listener = self.bridge.location_listener(self.on_location)
        looper = self.bridge.autoclass("android.os.Looper")

        def request() -> None:
            for provider in self.PROVIDERS:
                if manager.isProviderEnabled(provider):
                    manager.requestLocationUpdates(
                        provider,
                        self.min_time_ms,
                        self.min_distance_m,
                        self._listener,
                        looper.getMainLooper(),
                    )

        self.bridge.run_on_ui_thread(request)

    def stop(self) -> None:
        """Stop the updates (battery)."""
        if self._listener is None:
            return
        listener, self._listener = self._listener, None
        manager = self._location_manager()
        self.bridge.run_on_ui_thread(lambda: manager.removeUpdates(listener))

    def on_location(self, location: Any) -> None:
        """A `Location` from Android (the listener calls this on the main thread)."""
        accuracy = float(location.getAccuracy()) if location.hasAccuracy() else 10_000.0
        at = datetime.fromtimestamp(location.getTime() / 1000.0, UTC)
        fix = Fix(float(location.getLongitude()), float(location.getLatitude()), accuracy, at)
        with self._lock:
            if self._fix is None or fix.at >= self._fix.at:
                self._fix = fix

    def last_fix(self) -> Fix | None:
        """The newest fix, or None."""
        with self._lock:
            return self._fix


class AndroidCamera:
    """The phone's camera app through `ACTION_IMAGE_CAPTURE`, writing to a `content://` URI
    from our `FileProvider` (a `file://` URI crashes on Android 7+: FileUriExposedException,
    plyer#812). `capture` blocks its caller (call it off the UI thread) until the camera app
    returns, then answers the file, or None when the user cancelled."""

    def __init__(
        self,
        bridge: Bridge,
        *,
        authority_suffix: str = FILE_PROVIDER_AUTHORITY_SUFFIX,
        timeout_s: float = 900.0,
    ) -> None:
        self.bridge = bridge
        self.authority_suffix = authority_suffix
        self.timeout_s = timeout_s

    def capture(self, directory: Path) -> Path | None:
        """Take one photo into `directory`; None when cancelled (or no file came back)."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"capture-{uuid.uuid4().hex}.jpg"
        b = self.bridge
        context = b.context
        intent_cls = b.autoclass("android.content.Intent")
        media_store = b.autoclass("android.provider.MediaStore")
        provider = b.autoclass("androidx.core.content.FileProvider")
        java_file = b.autoclass("java.io.File")(str(target))
        uri = provider.getUriForFile(
            context, context.getPackageName() + self.authority_suffix, java_file
        )
        intent = intent_cls(media_store.ACTION_IMAGE_CAPTURE)
        intent.putExtra(media_store.EXTRA_OUTPUT, b.cast("android.os.Parcelable", uri))
        intent.addFlags(
            intent_cls.FLAG_GRANT_WRITE_URI_PERMISSION | intent_cls.FLAG_GRANT_READ_URI_PERMISSION
        )
        done = threading.Event()
        outcome: dict[str, int] = {}

        def on_result(request: int, result: int, _data: Any) -> None:
            if request == CAMERA_REQUEST:
                outcome["result"] = result
                done.set()

        b.on_activity_result(on_result)
        try:
            b.run_on_ui_thread(lambda: context.startActivityForResult(intent, CAMERA_REQUEST))
            done.wait(self.timeout_s)
        finally:
            b.unbind_activity_result(on_result)
        if outcome.get("result") == RESULT_OK and target.exists() and target.stat().st_size:
            return target
        target.unlink(missing_ok=True)  # cancelled: the camera app may leave an empty file
        return None


class AndroidNotifier:
    """Notifications on two channels ("tasks" rings, "updates" is quiet); a tap opens the app
    with the record's data in the intent (`EXTRA_DATA`), read back by `data_from_intent`."""

    CHANNELS = {"tasks": (N_("Tasks and warnings"), 4), "updates": (N_("Updates"), 2)}

    def __init__(self, bridge: Bridge, *, lang: str = catalogue.DEFAULT_LANG) -> None:
        self.bridge = bridge
        self.lang = lang
        self._made = False

    def _manager(self) -> Any:
        context = self.bridge.autoclass("android.content.Context")
        service = self.bridge.context.getSystemService(context.NOTIFICATION_SERVICE)
        manager = self.bridge.cast("android.app.NotificationManager", service)
        if not self._made:
            channel_cls = self.bridge.autoclass("android.app.NotificationChannel")
            for cid, (name, importance) in self.CHANNELS.items():  # importance: high, low
                words = catalogue.gettext(self.lang, name)
                manager.createNotificationChannel(channel_cls(cid, words, importance))
            self._made = True
        return manager

    def notify(self, note: Any) -> None:
        """Show `note` (a `mobile.core.platform.Notification`), replacing one with its tag."""
        b = self.bridge
        context = b.context
        manager = self._manager()
        intent_cls = b.autoclass("android.content.Intent")
        pending_cls = b.autoclass("android.app.PendingIntent")
        intent = intent_cls()
        intent.setClassName(context.getPackageName(), ACTIVITY)
        intent.putExtra(EXTRA_DATA, json.dumps(note.data, ensure_ascii=False))
        intent.setFlags(intent_cls.FLAG_ACTIVITY_SINGLE_TOP | intent_cls.FLAG_ACTIVITY_CLEAR_TOP)
        pending = pending_cls.getActivity(
            context,
            _request_code(note.tag),
            intent,
            pending_cls.FLAG_IMMUTABLE | pending_cls.FLAG_UPDATE_CURRENT,
        )
        builder = b.autoclass("android.app.Notification$Builder")(context, note.channel)
        builder.setSmallIcon(context.getApplicationInfo().icon)
        builder.setContentTitle(note.title)
        builder.setContentText(note.body)
        builder.setAutoCancel(True)
        builder.setContentIntent(pending)
        manager.notify(note.tag, 0, builder.build())

    def cancel(self, tag: str) -> None:
        """Remove the notification with `tag`."""
        self._manager().cancel(tag, 0)

    @staticmethod
    def data_from_intent(intent: Any) -> dict[str, str] | None:
        """The data of the notification that opened the app (from the activity's intent or
        `on_new_intent`), for `BackgroundSync.open_from_notification`; None otherwise."""
        if intent is None:
            return None
        raw = intent.getStringExtra(EXTRA_DATA)
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def _request_code(tag: str) -> int:
    """A stable PendingIntent request code per tag (distinct intents per notification)."""
    return zlib.crc32(tag.encode()) & 0x7FFFFFFF


class KeystoreSecretStore:
    """Secrets encrypted with AES-GCM under a key kept in `AndroidKeyStore` (it never leaves
    the keystore), stored in an owner-only file through `FileSecretStore`."""

    TRANSFORMATION = "AES/GCM/NoPadding"
    IV_BYTES = 12

    def __init__(self, bridge: Bridge, path: Path, *, alias: str = "liandong-secrets") -> None:
        self.bridge = bridge
        self.file = FileSecretStore(path)
        self.alias = alias

    def _key(self) -> Any:
        b = self.bridge
        keystore = b.autoclass("java.security.KeyStore").getInstance("AndroidKeyStore")
        keystore.load(None)
        if keystore.containsAlias(self.alias):
            return keystore.getKey(self.alias, None)
        props = b.autoclass("android.security.keystore.KeyProperties")
        spec = (
            b.autoclass("android.security.keystore.KeyGenParameterSpec$Builder")(
                self.alias, props.PURPOSE_ENCRYPT | props.PURPOSE_DECRYPT
            )
            .setBlockModes([props.BLOCK_MODE_GCM])
            .setEncryptionPaddings([props.ENCRYPTION_PADDING_NONE])
            .setKeySize(256)
            .build()
        )
        generator = b.autoclass("javax.crypto.KeyGenerator").getInstance(
            props.KEY_ALGORITHM_AES, "AndroidKeyStore"
        )
        generator.init(spec)
        return generator.generateKey()

    def _cipher(self) -> Any:
        return self.bridge.autoclass("javax.crypto.Cipher")

    def get(self, key: str) -> str | None:
        """The secret under `key`, or None."""
        sealed = self.file.get(key)
        if sealed is None:
            return None
        raw = base64.b64decode(sealed)
        cipher_cls = self._cipher()
        cipher = cipher_cls.getInstance(self.TRANSFORMATION)
        spec = self.bridge.autoclass("javax.crypto.spec.GCMParameterSpec")(
            128, raw[: self.IV_BYTES]
        )
        cipher.init(cipher_cls.DECRYPT_MODE, self._key(), spec)
        return to_bytes(cipher.doFinal(raw[self.IV_BYTES :])).decode()

    def put(self, key: str, value: str) -> None:
        """Encrypt and store `value` under `key`."""
        cipher_cls = self._cipher()
        cipher = cipher_cls.getInstance(self.TRANSFORMATION)
        cipher.init(cipher_cls.ENCRYPT_MODE, self._key())
        iv = to_bytes(cipher.getIV())
        sealed = to_bytes(cipher.doFinal(value.encode()))
        self.file.put(key, base64.b64encode(iv + sealed).decode())

    def delete(self, key: str) -> None:
        """Forget `key`."""
        self.file.delete(key)


class AndroidForegroundService:
    """Starts and stops the python-for-android service `SERVICE_NAME` (foreground, location
    type) whose ongoing notification keeps fixes and sending alive with the screen locked."""

    def __init__(self, bridge: Bridge, *, name: str = SERVICE_NAME) -> None:
        self.bridge = bridge
        self.name = name
        self._running = False

    def _service_class(self) -> Any:
        package = self.bridge.context.getPackageName()
        return self.bridge.autoclass(f"{package}.Service{self.name}")

    def start(self, title: str, text: str) -> None:
        """Start (or update) the service; its argument carries the texts (JSON)."""
        argument = json.dumps({"title": title, "text": text}, ensure_ascii=False)
        self._service_class().start(self.bridge.context, "", title, text, argument)
        self._running = True

    def stop(self) -> None:
        """Stop the service."""
        self._service_class().stop(self.bridge.context)
        self._running = False

    @property
    def running(self) -> bool:
        """True between start and stop (as this process asked)."""
        return self._running


class AndroidConnectivity:
    """`ConnectivityManager`: online when the active network has validated internet. A
    failing query answers True (the sender's backoff handles a dead link)."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def online(self) -> bool:
        """True when the active network reaches the internet."""
        b = self.bridge
        try:
            context = b.autoclass("android.content.Context")
            caps_cls = b.autoclass("android.net.NetworkCapabilities")
            manager = b.cast(
                "android.net.ConnectivityManager",
                b.context.getSystemService(context.CONNECTIVITY_SERVICE),
            )
            network = manager.getActiveNetwork()
            if network is None:
                return False
            caps = manager.getNetworkCapabilities(network)
            return bool(
                caps is not None
                and caps.hasCapability(caps_cls.NET_CAPABILITY_INTERNET)
                and caps.hasCapability(caps_cls.NET_CAPABILITY_VALIDATED)
            )
        except Exception:
            return True
