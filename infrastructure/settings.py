"""Configuration from environment variables, validated once at start-up."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrastructure.keys import KeyRefused, new_master_key, parse_master_key


class SettingsError(ValueError):
    """Configuration values are missing or malformed: every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Env(dict[str, str]):
    """The environment as ``from_env`` reads it: remembers which names were read (the rest of
    ``CHORUS_*`` are unknown: misspelt, or of another version) and collects every problem
    instead of stopping at the first, so an operator fixes them all in one go."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.read: set[str] = set()
        self.problems: list[str] = []

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return super().get(name, default)

    def problem(self, message: str) -> None:
        self.problems.append(message)


# Read by the test suite, never by the server.
_NOT_SETTINGS_PREFIX = "CHORUS_TEST_"


@dataclass(frozen=True)
class Settings:
    """Everything ``chorus serve`` reads from the environment (see README, Configuration)."""

    database_url: str | None = None
    redis_url: str | None = None
    jwt_secret: str | None = None
    # Wraps the data keys of personal fields (issue 20, infrastructure/keys.py).
    master_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    data_dir: Path = field(default_factory=lambda: Path(".chorus"))
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    max_body_bytes: int = 256 * 1024
    rate_limit_per_second: int = 200
    # Open /ws connections per user in one server process (0: no cap).
    ws_connections_per_user: int = 100
    # Catch-up work one /ws connection may cause per minute, in events read (0: no cap).
    ws_catch_up_events_per_minute: int = 100_000
    read_wait_timeout_s: float = 5.0
    db_pool_size: int = 8
    presence_heartbeat_s: float = 10.0
    # Editors' updates are saved at most this long after they arrive (merged per editor).
    document_flush_s: float = 0.05
    document_idle_s: float = 30.0
    yjs_frames_per_second: float = 200.0
    # Document update bytes and updates each user may send per window, per process (0: no cap).
    document_bytes_per_user: int = 16 * 1024 * 1024
    document_updates_per_user: int = 6000
    document_budget_window_s: float = 60.0
    # permessage-deflate on WebSockets: off by default, as each connection compresses every
    # frame anew (no sharing across subscribers) and a document's first frame takes
    # milliseconds to compress; worth it only on slow links.
    ws_compression: bool = False
    # Commands arriving concurrently committed together by one writer thread per process
    # (application/group_commit.py). Off: each command commits alone, in its caller's thread.
    group_commit: bool = True
    # "in-process": each server process runs the projection runner in a thread beside its
    # requests. "external": it does not; ``chorus project`` runs it in a process of its own, and
    # the server follows the read models' positions through NOTIFY (read-your-writes waits).
    projections: str = "in-process"
    # Bearer secret of the instance's operators and auditors: ``/ready`` shows positions,
    # lag and stuck read models' errors only to a request carrying it (unset: to nobody).
    ops_token: str | None = None
    # ``/ready`` says degraded (503) while the slowest read model is this many positions
    # behind the log (0: never for lag; a stuck read model always does).
    ready_max_lag: int = 10_000
    # ``/ready`` says degraded (503) while the event loop runs its timers more than this late
    # (a blocking call or CPU-bound work starving every request of the process; 0: never).
    ready_max_loop_lag_s: float = 1.0

    # -- hostile input (issue 16): see docs/API.md, "Server bounds" ---------------------------
    # Password hashes waiting for a slot of the hashing pool beyond those running; past it a
    # login or sign-up answers 429 at once instead of queueing.
    password_hash_queue: int = 16
    # Failed logins allowed before each further one waits a doubling back-off (0: no throttle).
    login_free_failures_per_account: int = 5
    login_free_failures_per_address: int = 20
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 300.0
    # Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed (none by default).
    trusted_proxies: tuple[str, ...] = ()
    # The HTTP server: request head size (431 past it), the time a connection has to send a
    # request head (or the rest of its body), idle keep-alive, open connections per address
    # and in total (per server process).
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    connections_per_address: int = 64
    max_connections: int = 4096
    # Sign-ups per address and in total per hour (0: no cap).
    signups_per_address_per_hour: int = 20
    signups_per_hour: int = 1000
    # A user's presence session on an instance ends this long after their last socket there
    # closed; a reconnect within it records nothing (connect/close churn appends no events).
    presence_linger_s: float = 2.0
    # ``chorus serve``'s port when ``--port`` is not given: PaaS hosts (Railway, Render,
    # Heroku) say which port to listen on in ``PORT``.
    port: int = 8000
    # Who may scrape ``/metrics``: "ops" (the operators' bearer secret), "public", or "off".
    metrics: str = "ops"
    # The log's format: "auto" (plain on a terminal, JSON lines otherwise), "json", "text";
    # and the time past which a request is logged as slow (0: never).
    log_format: str = "auto"
    slow_request_s: float = 1.0
    # OpenTelemetry traces to this OTLP/HTTP collector (infrastructure/tracing.py); None: off.
    otlp_endpoint: str | None = None

    # -- outgoing webhooks (issue 19): see docs/API.md, "Outgoing webhooks" -------------------
    # Off by default: webhook URLs must be https and reach public addresses only.
    webhook_allow_private: bool = False
    webhook_allow_http: bool = False
    webhook_timeout_s: float = 10.0
    webhook_max_response_bytes: int = 64 * 1024
    # A larger envelope is sent with its largest data fields withheld (docs/API.md).
    webhook_max_payload_bytes: int = 64 * 1024
    # A PEM file of the CAs receivers' certificates are checked against, instead of the
    # usual public ones (a private CA; the tests' own).
    webhook_ca_file: str | None = None
    # Attempts per delivery, the first retry's delay (doubling, at most the max) and the failed
    # attempts in a row after which a webhook is disabled.
    webhook_attempts: int = 8
    webhook_retry_base_s: float = 10.0
    webhook_retry_max_s: float = 3600.0
    webhook_disable_after: int = 20
    # How often the retention worker looks for messages past their workspace's retention
    # (issue 20; application/retention.py).
    retention_poll_s: float = 60.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Raises SettingsError naming every malformed variable."""
        settings, problems, _ = cls.check_env(env)
        if problems:
            raise SettingsError(problems)
        return settings

    @classmethod
    def check_env(cls, env: dict[str, str] | None = None) -> tuple[Settings, list[str], list[str]]:
        """The settings (defaults where a value is malformed), every problem, and the
        ``CHORUS_*`` variables set that no setting reads."""
        read = _Env(dict(os.environ if env is None else env))
        settings = cls._read(read)
        unknown = sorted(
            name
            for name in read
            if name.startswith("CHORUS_")
            and name not in read.read
            and not name.startswith(_NOT_SETTINGS_PREFIX)
        )
        return settings, read.problems, unknown

    @classmethod
    def known_variables(cls) -> set[str]:
        """Every variable a setting reads."""
        env = _Env({})
        cls._read(env)
        return env.read

    @classmethod
    def _read(cls, env: _Env) -> Settings:
        database_url = env.get("DATABASE_URL") or None
        if database_url is not None and not database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            env.problem("DATABASE_URL must be a postgresql:// URL")
            database_url = None
        redis_url = env.get("REDIS_URL") or None
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://")):
            env.problem("REDIS_URL must be a redis:// or rediss:// URL")
            redis_url = None
        secret = env.get("CHORUS_JWT_SECRET") or None
        if secret is not None and len(secret.encode()) < 32:
            env.problem("CHORUS_JWT_SECRET must be at least 32 bytes")
            secret = None
        origins = tuple(
            o.strip() for o in env.get("CHORUS_CORS_ORIGINS", "").split(",") if o.strip()
        )
        master_key = env.get("CHORUS_MASTER_KEY") or None
        if master_key is not None:
            try:
                parse_master_key(master_key)
            except KeyRefused as exc:
                env.problem(str(exc))
                master_key = None
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            jwt_secret=secret,
            master_key=master_key,
            cors_origins=origins,
            data_dir=Path(env.get("CHORUS_DATA_DIR", ".chorus")),
            access_token_ttl_s=_int(env, "CHORUS_ACCESS_TOKEN_TTL_S", 900, 30, 24 * 3600),
            port=_int(env, "PORT", 8000, 1, 65535),
            metrics=_choice(env, "CHORUS_METRICS", METRICS_MODES),
            log_format=_choice(env, "CHORUS_LOG_FORMAT", LOG_FORMATS),
            slow_request_s=_float(env, "CHORUS_SLOW_REQUEST_S", 1.0, 0.0, 3600.0),
            otlp_endpoint=_otlp_endpoint(env),
            refresh_token_ttl_s=_int(
                env, "CHORUS_REFRESH_TOKEN_TTL_S", 30 * 24 * 3600, 300, 365 * 24 * 3600
            ),
            read_wait_timeout_s=_float(env, "CHORUS_READ_WAIT_TIMEOUT_S", 5.0, 0.0, 300.0),
            rate_limit_per_second=_int(env, "CHORUS_RATE_LIMIT_PER_SECOND", 200, 0, 1_000_000),
            ws_connections_per_user=_int(env, "CHORUS_WS_CONNECTIONS_PER_USER", 100, 0, 1_000_000),
            ws_catch_up_events_per_minute=_int(
                env, "CHORUS_WS_CATCH_UP_EVENTS_PER_MINUTE", 100_000, 0, 100_000_000
            ),
            max_body_bytes=_int(env, "CHORUS_MAX_BODY_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024),
            db_pool_size=_int(env, "CHORUS_DB_POOL_SIZE", 8, 1, 200),
            presence_heartbeat_s=_float(env, "CHORUS_PRESENCE_HEARTBEAT_S", 10.0, 0.1, 15.0),
            document_flush_s=_float(env, "CHORUS_DOCUMENT_FLUSH_S", 0.05, 0.0, 5.0),
            document_idle_s=_float(env, "CHORUS_DOCUMENT_IDLE_S", 30.0, 0.1, 3600.0),
            yjs_frames_per_second=_float(
                env, "CHORUS_YJS_FRAMES_PER_SECOND", 200.0, 1.0, 1_000_000.0
            ),
            document_bytes_per_user=_budget_bytes(env),
            document_updates_per_user=_int(
                env, "CHORUS_DOCUMENT_UPDATES_PER_USER", 6000, 0, 1_000_000_000
            ),
            document_budget_window_s=_float(
                env, "CHORUS_DOCUMENT_BUDGET_WINDOW_S", 60.0, 1.0, 24 * 3600.0
            ),
            ws_compression=_bool(env, "CHORUS_WS_COMPRESSION", False),
            group_commit=_bool(env, "CHORUS_GROUP_COMMIT", True),
            projections=_choice(env, "CHORUS_PROJECTIONS", PROJECTIONS_MODES),
            ops_token=_ops_token(env),
            ready_max_lag=_int(env, "CHORUS_READY_MAX_LAG", 10_000, 0, 2**62),
            ready_max_loop_lag_s=_float(env, "CHORUS_READY_MAX_LOOP_LAG_S", 1.0, 0.0, 3600.0),
            password_hash_queue=_int(env, "CHORUS_PASSWORD_HASH_QUEUE", 16, 0, 10_000),
            login_free_failures_per_account=_int(
                env, "CHORUS_LOGIN_FREE_FAILURES_PER_ACCOUNT", 5, 0, 1_000_000
            ),
            login_free_failures_per_address=_int(
                env, "CHORUS_LOGIN_FREE_FAILURES_PER_ADDRESS", 20, 0, 1_000_000
            ),
            login_backoff_base_s=_float(env, "CHORUS_LOGIN_BACKOFF_BASE_S", 1.0, 0.1, 3600.0),
            login_backoff_max_s=_float(env, "CHORUS_LOGIN_BACKOFF_MAX_S", 300.0, 1.0, 86400.0),
            trusted_proxies=tuple(
                p.strip() for p in env.get("CHORUS_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            max_header_bytes=_int(env, "CHORUS_MAX_HEADER_BYTES", 16 * 1024, 1024, 1024 * 1024),
            header_timeout_s=_float(env, "CHORUS_HEADER_TIMEOUT_S", 10.0, 0.1, 300.0),
            keep_alive_s=_int(env, "CHORUS_KEEP_ALIVE_S", 5, 1, 3600),
            connections_per_address=_int(env, "CHORUS_CONNECTIONS_PER_ADDRESS", 64, 0, 1_000_000),
            max_connections=_int(env, "CHORUS_MAX_CONNECTIONS", 4096, 0, 1_000_000),
            signups_per_address_per_hour=_int(
                env, "CHORUS_SIGNUPS_PER_ADDRESS_PER_HOUR", 20, 0, 1_000_000
            ),
            signups_per_hour=_int(env, "CHORUS_SIGNUPS_PER_HOUR", 1000, 0, 1_000_000),
            presence_linger_s=_float(env, "CHORUS_PRESENCE_LINGER_S", 2.0, 0.0, 600.0),
            webhook_allow_private=_bool(env, "CHORUS_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_allow_http=_bool(env, "CHORUS_WEBHOOK_ALLOW_HTTP", False),
            webhook_timeout_s=_float(env, "CHORUS_WEBHOOK_TIMEOUT_S", 10.0, 0.1, 120.0),
            webhook_attempts=_int(env, "CHORUS_WEBHOOK_ATTEMPTS", 8, 1, 100),
            webhook_retry_base_s=_float(env, "CHORUS_WEBHOOK_RETRY_BASE_S", 10.0, 0.01, 86400.0),
            webhook_retry_max_s=_float(
                env, "CHORUS_WEBHOOK_RETRY_MAX_S", 3600.0, 0.01, 7 * 86400.0
            ),
            webhook_disable_after=_int(env, "CHORUS_WEBHOOK_DISABLE_AFTER", 20, 1, 100_000),
            retention_poll_s=_float(env, "CHORUS_RETENTION_POLL_S", 60.0, 0.01, 86400.0),
            webhook_max_payload_bytes=_int(
                env, "CHORUS_WEBHOOK_MAX_PAYLOAD_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024
            ),
            webhook_ca_file=_ca_file(env),
        )

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or one generated once and kept in the data directory."""
        if self.jwt_secret is not None:
            return self.jwt_secret
        path = self.data_dir / "jwt-secret"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        return secret

    def existing_master_key(self) -> str | None:
        """The configured master key or the one in the data directory; never a new one (a
        console command given a new key would read every personal field as erased)."""
        if self.master_key is not None:
            return self.master_key
        path = self.data_dir / "master-key"
        return path.read_text().strip() if path.exists() else None

    def resolved_master_key(self) -> str:
        """The configured master key, or one generated once and kept in the data directory
        (as the JWT secret is): losing that file loses every personal field."""
        if self.master_key is not None:
            return self.master_key
        path = self.data_dir / "master-key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = new_master_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


PROJECTIONS_MODES = ("in-process", "external")
METRICS_MODES = ("ops", "public", "off")
LOG_FORMATS = ("auto", "json", "text")


# Each reader below notes a malformed value as a problem and goes on with the default, so
# that every problem is found in one pass (``from_env`` raises them all together).


def _budget_bytes(env: _Env) -> int:
    """0 (no cap) or at least one largest update (1 MiB), which must always fit."""
    default = 16 * 1024 * 1024
    value = _int(env, "CHORUS_DOCUMENT_BYTES_PER_USER", default, 0, 1 << 40)
    if 0 < value < 1024 * 1024:
        env.problem("CHORUS_DOCUMENT_BYTES_PER_USER must be 0 or at least 1048576")
        return default
    return value


def _ops_token(env: _Env) -> str | None:
    token = env.get("CHORUS_OPS_TOKEN") or None
    if token is not None and len(token.encode()) < 32:
        env.problem("CHORUS_OPS_TOKEN must be at least 32 bytes")
        return None
    return token


def _choice(env: _Env, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``; the first when unset."""
    raw = str(env.get(name, "")).strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        env.problem(f"{name} must be one of {', '.join(choices)}, not {raw!r:.40}")
        return choices[0]
    return raw


def _ca_file(env: _Env) -> str | None:
    """A file of PEM certificates webhooks' TLS trusts instead of the public roots: a
    misspelt path would otherwise fail every delivery, one by one, long after start."""
    name = "CHORUS_WEBHOOK_CA_FILE"
    path = env.get(name) or None
    if path is None:
        return None
    try:
        head = Path(path).read_bytes()[:65536]
    except OSError:
        env.problem(f"{name} must name a readable file of PEM certificates")
        return None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        env.problem(f"{name} must name a file of PEM certificates (none found in it)")
        return None
    return str(path)


def _otlp_endpoint(env: _Env) -> str | None:
    """``CHORUS_OTLP_ENDPOINT``, else OpenTelemetry's own ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    found: list[str] = []
    for name in ("CHORUS_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = env.get(name) or None
        if value is not None and not value.startswith(("http://", "https://")):
            env.problem(f"{name} must be an http:// or https:// URL (an OTLP/HTTP collector)")
        elif value is not None:
            found.append(str(value))
    return found[0] if found else None


def _bool(env: _Env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    env.problem(f"{name} must be true or false, not {raw!r:.40}")
    return default


def _int(env: _Env, name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        env.problem(f"{name} must be a whole number, not {raw!r:.40}")
        return default
    if not low <= value <= high:
        env.problem(f"{name} must be between {low} and {high}, not {value}")
        return default
    return value


def _float(env: _Env, name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        env.problem(f"{name} must be a number, not {raw!r:.40}")
        return default
    if not low <= value <= high:
        env.problem(f"{name} must be between {low} and {high}, not {value}")
        return default
    return value
