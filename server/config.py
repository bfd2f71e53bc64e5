"""Settings, read once from the environment (LIANDONG_*)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


def _var_dir() -> Path:
    return Path(os.environ.get("LIANDONG_VAR_DIR", "var"))


def _secret_key(var_dir: Path) -> str:
    """LIANDONG_SECRET_KEY, or a key generated once and kept in var/secret_key."""
    env = os.environ.get("LIANDONG_SECRET_KEY")
    if env:
        return env
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment."""

    database_url: str
    secret_key: str
    var_dir: Path
    port: int = 8000
    host: str = "127.0.0.1"
    access_ttl_s: int = 900
    refresh_ttl_s: int = 30 * 24 * 3600
    max_body_bytes: int = 2 * 1024 * 1024
    login_max_failures: int = 5
    login_window_s: int = 900
    storage: str = "disk"
    media_dir: Path = field(default_factory=lambda: _var_dir() / "media")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    demo_password: str = "liandong-demo"

    @classmethod
    def from_env(cls) -> Settings:
        """Read LIANDONG_* variables; defaults give the embedded SQLite set-up under var/."""
        var_dir = _var_dir()
        env = os.environ.get
        return cls(
            database_url=env(
                "LIANDONG_DATABASE_URL", f"sqlite+aiosqlite:///{var_dir / 'liandong.db'}"
            ),
            secret_key=_secret_key(var_dir),
            var_dir=var_dir,
            port=int(env("LIANDONG_PORT", "8000")),
            host=env("LIANDONG_HOST", "127.0.0.1"),
            access_ttl_s=int(env("LIANDONG_ACCESS_TTL", "900")),
            refresh_ttl_s=int(env("LIANDONG_REFRESH_TTL", str(30 * 24 * 3600))),
            max_body_bytes=int(env("LIANDONG_MAX_BODY_BYTES", str(2 * 1024 * 1024))),
            login_max_failures=int(env("LIANDONG_LOGIN_MAX_FAILURES", "5")),
            login_window_s=int(env("LIANDONG_LOGIN_WINDOW", "900")),
            storage=env("LIANDONG_STORAGE", "disk"),
            media_dir=Path(env("LIANDONG_MEDIA_DIR", str(var_dir / "media"))),
            s3_bucket=env("LIANDONG_S3_BUCKET"),
            s3_endpoint_url=env("LIANDONG_S3_ENDPOINT_URL"),
            demo_password=env("LIANDONG_DEMO_PASSWORD", "liandong-demo"),
        )
