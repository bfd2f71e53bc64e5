"""Desktop stand-ins for the phone's GPS and camera, and handing URIs to other apps.

On Android the core's adapters (`mobile.core.android`) take their place; here a fixed or
warming-up position in the demo district and a camera that "takes" a generated picture, so the
app runs and is tested on a desktop. Kivy-free.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from mobile.core.camera import Camera
from mobile.core.geo import FixedGeolocator, Geolocator, TrackGeolocator, TrackPoint

if TYPE_CHECKING:
    from mobile.app import AppOptions

log = logging.getLogger("liandong.app")
#: the demo district's centre (Huangpu, Shanghai; WGS-84)
DEMO_FIX = (121.4855, 31.2375, 8.0)


class PictureCamera:
    """A camera that returns a freshly drawn JPEG each time (or copies `source`)."""

    def __init__(self, source: Path | None = None) -> None:
        self.source = source
        self.taken = 0

    def capture(self, directory: Path) -> Path | None:
        """Write one picture into `directory`."""
        from PIL import Image, ImageDraw

        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"capture-{uuid.uuid4().hex}.jpg"
        self.taken += 1
        if self.source is not None:
            target.write_bytes(self.source.read_bytes())
            return target
        img = Image.new("RGB", (1600, 1200), (120 + 20 * (self.taken % 5), 110, 90))
        draw = ImageDraw.Draw(img)
        for i in range(0, 1600, 80):
            draw.line([(i, 0), (1600 - i, 1200)], fill=(200, 180, 60), width=6)
        draw.rectangle([500, 400, 1100, 800], outline=(250, 250, 250), width=12)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        target.write_bytes(buf.getvalue())
        return target


def desktop_parts(options: AppOptions) -> tuple[Geolocator, Camera]:
    """The position source and camera for a desktop run."""
    lon, lat, acc = options.fix or DEMO_FIX
    geolocator: Geolocator
    if options.fix_track:  # a cold GPS: coarse first, good after a few seconds
        track = [
            TrackPoint(0, lon + 0.004, lat - 0.003, 480.0),
            TrackPoint(1.5, lon + 0.001, lat, 120.0),
            TrackPoint(3.0, lon, lat, 35.0),
            TrackPoint(4.5, lon, lat, acc),
        ]
        geolocator = TrackGeolocator(track)
    else:
        geolocator = FixedGeolocator(lon, lat, acc)
    geolocator.start()
    photo = os.environ.get("LIANDONG_APP_PHOTO")
    return geolocator, PictureCamera(Path(photo) if photo else None)


def open_uri(uri: str) -> None:
    """Open a `geo:` or `tel:` URI in the phone's map or dialler (Android: an ACTION_VIEW or
    ACTION_DIAL intent); on a desktop it is logged."""
    try:
        from jnius import autoclass  # type: ignore[import-not-found]
    except ImportError:
        log.info("open %s", uri)
        return
    intent_cls = autoclass("android.content.Intent")
    uri_cls = autoclass("android.net.Uri")
    activity = autoclass("org.kivy.android.PythonActivity").mActivity
    action = intent_cls.ACTION_DIAL if uri.startswith("tel:") else intent_cls.ACTION_VIEW
    intent = intent_cls(action, uri_cls.parse(uri))
    intent.addFlags(intent_cls.FLAG_ACTIVITY_NEW_TASK)
    activity.startActivity(intent)
