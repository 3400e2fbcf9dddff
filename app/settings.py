"""All configuration, read once from the environment (prefix IMAGEGATE_).

Nothing else in the package reads os.environ; everything receives a Settings object.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_CHARS = 24


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

    # Model catalog (JSON); the packaged one by default.
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

    # Credits: a hold outlives any request; the sweeper releases what a dead process left.
    hold_ttl_seconds: int = Field(default=900, ge=1)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)

    # Threads that decode and re-encode images (CPU-bound); default: one fewer than the
    # cores, at least one, so the event loop keeps a core.
    image_workers: int | None = Field(default=None, ge=1, le=64)

    # Input bounds.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_source_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_source_image_pixels: int = Field(default=40_000_000, ge=1024)
    # Megapixels decoded at once by the whole process (source images and upstream
    # outputs, ~4 bytes each, a transcode counting 3x): memory is bounded by this, not by
    # thread counts. Work beyond it waits within the request deadline; a source image
    # larger than all of it is a 400.
    decode_budget_mpx: float = Field(default=64, ge=0.01)
    # MiB of request bodies in flight at once: a body over 64 KiB (a source image) holds
    # 4x its Content-Length (its copies on the way upstream) from before it is read until
    # its response is ready; beyond it requests wait up to the wait below, then 503 busy.
    # At least 4x IMAGEGATE_MAX_BODY_BYTES.
    request_bytes_budget_mb: float = Field(default=128, gt=0)
    request_bytes_wait_seconds: float = Field(default=60.0, ge=0, le=3600)

    # Rate limits (requests per minute) unless a tenant has its own; Redis shares them
    # between replicas, otherwise each process counts alone.
    redis_url: str | None = None
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

    @property
    def request_bytes_budget(self) -> int:
        return int(self.request_bytes_budget_mb * 1024 * 1024)

    @model_validator(mode="after")
    def _in_flight_below_pool(self) -> Settings:
        if self.upstream_max_in_flight >= self.upstream_max_connections:
            raise ValueError(
                "IMAGEGATE_UPSTREAM_MAX_IN_FLIGHT must be below IMAGEGATE_UPSTREAM_MAX_CONNECTIONS"
            )
        return self

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
