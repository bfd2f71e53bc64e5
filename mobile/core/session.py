"""Sign-in: who is using this phone, their tokens, and which local store is theirs.

- The **device id** is made once per installation (a random UUID in `installation.json`), never
  read from the hardware: a reinstalled app is a new device, so it can never reuse an old id's
  mutation numbers (the server deduplicates by device and number).
- Each account (server + user id) has its own store file, kept across sign-outs: its `meta`
  holds the next mutation number, so numbers are never reused for the same user and device.
- Tokens live in a `SecretStore`, with the `device_secret` each sign-in issues (sent with
  the next sign-in: it proves this device signed in before); the access token is refreshed
  shortly before it expires.
  Offline, the last user's data opens without the server (`open_offline`), for days.
- Sign-out wipes the user's local data except what the server has not received; those items
  stay and are sent at the same user's next sign-in, and both moments say how many.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from mobile.core import localdb
from mobile.core.clock import Now, utcnow
from mobile.core.secret_store import SecretStore
from mobile.core.transport import http_client

TOKENS_KEY = "tokens"


def device_secret_key(server_url: str, username: str) -> str:
    """Where the `device_secret` of this device's last sign-in as `username` is kept: it
    proves the device at the next sign-in (login throttling counts a proven device apart from
    a guesser's address) and survives sign-out, unlike the tokens."""
    server = hashlib.sha256(server_url.rstrip("/").encode()).hexdigest()[:12]
    return f"device_secret:{server}:{username}"


class AuthError(Exception):
    """The server refused the credentials or the refresh token (sign in again)."""

    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(f"{status} {code}: {detail}".strip())
        self.status = status
        self.code = code


TRANSIENT_STATUSES = frozenset({408, 429})
"""4xx answers to a refresh that do not mean the refresh token was refused (a proxy's or
gateway's request timeout or rate limit): the phone keeps its tokens and tries again later."""


class OfflineError(Exception):
    """The server could not be reached."""


class NotSignedInError(Exception):
    """No user has signed in on this phone (or the last one signed out)."""


@dataclass(frozen=True, slots=True)
class Account:
    """The signed-in user as the phone remembers them (no secrets)."""

    server_url: str
    user_id: str
    username: str
    display_name: str
    role: str
    org_id: str | None = None
    area_id: str | None = None

    @property
    def key(self) -> str:
        """A file-name-safe key of (server, user): one store per account."""
        server = hashlib.sha256(self.server_url.encode()).hexdigest()[:12]
        return f"{server}-{self.user_id}"


@dataclass(frozen=True, slots=True)
class Tokens:
    """The bearer pair and when the access token expires (aware UTC)."""

    access_token: str
    refresh_token: str
    expires_at: datetime

    def to_json(self) -> str:
        """Serialised for the secret store."""
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Tokens:
        """Read what `to_json` wrote."""
        d = json.loads(text)
        return cls(d["access_token"], d["refresh_token"], datetime.fromisoformat(d["expires_at"]))


@dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in found: `unsent` writes and `photos` from this user's last session that
    will now be sent (the app says so)."""

    account: Account
    unsent: int
    photos: int


@dataclass(frozen=True, slots=True)
class SignOut:
    """What a sign-out kept on the phone, to be sent at this user's next sign-in."""

    unsent: int
    photos: int


def device_id(data_dir: Path) -> str:
    """This installation's device id: made on first use, then always the same."""
    path = data_dir / "installation.json"
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["device_id"])
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    made = {"device_id": f"app-{uuid.uuid4()}"}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(made), encoding="utf-8")
    tmp.replace(path)
    return made["device_id"]


