"""The Android adapters against a RECORDED STAND-IN of the Android calls they make.

Android cannot run on these machines. `StandIn` is not Android: it records every Java call an
adapter makes through the bridge (class, method, arguments) and answers with values written
down here from the Android API documentation (constants, a `Location`, a camera result, an
AES-GCM cipher done with Python's `cryptography` where the keystore would do it). The tests
prove which calls the adapters make, in which order and with what; whether Android accepts
them is unverified until the app runs on a device (README says so).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mobile.core.android import (
    EXTRA_DATA,
    AndroidCamera,
    AndroidConnectivity,
    AndroidForegroundService,
    AndroidGeolocator,
    AndroidNotifier,
    KeystoreSecretStore,
    android_parts,
)
from mobile.core.android.adapters import CAMERA_REQUEST, RESULT_OK
from mobile.core.background import BackgroundSync, RecordRef
from mobile.core.platform import Notification

# Constants as the Android SDK defines them (developer.android.com reference).
CONSTANTS: dict[str, dict[str, Any]] = {
    "android.content.Context": {
        "LOCATION_SERVICE": "location",
        "NOTIFICATION_SERVICE": "notification",
        "CONNECTIVITY_SERVICE": "connectivity",
    },
    "android.provider.MediaStore": {
        "ACTION_IMAGE_CAPTURE": "android.media.action.IMAGE_CAPTURE",
        "EXTRA_OUTPUT": "output",
    },
    "android.content.Intent": {
        "FLAG_GRANT_READ_URI_PERMISSION": 0x1,
        "FLAG_GRANT_WRITE_URI_PERMISSION": 0x2,
        "FLAG_ACTIVITY_SINGLE_TOP": 0x20000000,
        "FLAG_ACTIVITY_CLEAR_TOP": 0x04000000,
    },
    "android.app.PendingIntent": {"FLAG_IMMUTABLE": 0x04000000, "FLAG_UPDATE_CURRENT": 0x08000000},
    "android.net.NetworkCapabilities": {
        "NET_CAPABILITY_INTERNET": 12,
        "NET_CAPABILITY_VALIDATED": 16,
    },
    "android.security.keystore.KeyProperties": {
        "PURPOSE_ENCRYPT": 1,
        "PURPOSE_DECRYPT": 2,
        "BLOCK_MODE_GCM": "GCM",
        "ENCRYPTION_PADDING_NONE": "NoPadding",
        "KEY_ALGORITHM_AES": "AES",
    },
    "javax.crypto.Cipher": {"ENCRYPT_MODE": 1, "DECRYPT_MODE": 2},
}


class Obj:
    """A Java object or class in the stand-in: records calls, answers from `StandIn.answers`."""

    def __init__(self, standin: StandIn, name: str) -> None:
        self._standin = standin
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        constants = CONSTANTS.get(self._name, {})
        if attr in constants:
            return constants[attr]

        def method(*args: Any) -> Any:
            self._standin.calls.append((self._name, attr, args))
            answer = self._standin.answers.get((self._name, attr))
            if callable(answer):
                return answer(*args)
            if answer is not None:
                return answer
            return Obj(self._standin, f"{self._name}.{attr}()")

        return method

    def __call__(self, *args: Any) -> Obj:
        self._standin.calls.append((self._name, "new", args))
        made = self._standin.answers.get((self._name, "new"))
        return made(*args) if callable(made) else Obj(self._standin, self._name)

    def __repr__(self) -> str:
        return f"<{self._name}>"


class StandIn:
    """RECORDED STAND-IN for pyjnius + python-for-android (implements `Bridge`)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []
        self.answers: dict[tuple[str, str], Any] = {}
        self.result_hooks: list[Callable[[int, int, Any], None]] = []
        self.ui_thread_runs = 0
        self.listeners: list[Callable[[Any], None]] = []
        self._context = Obj(self, "Context")
        self.answers[("Context", "getPackageName")] = "org.liandong.app"

    def autoclass(self, name: str) -> Obj:
        return Obj(self, name)

    def cast(self, name: str, obj: Any) -> Any:
        self.calls.append(("jnius", "cast", (name,)))
        return Obj(self, name) if isinstance(obj, Obj) else obj

    @property
    def context(self) -> Obj:
        return self._context

    def run_on_ui_thread(self, fn: Callable[[], None]) -> None:
        self.ui_thread_runs += 1
        fn()

    def location_listener(self, on_location: Callable[[Any], None]) -> Any:
        self.listeners.append(on_location)
        return "LocationListener-proxy"

    def on_activity_result(self, fn: Callable[[int, int, Any], None]) -> None:
        self.result_hooks.append(fn)

    def unbind_activity_result(self, fn: Callable[[int, int, Any], None]) -> None:
        self.result_hooks.remove(fn)

    def called(self, cls: str, method: str) -> list[tuple[Any, ...]]:
        return [args for c, m, args in self.calls if c == cls and m == method]


