"""The Android foreground service's process (buildozer.spec `services = Sync:service.py`).

python-for-android starts `service.py` in its own process when the app calls the core's
`AndroidForegroundService.start`; this keeps the outbox moving (and fixes coming) with the
screen locked: it opens the signed-in user's data and runs send rounds until stopped. Sends
are idempotent per (device, seq), so a round here and one in the app never double a record.
Unverified on a device (the APK is not built on these machines). Kivy-free.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

ROUND_S = 60.0
BACKOFF_CAP_S = 600.0


def data_dir() -> Path:
    """The app's files directory (python-for-android sets ANDROID_PRIVATE)."""
    return Path(os.environ.get("ANDROID_PRIVATE") or os.environ.get("LIANDONG_APP_DATA") or ".")


async def run(stop: asyncio.Event, directory: Path) -> None:
    """Send rounds every minute, backing off after failures, until `stop`."""
    from mobile.core.phone import PhoneCore
    from mobile.core.secret_store import FileSecretStore

    core = PhoneCore(directory, FileSecretStore(directory / "secrets.json"))
    if core.session.account is None:
        return
    core.open()
    delay = ROUND_S
    try:
        while not stop.is_set():
            report = await core.send_now()
            delay = ROUND_S if report.ok else min(BACKOFF_CAP_S, delay * 2)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                continue
    finally:
        core.close()


def main() -> None:
    """Entry point of the service process."""
    asyncio.run(run(asyncio.Event(), data_dir()))
