"""Settings, read once from the environment (LIANDONG_*)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from server.loops import DEFAULT_EVENT_LOOP, EVENT_LOOPS


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
    # Login throttling (issue 13): per user and address, `login_max_failures` free failures,
    # then a delay that doubles with each failure from `login_delay_s` up to `login_window_s`;
    # failures older than the window are forgotten. An address is capped at
    # `login_address_cap` failures per window over all users (default 10 x max failures).
    # A sign-in proving its device (the secret of its last sign-in) skips both.
    login_max_failures: int = 5
    login_window_s: int = 900
    login_delay_s: float = 1.0
    login_address_cap: int | None = None
    # Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For is believed; empty:
    # none, the peer address is the client's. One rule for the whole server (`liandong serve`).
    trusted_proxies: tuple[str, ...] = ()
    storage: str = "disk"
    media_dir: Path = field(default_factory=lambda: _var_dir() / "media")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    demo_password: str = "liandong-demo"
    # Media and the hazard loop (issue 4). S3 credentials unset = boto3's default chain.
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    media_max_bytes: int = 40 * 1024 * 1024  # also Tus-Max-Size and the upload route's body limit
    upload_ttl_s: int = 24 * 3600
    evidence_max_distance_m: float = 500.0  # photo EXIF position vs the reported point
    evidence_max_time_s: int = 24 * 3600  # photo capture time vs the report (or step) time
    local_tz: str = "Asia/Shanghai"  # zone of EXIF wall-clock times without an offset
    hazard_jobs_interval_s: float = 60.0  # overdue marking + upload expiry, with background_jobs
    # Self-checks (issue 12): how many weeks back a submission may still name, and how many
    # days before the due day the reminder goes out.
    check_grace_weeks: int = 1
    check_remind_days: int = 1
    # Push and background jobs (issue 5). The dataclass defaults keep background work off so a
    # test app never races another test's worker; `from_env` turns it on for real servers.
    fcm_project_id: str | None = None
    fcm_endpoint: str | None = None  # tests: the loopback stand-in; production: unset (Google)
    fcm_credentials: Path | None = None  # service-account JSON; unset = anonymous (tests only)
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:ops@liandong.invalid"
    # Residents' subscriptions (issue 15). `push_test_hosts`: hosts push endpoints may name over
    # plain http and on non-public addresses (loopback receivers in tests); empty in production.
    push_test_hosts: tuple[str, ...] = ()
    # Other authorities' CAP feeds (docs/alerts.md) are fetched over https from public
    # addresses only; `alert_feed_test_hosts` are exempt (loopback feeds in tests).
    alert_feed_test_hosts: tuple[str, ...] = ()
    resident_register_limit: int = 10  # registrations per client address per window
    resident_register_window_s: int = 3600
    warning_poll_s: float = 2.0  # how often the warning stream checks for changes
    # SMS through Tencent Cloud (push/sms.py): unset = no SMS sender in this process.
    sms_secret_id: str | None = None
    sms_secret_key: str | None = None
    sms_app_id: str | None = None
    sms_sign: str = "联动预警"
    sms_template_code: str | None = None  # one parameter: the code
    sms_template_warning: str | None = None  # parameters: level, headline, instruction
    sms_endpoint: str | None = None  # tests: the loopback stand-in; production: unset
    sms_region: str = "ap-guangzhou"
    background_jobs: bool = False  # outbox worker + escalation loop inside the server process
    outbox_poll_s: float = 1.0
    escalate_poll_s: float = 10.0
    escalation_window_s: int = 180  # accept window for level I-II tasks
    escalation_window_low_s: int = 600  # accept window for level III-IV and stand-alone tasks
    # Delta sync (issue 3): tombstones and eviction markers older than this are purged (daily,
    # with background_jobs, or `liandong sync purge`); older device cursors get a resync.
    sync_tombstone_days: float = 30.0
    sync_purge_interval_s: float = 24 * 3600.0
    # Public warnings (issue 11, docs/alerts.md). CAP documents are signed (enveloped XML
    # signature, RSA-SHA256) when both a PEM private key and its PEM certificate are given.
    cap_signing_key: Path | None = None
    cap_signing_cert: Path | None = None
    cap_import_max_bytes: int = 512 * 1024  # another authority's CAP document, at most
    cap_feed_retention_h: float = 48.0  # cancelled/expired warnings stay in the Atom feed
    alert_feed_poll_s: float = 300.0  # polling other authorities' feeds, with background_jobs
    public_rate_per_min: int = 120  # requests per client address to /api/v1/public/, per process
    public_max_age_s: int = 30  # Cache-Control max-age of the public lists and feed
    public_url: str | None = None  # absolute base of links in the Atom feed (else the request's)
    # Load shedding (issue 13, server/admission.py): per process, `admission_limit` requests
    # at work (0: no limit; None: 16 on PostgreSQL, 2 on SQLite), up to `admission_queue`
    # (None: 128 on PostgreSQL, 256 on SQLite) waiting at most `admission_wait_s`; the rest
    # get 503 + Retry-After of `admission_retry_after_s` plus up to as much jitter.
    # `admission_adaptive`: while the queue stands, refuses requests and the loop runs late,
    # fewer at work (down to 4) and shorter waits (0.1 s); False keeps them fixed.
    admission_limit: int | None = None
    admission_queue: int | None = None
    admission_wait_s: float = 1.0
    admission_retry_after_s: int = 10
    admission_adaptive: bool = True
    # The event loop of `liandong serve` and `liandong worker` (server/loops.py): uvloop, or
    # `asyncio` to fall back to the standard library's loop.
    event_loop: str = DEFAULT_EVENT_LOOP

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
            login_delay_s=float(env("LIANDONG_LOGIN_DELAY", "1")),
            login_address_cap=int(cap) if (cap := env("LIANDONG_LOGIN_ADDRESS_CAP")) else None,
            trusted_proxies=tuple(
                p.strip() for p in env("LIANDONG_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            storage=env("LIANDONG_STORAGE", "disk"),
            media_dir=Path(env("LIANDONG_MEDIA_DIR", str(var_dir / "media"))),
            s3_bucket=env("LIANDONG_S3_BUCKET"),
            s3_endpoint_url=env("LIANDONG_S3_ENDPOINT_URL"),
            demo_password=env("LIANDONG_DEMO_PASSWORD", "liandong-demo"),
            s3_region=env("LIANDONG_S3_REGION", "us-east-1"),
            s3_prefix=env("LIANDONG_S3_PREFIX", ""),
            s3_access_key_id=env("LIANDONG_S3_ACCESS_KEY_ID"),
            s3_secret_access_key=env("LIANDONG_S3_SECRET_ACCESS_KEY"),
            media_max_bytes=int(env("LIANDONG_MEDIA_MAX_BYTES", str(40 * 1024 * 1024))),
            upload_ttl_s=int(env("LIANDONG_UPLOAD_TTL", str(24 * 3600))),
            evidence_max_distance_m=float(env("LIANDONG_EVIDENCE_MAX_DISTANCE_M", "500")),
            evidence_max_time_s=int(env("LIANDONG_EVIDENCE_MAX_TIME", str(24 * 3600))),
            local_tz=env("LIANDONG_LOCAL_TZ", "Asia/Shanghai"),
            hazard_jobs_interval_s=float(env("LIANDONG_HAZARD_JOBS_INTERVAL", "60")),
            check_grace_weeks=int(env("LIANDONG_CHECK_GRACE_WEEKS", "1")),
            check_remind_days=int(env("LIANDONG_CHECK_REMIND_DAYS", "1")),
            fcm_project_id=env("LIANDONG_FCM_PROJECT_ID"),
            fcm_endpoint=env("LIANDONG_FCM_ENDPOINT"),
            fcm_credentials=Path(cred) if (cred := env("LIANDONG_FCM_CREDENTIALS")) else None,
            vapid_private_key=env("LIANDONG_VAPID_PRIVATE_KEY"),
            vapid_subject=env("LIANDONG_VAPID_SUBJECT", "mailto:ops@liandong.invalid"),
            push_test_hosts=tuple(
                h.strip().lower()
                for h in env("LIANDONG_PUSH_TEST_HOSTS", "").split(",")
                if h.strip()
            ),
            alert_feed_test_hosts=tuple(
                h.strip().lower()
                for h in env("LIANDONG_ALERT_FEED_TEST_HOSTS", "").split(",")
                if h.strip()
            ),
            resident_register_limit=int(env("LIANDONG_RESIDENT_REGISTER_LIMIT", "10")),
            resident_register_window_s=int(env("LIANDONG_RESIDENT_REGISTER_WINDOW", "3600")),
            warning_poll_s=float(env("LIANDONG_WARNING_POLL", "2")),
            sms_secret_id=env("LIANDONG_SMS_SECRET_ID"),
            sms_secret_key=env("LIANDONG_SMS_SECRET_KEY"),
            sms_app_id=env("LIANDONG_SMS_APP_ID"),
            sms_sign=env("LIANDONG_SMS_SIGN", "联动预警"),
            sms_template_code=env("LIANDONG_SMS_TEMPLATE_CODE"),
            sms_template_warning=env("LIANDONG_SMS_TEMPLATE_WARNING"),
            sms_endpoint=env("LIANDONG_SMS_ENDPOINT"),
            sms_region=env("LIANDONG_SMS_REGION", "ap-guangzhou"),
            background_jobs=env("LIANDONG_BACKGROUND_JOBS", "1") not in ("0", "false", "no"),
            outbox_poll_s=float(env("LIANDONG_OUTBOX_POLL", "1.0")),
            escalate_poll_s=float(env("LIANDONG_ESCALATE_POLL", "10")),
            escalation_window_s=int(env("LIANDONG_ESCALATION_WINDOW", "180")),
            escalation_window_low_s=int(env("LIANDONG_ESCALATION_WINDOW_LOW", "600")),
            sync_tombstone_days=float(env("LIANDONG_SYNC_TOMBSTONE_DAYS", "30")),
            sync_purge_interval_s=float(env("LIANDONG_SYNC_PURGE_INTERVAL", str(24 * 3600))),
            cap_signing_key=Path(k) if (k := env("LIANDONG_CAP_SIGNING_KEY")) else None,
            cap_signing_cert=Path(c) if (c := env("LIANDONG_CAP_SIGNING_CERT")) else None,
            cap_import_max_bytes=int(env("LIANDONG_CAP_IMPORT_MAX_BYTES", str(512 * 1024))),
            cap_feed_retention_h=float(env("LIANDONG_CAP_FEED_RETENTION_H", "48")),
            alert_feed_poll_s=float(env("LIANDONG_ALERT_FEED_POLL", "300")),
            public_rate_per_min=int(env("LIANDONG_PUBLIC_RATE_PER_MIN", "120")),
            public_max_age_s=int(env("LIANDONG_PUBLIC_MAX_AGE", "30")),
            public_url=env("LIANDONG_PUBLIC_URL"),
            admission_limit=int(limit) if (limit := env("LIANDONG_ADMISSION_LIMIT")) else None,
            admission_queue=int(queue) if (queue := env("LIANDONG_ADMISSION_QUEUE")) else None,
            admission_wait_s=float(env("LIANDONG_ADMISSION_WAIT", "1.0")),
            admission_retry_after_s=int(env("LIANDONG_ADMISSION_RETRY_AFTER", "10")),
            admission_adaptive=env("LIANDONG_ADMISSION_ADAPTIVE", "1") != "0",
            event_loop=_event_loop(env("LIANDONG_EVENT_LOOP", DEFAULT_EVENT_LOOP)),
        )


def _event_loop(name: str) -> str:
    name = name.strip().lower()
    if name not in EVENT_LOOPS:
        raise ValueError(f"LIANDONG_EVENT_LOOP={name!r}: one of {', '.join(EVENT_LOOPS)}")
    return name