class Location:
    """An `android.location.Location` as the stand-in hands it over."""

    def __init__(self, lon: float, lat: float, acc: float | None, ms: int) -> None:
        self.lon, self.lat, self.acc, self.ms = lon, lat, acc, ms

    def getLongitude(self) -> float:
        return self.lon

    def getLatitude(self) -> float:
        return self.lat

    def hasAccuracy(self) -> bool:
        return self.acc is not None

    def getAccuracy(self) -> float:
        return self.acc or 0.0

    def getTime(self) -> int:
        return self.ms


LM = "android.location.LocationManager"


def test_geolocator_requests_both_providers_on_the_main_looper_newest_fix_wins() -> None:
    b = StandIn()
    b.answers[(LM, "isProviderEnabled")] = lambda provider: provider == "gps"
    b.answers[(LM, "getLastKnownLocation")] = lambda p: (
        Location(121.0, 31.0, 900.0, 1_700_000_000_000) if p == "network" else None
    )
    geo = AndroidGeolocator(b)
    geo.start()
    geo.start()  # a second warm-up does not register twice
    first = geo.last_fix()
    assert first is not None and first.accuracy_m == 900.0  # the coarse last-known fix
    [(provider, min_ms, min_m, listener, looper)] = b.called(LM, "requestLocationUpdates")
    assert (provider, min_ms, min_m, listener) == ("gps", 1000, 0.0, "LocationListener-proxy")
    assert repr(looper) == "<android.os.Looper.getMainLooper()>"
    assert b.ui_thread_runs == 1  # requested on the main thread (its looper)
    [deliver] = b.listeners
    deliver(Location(121.4855, 31.2375, 6.0, 1_700_000_060_000))
    deliver(Location(121.0, 31.0, 3.0, 1_700_000_030_000))  # older, arriving late: ignored
    fix = geo.last_fix()
    assert fix is not None and (fix.lon, fix.lat, fix.accuracy_m) == (121.4855, 31.2375, 6.0)
    assert fix.at == datetime.fromtimestamp(1_700_000_060, UTC)
    deliver(Location(121.5, 31.3, None, 1_700_000_090_000))  # no accuracy: never "accurate"
    fix = geo.last_fix()
    assert fix is not None and fix.accuracy_m == 10_000.0
    geo.stop()
    assert b.called(LM, "removeUpdates") == [("LocationListener-proxy",)]


def test_camera_uses_a_file_provider_uri_and_answers_the_file(tmp_path: Path) -> None:
    b = StandIn()
    b.answers[("androidx.core.content.FileProvider", "getUriForFile")] = "content://uri"

    def camera_app(intent: Any, code: int) -> None:  # the camera app writes, then returns
        target = Path(b.called("java.io.File", "new")[-1][0])
        target.write_bytes(b"\xff\xd8jpeg")
        threading.Thread(target=lambda: [h(code, RESULT_OK, None) for h in b.result_hooks]).start()

    b.answers[("Context", "startActivityForResult")] = camera_app
    cam = AndroidCamera(b, timeout_s=5)
    shot = cam.capture(tmp_path / "photos")
    assert shot is not None and shot.read_bytes() == b"\xff\xd8jpeg"
    [(_ctx, authority, _file)] = b.called("androidx.core.content.FileProvider", "getUriForFile")
    assert authority == "org.liandong.app.fileprovider"  # content://, never file://
    assert b.called("android.content.Intent", "new") == [("android.media.action.IMAGE_CAPTURE",)]
    [(key, _uri)] = b.called("android.content.Intent", "putExtra")
    assert key == "output" and ("jnius", "cast", ("android.os.Parcelable",)) in b.calls
    assert b.called("android.content.Intent", "addFlags") == [(0x3,)]
    assert b.result_hooks == []  # unbound afterwards

    # Cancelled: the camera app returns RESULT_CANCELED (0) and leaves an empty file.
    def cancel(intent: Any, code: int) -> None:
        Path(b.called("java.io.File", "new")[-1][0]).write_bytes(b"")
        for h in list(b.result_hooks):
            h(CAMERA_REQUEST, 0, None)

    b.answers[("Context", "startActivityForResult")] = cancel
    assert cam.capture(tmp_path / "photos") is None
    assert [p.name for p in (tmp_path / "photos").iterdir()] == [shot.name]


