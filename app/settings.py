"""All configuration, read once from the environment (prefix IMAGEGATE_).

Nothing else in the package reads os.environ; everything receives a Settings object.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_CHARS = 24
# What a generate-image body holds besides its source images (prompt, fields, data URL
# headers, JSON punctuation): room the source-bytes total leaves in the body limit.
BODY_SLACK_BYTES = 64 * 1024


def encoded_body_bytes(source_bytes: int) -> int:
    """The body size that `source_bytes` of images need as base64 data URLs."""
    return -(-source_bytes // 3) * 4 + BODY_SLACK_BYTES


_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# Query parameters asyncpg.connect (or SQLAlchemy's asyncpg dialect) takes; libpq's
# others (sslrootcert, connect_timeout, ...) would fail inside the driver, unexplained.
_ASYNCPG_QUERY = frozenset(
    {
        "host",
        "port",
        "ssl",
        "direct_tls",
        "passfile",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "prepared_statement_cache_size",
    }
)


def asyncpg_database_url(url: str) -> str:
    """A Postgres URL as SQLAlchemy's asyncpg dialect takes it; other URLs unchanged.

    `postgresql://` and `postgres://` (what hosting services hand out) get the asyncpg
    driver, and libpq's `sslmode=` becomes asyncpg's `ssl=` (same mode names). A query
    parameter asyncpg does not take is refused with its name (ValueError).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        return url
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+asyncpg"
    path, qmark, query = rest.partition("?")
    if not qmark:
        return f"{scheme}://{path}"
    params = [tuple(part.partition("=")[::2]) for part in query.split("&") if part]
    translated = []
    for name, value in params:
        if name == "sslmode":
            if value not in _SSL_MODES:
                raise ValueError(f"sslmode must be one of {', '.join(sorted(_SSL_MODES))}")
            name = "ssl"
        elif name not in _ASYNCPG_QUERY:
            raise ValueError(
                f"the database URL's query parameter {name!r} is not supported by asyncpg"
                f" (supported: sslmode, {', '.join(sorted(_ASYNCPG_QUERY))})"
            )
        translated.append(f"{name}={value}")
    return f"{scheme}://{path}?{'&'.join(translated)}"


def _key_field(*names: str) -> str | None:
    return Field(default=None, validation_alias=AliasChoices(*names))


