"""`PhoneCore`: the pieces of the core put together for one signed-in user.

The Kivy screens hold one `PhoneCore`; tests drive it the same way. Nothing here blocks on the
network except `sign_in`/`sign_out` (call them off the UI thread) and the awaited `send_now`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from mobile.core.actions import FieldActions
from mobile.core.background import BackgroundSync, Connectivity, Usage
from mobile.core.camera import Camera
from mobile.core.clock import Now, utcnow
from mobile.core.drafts import Drafts
from mobile.core.geo import Geolocator
from mobile.core.outbox import Outbox, Sender, SendReport
from mobile.core.photos import (
    DEFAULT_LONGEST_EDGE,
    DEFAULT_QUALITY,
    PhotoRef,
    PhotoStore,
    PreparedPhoto,
    prepare_photo,
)
from mobile.core.secret_store import SecretStore
from mobile.core.session import Account, Session, SignIn, SignOut
from mobile.core.transport import HttpTransport, http_client
from mobile.core.tus_client import DEFAULT_CHUNK, FaultHook, TusUploader
from mobile.core.views import Me, Views
from sync.client import SyncClient
from sync.store import ClientStore


class PhoneCore:
    """Session, store, actions, views, outbox, photos and sending for the current user."""

    def __init__(
        self,
        data_dir: Path,
        secrets: SecretStore,
        *,
        http: httpx.Client | None = None,
        geolocator: Geolocator | None = None,
        camera: Camera | None = None,
        now: Now = utcnow,
        photo_edge: int = DEFAULT_LONGEST_EDGE,
        photo_quality: int = DEFAULT_QUALITY,
        chunk_size: int = DEFAULT_CHUNK,
        upload_fault: FaultHook | None = None,
        connectivity: Connectivity | None = None,
        interval_s: float = 300.0,
    ) -> None:
        self.http = http or http_client(30.0)
        self.connectivity = connectivity
        self.interval_s = interval_s
        self.session = Session(data_dir, secrets, http=self.http, now=now)
        self.geolocator = geolocator
        self.camera = camera
        self._now = now
        self.photo_edge = photo_edge
        self.photo_quality = photo_quality
        self.chunk_size = chunk_size
        self.upload_fault = upload_fault
        self.account: Account | None = None
        self._store: ClientStore | None = None
        self._photos: PhotoStore | None = None
        self._views: Views | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def sign_in(self, server_url: str, username: str, password: str) -> SignIn:
        """Sign in online and open this user's data (with what they left unsent)."""
        self.close()
        result = self.session.login(server_url, username, password)
        self.open()
        return result

    def open(self) -> Account:
        """Open the last signed-in user's data (works offline)."""
        if self._store is not None and self.account is not None:
            return self.account
        account = self.session.open_offline()
        path = self.session.store_path(account)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._store = ClientStore(path, device_id=self.session.device_id)
        self._photos = PhotoStore(path, now=self._now)
        me = Me(account.user_id, account.org_id, account.role)
        self._views = Views(path, me, now=self._now)
        self.outbox = Outbox(self._store, self._photos)
        self.drafts = Drafts(self._photos.db, now=self._now)
        self.usage = Usage(self._photos.db, now=self._now)
        self.usage.attach(self.http)
        self.actions = FieldActions(
            self._store,
            photos=self._photos,
            geolocator=self.geolocator,
            now=self._now,
            in_flight=self.outbox.is_sending,
            on_write=lambda _entity: self.background.wake("write"),
        )
        self.transport = HttpTransport(
            account.server_url, self.session.access_token, client=self.http
        )
        self.sync = SyncClient(self._store, self.transport)
        self.uploader = TusUploader(
            self._photos,
            self.http,
            account.server_url,
            self.session.access_token,
            chunk_size=self.chunk_size,
            fault=self.upload_fault,
        )
        self.sender = Sender(
            self.outbox,
            self.sync,
            self.uploader,
            self.http,
            account.server_url,
            self.session.access_token,
            now=self._now,
        )
        self.background = BackgroundSync(
            self.sender,
            connectivity=self.connectivity,
            events=self.transport.events,
            usage=self.usage,
            needs_login=lambda: self.session.needs_login,
            interval_s=self.interval_s,
            now=self._now,
        )
        self.account = account
        return account

    def close(self) -> None:
        """Close the user's files (the app going away; nothing is lost)."""
        for part in (self._views, self._photos, self._store):
            if part is not None:
                part.close()
        self._store = self._photos = self._views = None
        self.account = None

    def sign_out(self) -> SignOut:
        """Sign out: close, then wipe everything but unsent items (counted in the answer)."""
        self.open()
        self.close()
        return self.session.logout()

    # -- parts ------------------------------------------------------------------------------
    @property
    def store(self) -> ClientStore:
        """The sync store (open)."""
        if self._store is None:
            raise RuntimeError("no user data open: sign in or open() first")
        return self._store

    @property
    def photos(self) -> PhotoStore:
        """The photo tracker (open)."""
        if self._photos is None:
            raise RuntimeError("no user data open: sign in or open() first")
        return self._photos

    @property
    def views(self) -> Views:
        """The read models (open)."""
        if self._views is None:
            raise RuntimeError("no user data open: sign in or open() first")
        return self._views

    # -- photos and sending -----------------------------------------------------------------
    def add_photo(self, source: Path | None = None) -> PhotoRef | None:
        """Take a photo with the camera (or use `source`), prepare it for upload and track it.
        None when the user cancelled the camera. Blocks on the camera and Pillow: on an
        event loop use `take_photo`."""
        prepared = self._capture_and_prepare(source)
        return None if prepared is None else self.photos.add(prepared)

    async def take_photo(self, source: Path | None = None) -> PhotoRef | None:
        """`add_photo` for the core's event loop: the camera and Pillow (a second or more
        for a 12 MP picture) run in a thread, so sync rounds and other calls go on."""
        prepared = await asyncio.to_thread(self._capture_and_prepare, source)
        return None if prepared is None else self.photos.add(prepared)

    def _capture_and_prepare(self, source: Path | None) -> PreparedPhoto | None:
        photo_dir = self.session.photo_dir()
        if source is None:
            if self.camera is None:
                raise RuntimeError("no camera")
            source = self.camera.capture(photo_dir / "captured")
            if source is None:
                return None
        return prepare_photo(
            source, photo_dir, longest_edge=self.photo_edge, quality=self.photo_quality
        )

    async def send_now(self) -> SendReport:
        """One round now: declare photos, push and pull, upload photos (the background loop
        does the same by itself; `background.send_now()` asks it for a round instead)."""
        report = await self.sender.send_now()
        self.usage.flush()
        return report

    def register_push(self, channel: str, token: str, platform: str = "android") -> bool:
        """Tell the server where this device receives pushes: `fcm` with an FCM token, or
        `webpush` with a UnifiedPush distributor's endpoint as a Web Push subscription JSON
        (`{"endpoint", "keys": {"p256dh", "auth"}}`). False when the server was not reached
        (call again at the next start)."""
        account = self.open()
        try:
            r = self.http.post(
                account.server_url + "/api/v1/devices",
                json={
                    "device_id": self.session.device_id,
                    "channel": channel,
                    "token": token,
                    "platform": platform,
                },
                headers={"Authorization": f"Bearer {self.session.access_token()}"},
            )
        except httpx.HTTPError:
            return False
        return r.status_code in (200, 201)