def test_notifier_makes_channels_once_and_a_tap_opens_the_record() -> None:
    b = StandIn()
    notifier = AndroidNotifier(b)
    data = {"event_id": "task:1:assigned", "kind": "task.assigned", "task_id": "t-1"}
    notifier.notify(Notification("task:1:assigned", "新任务", "仓库火情", data))
    notifier.notify(Notification("task:2:assigned", "新任务", "另一个", {"task_id": "t-2"}))
    channels = b.called("android.app.NotificationChannel", "new")
    assert channels == [("tasks", "任务和预警", 4), ("updates", "动态更新", 2)]  # once
    extras = b.called("android.content.Intent", "putExtra")
    assert extras[0] == (EXTRA_DATA, json.dumps(data, ensure_ascii=False))
    pending = b.called("android.app.PendingIntent", "getActivity")
    assert pending[0][3] == 0x04000000 | 0x08000000  # immutable (API 31+) and updated
    assert pending[0][1] != pending[1][1]  # one request code per notification
    assert b.called("android.app.Notification$Builder", "new")[0][1] == "tasks"
    assert b.called("android.app.NotificationManager", "notify")[0][:2] == ("task:1:assigned", 0)

    class TapIntent:  # the activity's intent after the tap
        def getStringExtra(self, key: str) -> str | None:
            return extras[0][1] if key == EXTRA_DATA else None

    tapped = AndroidNotifier.data_from_intent(TapIntent())
    assert tapped is not None
    assert BackgroundSync.open_from_notification(tapped) == RecordRef(
        "task", "t-1", "task.assigned"
    )
    assert AndroidNotifier.data_from_intent(None) is None
    notifier.cancel("task:1:assigned")
    assert b.called("android.app.NotificationManager", "cancel") == [("task:1:assigned", 0)]


class Cipher:
    """javax.crypto.Cipher "AES/GCM/NoPadding" as the keystore key would run it (the key
    itself stays in the stand-in, as it stays in AndroidKeyStore)."""

    KEY = AESGCM.generate_key(bit_length=256)

    def __init__(self) -> None:
        self.mode = 0
        self.iv = b""

    def init(self, mode: int, key: Any, spec: Any = None) -> None:
        self.mode = mode
        self.iv = spec.iv if spec is not None else bytes(range(12))

    def getIV(self) -> list[int]:
        return [b - 256 if b > 127 else b for b in self.iv]

    def doFinal(self, data: bytes) -> bytes:
        aes = AESGCM(self.KEY)
        return (
            aes.encrypt(self.iv, data, None) if self.mode == 1 else aes.decrypt(self.iv, data, None)
        )


class GcmSpec:
    def __init__(self, bits: int, iv: bytes) -> None:
        assert bits == 128
        self.iv = iv


def test_keystore_secret_store_encrypts_under_a_keystore_key(tmp_path: Path) -> None:
    b = StandIn()
    ks = "java.security.KeyStore.getInstance()"
    aliases: set[str] = set()
    b.answers[(ks, "containsAlias")] = lambda alias: alias in aliases

    def generate() -> str:
        aliases.add("liandong-secrets")
        return "key"

    b.answers[("javax.crypto.KeyGenerator.getInstance()", "generateKey")] = generate
    b.answers[("javax.crypto.Cipher", "getInstance")] = lambda t: Cipher()
    b.answers[("javax.crypto.spec.GCMParameterSpec", "new")] = GcmSpec
    store = KeystoreSecretStore(b, tmp_path / "secrets.bin")
    store.put("tokens", '{"access_token": "abc"}')
    store.put("device_secret:x:fire1", "s3cret")
    assert store.get("tokens") == '{"access_token": "abc"}'
    raw = (tmp_path / "secrets.bin").read_text()
    assert "abc" not in raw and "s3cret" not in raw  # only ciphertext on disk
    assert (tmp_path / "secrets.bin").stat().st_mode & 0o777 == 0o600
    generated = b.called("javax.crypto.KeyGenerator", "getInstance")
    assert generated == [("AES", "AndroidKeyStore")]  # made once, then found by alias
    spec = b.called("android.security.keystore.KeyGenParameterSpec$Builder", "new")
    assert spec == [("liandong-secrets", 3)]
    store.delete("tokens")
    assert store.get("tokens") is None and store.get("device_secret:x:fire1") == "s3cret"


def test_foreground_service_and_connectivity() -> None:
    b = StandIn()
    service = AndroidForegroundService(b)
    service.start("联动", "正在前往现场")
    assert service.running
    [(_ctx, icon, title, text, arg)] = b.called("org.liandong.app.ServiceSync", "start")
    assert (icon, title, text) == ("", "联动", "正在前往现场")
    assert json.loads(arg) == {"title": "联动", "text": "正在前往现场"}
    service.stop()
    assert not service.running and len(b.called("org.liandong.app.ServiceSync", "stop")) == 1

    cm = "android.net.ConnectivityManager"
    caps = "android.net.ConnectivityManager.getNetworkCapabilities()"
    b.answers[(caps, "hasCapability")] = lambda c: c in (12, 16)
    net = AndroidConnectivity(b)
    assert net.online()
    b.answers[(caps, "hasCapability")] = lambda c: c == 12  # captive portal: not validated
    assert not net.online()

    def boom() -> None:
        raise RuntimeError("JavaException")

    b.answers[(cm, "getActiveNetwork")] = boom
    assert net.online()  # a failing query never stops sending


@pytest.mark.parametrize("module", ["jnius", "android"])
def test_nothing_imports_jnius_off_android(tmp_path: Path, module: str) -> None:
    import sys

    parts = android_parts(tmp_path, StandIn())
    assert isinstance(parts.secrets, KeystoreSecretStore)
    assert module not in sys.modules
