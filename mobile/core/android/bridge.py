"""The one door to Java: `Bridge`, and `JniusBridge`, the only place `jnius` is imported.

The adapters call Java only through a bridge, so tests can hand them a recorded stand-in of
the Android calls (tests/unit/mobile/android_standin.py) and check what they would call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Bridge(Protocol):
    """What the adapters need from pyjnius and python-for-android."""

    def autoclass(self, name: str) -> Any:
        """A Java class by its dotted name (`jnius.autoclass`)."""
        ...

    def cast(self, name: str, obj: Any) -> Any:
        """`obj` seen as the Java type `name` (`jnius.cast`)."""
        ...

    @property
    def context(self) -> Any:
        """The app's `Context`: the activity, or the service inside the background service."""
        ...

    def run_on_ui_thread(self, fn: Callable[[], None]) -> None:
        """Run `fn` on Android's main thread (location updates need its looper)."""
        ...

    def location_listener(self, on_location: Callable[[Any], None]) -> Any:
        """A Java `LocationListener` calling `on_location(android.location.Location)`."""
        ...

    def on_activity_result(self, fn: Callable[[int, int, Any], None]) -> None:
        """Call `fn(request_code, result_code, intent)` for activity results."""
        ...

    def unbind_activity_result(self, fn: Callable[[int, int, Any], None]) -> None:
        """Stop calling `fn`."""
        ...


def to_bytes(java_bytes: Any) -> bytes:
    """A Java `byte[]` (pyjnius gives signed ints or a ByteArray) as Python bytes."""
    if isinstance(java_bytes, bytes | bytearray):
        return bytes(java_bytes)
    tostring = getattr(java_bytes, "tostring", None)
    if callable(tostring):
        return bytes(tostring())
    return bytes(b & 0xFF for b in java_bytes)


class JniusBridge:  # pragma: no cover - runs on a device only
    """The real bridge: pyjnius and python-for-android's `android` module."""

    def __init__(self) -> None:
        import jnius  # type: ignore[import-not-found]
        from android import activity as android_activity  # type: ignore[import-not-found]
        from android.runnable import Runnable  # type: ignore[import-not-found]

        self._jnius = jnius
        self._activity_events = android_activity
        self._runnable = Runnable
        self._python_activity = jnius.autoclass("org.kivy.android.PythonActivity")
        self._python_service = jnius.autoclass("org.kivy.android.PythonService")
        self._listeners: list[Any] = []  # keep Java proxies alive while Java holds them

    def autoclass(self, name: str) -> Any:
        return self._jnius.autoclass(name)

    def cast(self, name: str, obj: Any) -> Any:
        return self._jnius.cast(name, obj)

    @property
    def context(self) -> Any:
        return self._python_activity.mActivity or self._python_service.mService

    def run_on_ui_thread(self, fn: Callable[[], None]) -> None:
        self._runnable(fn)()

    def location_listener(self, on_location: Callable[[Any], None]) -> Any:
        jnius = self._jnius

        class _Listener(jnius.PythonJavaClass):  # type: ignore[misc,name-defined]
            __javainterfaces__ = ("android/location/LocationListener",)
            __javacontext__ = "app"

            @jnius.java_method("(Landroid/location/Location;)V")  # type: ignore[untyped-decorator]
            def onLocationChanged(self, location: Any) -> None:
                on_location(location)

            @jnius.java_method("(Ljava/lang/String;)V")  # type: ignore[untyped-decorator]
            def onProviderEnabled(self, provider: str) -> None:
                pass

            @jnius.java_method("(Ljava/lang/String;)V")  # type: ignore[untyped-decorator]
            def onProviderDisabled(self, provider: str) -> None:
                pass

            @jnius.java_method("(Ljava/lang/String;ILandroid/os/Bundle;)V")  # type: ignore[untyped-decorator]
            def onStatusChanged(self, provider: str, status: int, extras: Any) -> None:
                pass

        listener = _Listener()
        self._listeners.append(listener)
        return listener

    def on_activity_result(self, fn: Callable[[int, int, Any], None]) -> None:
        self._activity_events.bind(on_activity_result=fn)

    def unbind_activity_result(self, fn: Callable[[int, int, Any], None]) -> None:
        self._activity_events.unbind(on_activity_result=fn)