class Settings(BaseSettings):
    # Errors name the field, never its value: several values are secrets.
    model_config = SettingsConfigDict(
        env_prefix="IMAGEGATE_", extra="ignore", hide_input_in_errors=True
    )

    # Embedded defaults: a SQLite file and a local directory under ./data.
    data_dir: Path = Path("./data")
    database_url: str | None = None
    # How long opening a Postgres connection may take before it counts as an outage
    # (asyncpg waits 60 s by default, e.g. when a firewall drops packets).
    database_connect_timeout_seconds: float = Field(default=10, gt=0, le=120)
    # How long one statement may run on Postgres (server-side statement_timeout; the
    # client gives up 1 s later on a server that does not answer at all). Our slowest
    # statements take well under a second; migrations are not bounded.
    db_statement_timeout_seconds: float = Field(default=10, gt=0, le=3600)
    # The Postgres connection pool: connections kept open, extra ones opened under load,
    # and how long a request waits for a free one before it answers 503. The timeout's
    # default is per backend (10 s Postgres, 60 s SQLite, whose single connection is
    # queued on by design: app/db/engine.py); SQLite ignores size and overflow.
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    db_pool_overflow: int = Field(default=20, ge=0, le=1000)
    db_pool_timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    image_dir: Path | None = None

    # S3-compatible storage; credentials come the standard AWS way (env, profile, role).
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Presign URLs against this endpoint instead of s3_endpoint_url, for when clients reach
    # the store under another name than the gateway does (http://minio:9000 inside compose,
    # http://localhost:9000 from the host).
    s3_presign_endpoint_url: str | None = None
    # The base image links name, so links posted elsewhere reach a host others can: with S3
    # a CDN in front of the bucket (objects at <base>/<key>); with the local directory the
    # gateway's public address (<base>/files/...). Unset: presigned URLs, or the request's host.
    public_base_url: str | None = None

    # Signed URLs served by the gateway (local backend; S3 too when the TTL is 0).
    url_signing_secret: str | None = None
    # 0: links never expire (still unguessable, dead once the image is deleted).
    url_ttl_seconds: int = Field(default=3600, ge=0)

    # Provider credentials: IMAGEGATE_* first, then the variables the SDKs use by habit.
    gemini_api_key: str | None = _key_field(
        "IMAGEGATE_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"
    )
    openai_api_key: str | None = _key_field("IMAGEGATE_OPENAI_API_KEY", "OPENAI_API_KEY")
    bfl_api_key: str | None = _key_field("IMAGEGATE_BFL_API_KEY", "BFL_API_KEY")
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    openai_base_url: str = "https://api.openai.com/v1"
    bfl_base_url: str = "https://api.bfl.ai"
    # Hosts the BFL adapter may poll and download samples from (exact or "*.suffix");
    # the base URL's host is always trusted. Samples above the cap are refused mid-stream.
    bfl_allowed_hosts: tuple[str, ...] = ("api.bfl.ai", "*.bfl.ai")
    bfl_max_sample_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # First pause between polls of a BFL task; it grows x1.5 up to 4 s.
    bfl_poll_interval_seconds: float = Field(default=0.5, gt=0)
    # A self-hosted AUTOMATIC1111 web UI (or Forge, SD.Next) started with --api, e.g.
    # http://gpu-box:7860; unset: the automatic1111/ models are not configured. Its key is
    # "user:password" for the web UI's --api-auth (HTTP Basic), or a proxy's bearer token.
    automatic1111_base_url: str | None = None
    automatic1111_api_key: str | None = None

    # Model catalog (JSON); the packaged one by default. Self-hosted upstreams
    # (openai-compatible, automatic1111, plugins) are added as entries of such a file.
    catalog: Path | None = None

    # Serve built-in provider emulators and point the adapters at them.
    emulate: bool = False

    # Upstream calls: attempts per image and one deadline for the whole request.
    upstream_max_attempts: int = Field(default=3, ge=1, le=10)
    upstream_attempt_timeout_seconds: float = Field(default=60.0, gt=0)
    upstream_deadline_seconds: float = Field(default=180.0, gt=0)
    retry_base_delay_seconds: float = Field(default=0.5, ge=0)
    retry_max_delay_seconds: float = Field(default=8.0, ge=0)
    # Per provider: the connection pool, the exchanges in flight at once (below the pool, so
    # it is never contended), the connect and pool-wait timeouts, and the largest upstream
    # body accepted (decoded; a 4K PNG in base64 inside JSON fits the default).
    upstream_max_connections: int = Field(default=100, ge=2, le=10_000)
    upstream_max_in_flight: int = Field(default=80, ge=1, le=10_000)
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    upstream_max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)

    # Async jobs (Prefer: respond-async) each process runs at once.
    job_concurrency: int = Field(default=4, ge=1, le=64)
    # Claims of one job (counted when claimed, whatever ended the attempt: an unexpected
    # error, a lost database, a killed process); past it the job is failed for good.
    job_max_attempts: int = Field(default=3, ge=1, le=100)

    # Webhooks of async jobs (app/jobs/webhooks.py): attempts in all, and the wait after
    # each failed one (the last repeats); the defaults give up after about 43 minutes.
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0], min_length=1, max_length=20
    )
    # Deliveries to loopback, private, link-local and metadata addresses: tests only.
    webhook_allow_private: bool = False
    webhook_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # Credits: a hold outlives any request; the sweeper releases what a dead process left.
    hold_ttl_seconds: int = Field(default=900, ge=1)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)

    # Threads that decode and re-encode images (CPU-bound); default: one fewer than the
    # cores, at least one, so the event loop keeps a core.
    image_workers: int | None = Field(default=None, ge=1, le=64)
    # CPython's cyclic-collector thresholds while serving (gc.set_threshold: allocations
    # before a generation-0 collection, then generation-0 and generation-1 collections
    # before the next older one). A full collection stops the event loop to walk every
    # live object: with thousands of generations in flight, over a million and up to 0.6 s.
    # The default runs one ~100x less often than CPython's (700, 10, 10).
    gc_thresholds: list[int] = Field(default_factory=lambda: [7000, 10, 100])

    # Input bounds.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_source_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_source_image_pixels: int = Field(default=40_000_000, ge=1024)
    # Decoded bytes of all the source images of one request (`sourceImages`) together.
    # Unset: what IMAGEGATE_MAX_BODY_BYTES admits once base64-encoded, with 64 KiB left for
    # the rest of the body (about 12 MiB with the default 16 MiB body).
    max_source_bytes_total: int | None = Field(default=None, ge=1024)
    # Megapixels decoded at once by the whole process (source images and upstream
    # outputs, ~4 bytes each, a transcode counting 3x): memory is bounded by this, not by
    # thread counts. Work beyond it waits within the request deadline; a source image
    # larger than all of it is a 400. 80 admits the largest 4K output (Gemini's 21:9 at
    # 6336x2688, 17 MP) even as a /v1 exact-size render (4x: 68 MP).
    decode_budget_mpx: float = Field(default=80, ge=0.01)
    # MiB of request bodies in flight at once: a body over 64 KiB (a source image) holds
    # 4x its Content-Length (its copies on the way upstream) from before it is read until
    # its response is ready; beyond it requests wait up to the wait below, then 503 busy.
    # At least 4x IMAGEGATE_MAX_BODY_BYTES.
    request_bytes_budget_mb: float = Field(default=128, gt=0)
    request_bytes_wait_seconds: float = Field(default=60.0, ge=0, le=3600)

    # Rate limits (requests per minute) unless a tenant has its own; Redis shares them
    # between replicas, otherwise each process counts alone.
    redis_url: str | None = None
    # Upstream calls in flight at once per provider account (gemini, openai, bfl), across
    # every model of it, on top of each model's catalog `max_concurrency`; JSON, e.g.
    # {"bfl": 24}. With IMAGEGATE_REDIS_URL both caps hold across all replicas.
    provider_max_concurrency: dict[str, int] = Field(default_factory=dict)
    rate_limit_key_per_minute: int = Field(default=60, ge=1)
    rate_limit_tenant_per_minute: int = Field(default=120, ge=1)
    # Failed authentications per client address per minute (0: unlimited); past it the
    # address gets 429 before any key lookup, until Retry-After.
    auth_failures_per_minute: int = Field(default=20, ge=0, le=100_000)
    # Reverse proxies in front of the gateway that append to X-Forwarded-For; 0 (none)
    # means the socket peer is the client and X-Forwarded-For is ignored.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # Successful key lookups are remembered this long (0: off), so a request does not spend
    # a database transaction on its key; revocations by another process apply within it.
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=60)

    # Connection limits of `imagegate serve` (app/server_limits.py): a slow client is cut
    # after these, whether or not a reverse proxy is in front.
    server_header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    server_body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    server_max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    # Connections + in-flight requests beyond this are answered 503 by uvicorn.
    server_limit_concurrency: int = Field(default=1000, ge=1)
    # Connections the kernel queues before accept().
    server_backlog: int = Field(default=2048, ge=1)
    # Graceful drain on SIGTERM (app/api/drain.py): /readyz 503 and new requests refused
    # for the delay (load balancers notice), then in-flight requests get up to
    # drain_seconds to finish. A pod's terminationGracePeriodSeconds must exceed both.
    drain_delay_seconds: float = Field(default=5.0, ge=0, le=300)
    drain_seconds: int = Field(default=30, ge=1, le=3600)

    log_level: str = "INFO"
    # OpenTelemetry traces over OTLP/HTTP to this base URL (/v1/traces is appended), e.g.
    # http://otel-collector:4318. Unset: the standard OTEL_EXPORTER_OTLP_* variables, if
    # any, decide (app/observability/tracing.py); needs the `otel` extra.
    otel_exporter_otlp_endpoint: str | None = None
    # Interactive API docs at /docs (Swagger UI from the installed package, under a strict
    # CSP); off by default. /openapi.json is always served.
    docs_enabled: bool = False

    # The admin HTTP API (/admin/v1) exists only when this is set; send it as a Bearer token.
    admin_token: SecretStr | None = None

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token_strong(cls, value: object) -> object:
        if isinstance(value, str | SecretStr):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not text.strip():
                return None  # IMAGEGATE_ADMIN_TOKEN= (empty) leaves the admin API off
            if len(text) < MIN_ADMIN_TOKEN_CHARS:
                raise ValueError(
                    f"IMAGEGATE_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
                )
        return value

    @field_validator("webhook_retry_delays_seconds")
    @classmethod
    def _delays_bounded(cls, value: list[float]) -> list[float]:
        if any(not 0 <= delay <= 86_400 for delay in value):
            raise ValueError("each webhook retry delay must be 0 to 86400 seconds")
        return value

    @field_validator("gc_thresholds")
    @classmethod
    def _three_thresholds(cls, value: list[int]) -> list[int]:
        if len(value) != 3 or any(not 1 <= count <= 10_000_000 for count in value):
            raise ValueError("IMAGEGATE_GC_THRESHOLDS must be three integers from 1 to 10000000")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_for_asyncpg(cls, value: str | None) -> str | None:
        return asyncpg_database_url(value) if value else value

    @model_validator(mode="after")
    def _url_ttl_is_zero_or_a_minute(self) -> Settings:
        if 0 < self.url_ttl_seconds < 60:
            raise ValueError("IMAGEGATE_URL_TTL_SECONDS must be 0 (never expire) or at least 60")
        return self

    @model_validator(mode="after")
    def _holds_outlive_requests(self) -> Settings:
        # The sweeper treats an expired hold's generation as dead and deletes its objects,
        # so no live request may still be running when its hold expires.
        if self.hold_ttl_seconds <= self.upstream_deadline_seconds + 60:
            raise ValueError(
                "IMAGEGATE_HOLD_TTL_SECONDS must exceed IMAGEGATE_UPSTREAM_DEADLINE_SECONDS + 60"
            )
        return self

    @model_validator(mode="after")
    def _request_budget_holds_a_full_body(self) -> Settings:
        if self.request_bytes_budget < 4 * self.max_body_bytes:
            raise ValueError(
                "IMAGEGATE_REQUEST_BYTES_BUDGET_MB must be at least 4x IMAGEGATE_MAX_BODY_BYTES"
                f" ({4 * self.max_body_bytes / 1024 / 1024:g} MiB)"
            )
        return self

    @model_validator(mode="after")
    def _body_admits_the_source_total(self) -> Settings:
        total = self.max_source_bytes_total
        if total is not None and encoded_body_bytes(total) > self.max_body_bytes:
            raise ValueError(
                f"IMAGEGATE_MAX_SOURCE_BYTES_TOTAL ({total}) does not fit in a request body of "
                f"IMAGEGATE_MAX_BODY_BYTES ({self.max_body_bytes}) once base64-encoded; raise "
                f"the body limit to at least {encoded_body_bytes(total)} or lower the total"
            )
        return self

    @property
    def source_bytes_total(self) -> int:
        """The most decoded bytes all of one request's source images may have together."""
        if self.max_source_bytes_total is not None:
            return self.max_source_bytes_total
        return max(0, self.max_body_bytes - BODY_SLACK_BYTES) // 4 * 3

    @property
    def request_bytes_budget(self) -> int:
        return int(self.request_bytes_budget_mb * 1024 * 1024)

    @field_validator("provider_max_concurrency")
    @classmethod
    def _provider_caps_positive(cls, caps: dict[str, int]) -> dict[str, int]:
        for name, cap in caps.items():
            if cap < 1:
                raise ValueError(f"IMAGEGATE_PROVIDER_MAX_CONCURRENCY: {name} must be at least 1")
        return caps

    @model_validator(mode="after")
    def _in_flight_below_pool(self) -> Settings:
        if self.upstream_max_in_flight >= self.upstream_max_connections:
            raise ValueError(
                "IMAGEGATE_UPSTREAM_MAX_IN_FLIGHT must be below IMAGEGATE_UPSTREAM_MAX_CONNECTIONS"
            )
        return self

    def upstream_key(self, variable: str) -> str | None:
        """The value of the environment variable a catalog entry's `api_key_env` names
        (None when unset or blank): read here, where all configuration is read. A
        variable the gateway reads as a setting (the admin token, the signing secret, a
        cloud provider's key) or an AWS credential is refused (ValueError): an entry must
        not send the gateway's own secrets to the server its base_url names."""
        if variable.upper().startswith("AWS_") or variable.upper() in _setting_variables():
            raise ValueError(
                f"{variable} is one of the gateway's own settings or credentials; give the "
                "upstream's key a variable of its own"
            )
        value = os.environ.get(variable, "").strip()
        return value or None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'imagegate.db'}"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_image_workers(self) -> int:
        if self.image_workers is not None:
            return self.image_workers
        return max(1, (os.cpu_count() or 2) - 1)

    @property
    def decode_budget_pixels(self) -> int:
        return int(self.decode_budget_mpx * 1_000_000)

    @property
    def resolved_image_dir(self) -> Path:
        return self.image_dir if self.image_dir is not None else self.data_dir / "images"


@functools.cache
def _setting_variables() -> frozenset[str]:
    """Every environment variable Settings reads: IMAGEGATE_<field> and the aliases."""
    names = {f"IMAGEGATE_{name.upper()}" for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice).upper() for choice in field.validation_alias.choices)
    return frozenset(names)