class Session:
    """Sign-in state of this phone. Thread-safe for `access_token` (the transport calls it
    from worker threads)."""

    def __init__(
        self,
        data_dir: Path,
        secrets: SecretStore,
        *,
        http: httpx.Client | None = None,
        now: Now = utcnow,
        refresh_margin_s: float = 60.0,
        timeout_s: float = 20.0,
    ) -> None:
        self.data_dir = data_dir
        self.secrets = secrets
        self.http = http or http_client(timeout_s)
        self._now = now
        self.refresh_margin_s = refresh_margin_s
        self.device_id = device_id(data_dir)
        self._lock = threading.Lock()
        self.account: Account | None = self._load_account()
        self.needs_login = False  # set when the server refused the refresh token
        self.refreshes = 0

    # -- persistence ------------------------------------------------------------------------
    @property
    def _account_file(self) -> Path:
        return self.data_dir / "session.json"

    def _load_account(self) -> Account | None:
        try:
            raw = json.loads(self._account_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return Account(**raw) if raw else None

    def _save_account(self, account: Account | None) -> None:
        tmp = self._account_file.with_name("session.json.tmp")
        tmp.write_text(json.dumps(asdict(account) if account else None), encoding="utf-8")
        tmp.replace(self._account_file)

    def store_path(self, account: Account | None = None) -> Path:
        """The store file of `account` (default: the current one)."""
        acc = account or self.account
        if acc is None:
            raise NotSignedInError("no account on this phone")
        return self.data_dir / "users" / acc.key / "store.db"

    def photo_dir(self, account: Account | None = None) -> Path:
        """Where `account`'s prepared photos are kept until uploaded."""
        return self.store_path(account).parent / "photos"

    @property
    def tokens(self) -> Tokens | None:
        """The stored tokens, if any."""
        raw = self.secrets.get(TOKENS_KEY)
        return Tokens.from_json(raw) if raw else None

    def _keep(self, pair: dict[str, Any]) -> Tokens:
        tokens = Tokens(
            str(pair["access_token"]),
            str(pair["refresh_token"]),
            self._now() + timedelta(seconds=int(pair["expires_in"])),
        )
        self.secrets.put(TOKENS_KEY, tokens.to_json())
        return tokens

    # -- HTTP -------------------------------------------------------------------------------
    def _post(self, url: str, body: dict[str, Any] | None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            r = self.http.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise OfflineError(repr(exc)) from exc
        if r.status_code >= 500:
            raise OfflineError(f"HTTP {r.status_code}")
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {}
            raise AuthError(r.status_code, problem.get("code", ""), problem.get("detail", ""))
        return r.json() if r.content else None

    # -- the user's moves -------------------------------------------------------------------
    def login(self, server_url: str, username: str, password: str) -> SignIn:
        """Sign in (online only). Opens this user's store, with whatever they left unsent."""
        base = server_url.rstrip("/")
        body: dict[str, Any] = {
            "username": username,
            "password": password,
            "device_id": self.device_id,
        }
        secret_key = device_secret_key(base, username)
        if kept := self.secrets.get(secret_key):
            body["device_secret"] = kept
        pair = self._post(base + "/api/v1/auth/login", body)
        if pair.get("device_secret"):  # each sign-in issues a new one
            self.secrets.put(secret_key, str(pair["device_secret"]))
        try:
            r = self.http.get(
                base + "/api/v1/auth/me",
                headers={"Authorization": f"Bearer {pair['access_token']}"},
            )
        except httpx.HTTPError as exc:
            raise OfflineError(repr(exc)) from exc
        if r.status_code != 200:
            raise AuthError(r.status_code, "me", r.text)
        me = r.json()
        account = Account(
            server_url=base,
            user_id=str(me["id"]),
            username=str(me["username"]),
            display_name=str(me.get("display_name") or me["username"]),
            role=str(me["role"]),
            org_id=me.get("org_id"),
            area_id=me.get("area_id"),
        )
        with self._lock:
            self._keep(pair)
            self.account = account
            self.needs_login = False
            self._save_account(account)
        writes, photos = localdb.unsent(self.store_path(account))
        return SignIn(account, writes, photos)

    def open_offline(self) -> Account:
        """The last signed-in user, without asking the server (their data is on the phone)."""
        if self.account is None:
            raise NotSignedInError("nobody has signed in on this phone")
        return self.account

    def access_token(self) -> str:
        """A bearer token for the next request, refreshed first when it expires within the
        margin. Never raises: offline, the old token is returned (the request then fails and
        sync backs off); a refused refresh sets `needs_login` (data stays on the phone)."""
        with self._lock:
            tokens = self.tokens
            if tokens is None or self.account is None:
                return ""
            due = tokens.expires_at - timedelta(seconds=self.refresh_margin_s)
            if self._now() < due or self.needs_login:
                return tokens.access_token
            try:
                pair = self._post(
                    self.account.server_url + "/api/v1/auth/refresh",
                    {"refresh_token": tokens.refresh_token, "device_id": self.device_id},
                )
            except OfflineError:
                return tokens.access_token
            except AuthError as exc:
                # A gateway's timeout or rate limit says nothing of the refresh token: the
                # phone tries again later, as when offline, and keeps the responder signed in.
                if exc.status not in TRANSIENT_STATUSES:
                    self.needs_login = True
                return tokens.access_token
            self.refreshes += 1
            return self._keep(pair).access_token

    def logout(self) -> SignOut:
        """Sign out: tell the server (if it answers), forget the tokens, and wipe this user's
        local data except unsent items. The caller closes the store first."""
        account = self.open_offline()
        tokens = self.tokens
        if tokens is not None:
            try:
                self._post(
                    account.server_url + "/api/v1/auth/logout",
                    {"refresh_token": tokens.refresh_token},
                    token=tokens.access_token,
                )
            except (OfflineError, AuthError):
                pass  # the server forgets the session when the refresh token expires
        with self._lock:
            self.secrets.delete(TOKENS_KEY)
            self.account = None
            self._save_account(None)
        writes, photos = localdb.wipe_except_unsent(self.store_path(account))
        return SignOut(writes, photos)
