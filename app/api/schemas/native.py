"""Response models of the native routes under /api/v1."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.api.schemas.common import ApiModel
from app.api.schemas.openai import OpenAIModel


class ContractImage(ApiModel):
    """One image as the seed's contract shows it (`url`, `text`, `mimeType`,
    `fileSize`), plus its size, position and the model that delivered it."""

    url: str
    text: str | None
    mime_type: str
    file_size: int
    width: int
    height: int
    index: int
    model: str


class ImageFailure(ApiModel):
    index: int
    code: str
    error: str


class Generation(ApiModel):
    """The 200 of generate-image: the seed's `images` and `numImages`, plus the
    generation id, the model asked for and the credits charged and left. `failures`
    lists the images that failed upstream (not charged) when some were delivered."""

    images: list[ContractImage]
    num_images: int
    id: str
    model: str
    credits_charged: int
    credits_remaining: int
    failures: list[ImageFailure] | None = None


class JobAccepted(ApiModel):
    """The 202 of `Prefer: respond-async`; poll `statusUrl`."""

    id: str
    status: Literal["queued"]
    status_url: str


class JobProgress(ApiModel):
    images_done: int
    images_total: int


class JobError(ApiModel):
    status: int | None
    code: str | None
    error: str | None


class WebhookAttempt(ApiModel):
    """One POST: the receiver's status code, or why there was none (`error`)."""

    attempt: int
    at: str
    status_code: int | None
    error: str | None


class JobWebhook(ApiModel):
    """The job's `webhookUrl` and its attempts so far; `nextAttemptAt` while pending
    (null until the job ends)."""

    url: str
    status: Literal["pending", "delivered", "failed"]
    next_attempt_at: str | None
    deliveries: list[WebhookAttempt]


class Job(ApiModel):
    """An async job: status and progress; once succeeded, the generation's body
    (`images`, `numImages`, `id`, ...); once failed, the `error` it would have answered;
    with a `webhookUrl`, its `webhook` deliveries (the webhook POSTs this body, without
    `webhook`)."""

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: JobProgress
    created_at: str
    completed_at: str | None
    error: JobError | None = None
    images: list[ContractImage] | None = None
    num_images: int | None = None
    id: str | None = None
    model: str | None = None
    credits_charged: int | None = None
    credits_remaining: int | None = None
    webhook: JobWebhook | None = None


class ImageItem(ApiModel):
    """A stored image with what was asked for it; `url` is freshly signed."""

    id: str
    url: str
    mime_type: str
    file_size: int
    width: int
    height: int
    model: str
    prompt: str
    style_preset: str
    aspect_ratio: str
    image_to_image: bool
    text: str | None
    index: int
    generation_id: str
    created_at: str


class ImagePage(ApiModel):
    """A page of images, newest first; `offset` and `nextOffset` when paging by offset."""

    items: list[ImageItem]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int | None = None
    next_offset: int | None = None


class _GalleryType(ApiModel):
    type: Literal["image"]


class GalleryItem(ImageItem, _GalleryType):
    """An image in the gallery: `type` first, then the image's fields."""


class Gallery(ApiModel):
    """The hosted service's gallery; `count` is the number of items in this page."""

    items: list[GalleryItem]
    count: int
    offset: int
    limit: int
    has_more: bool


class LedgerEntry(ApiModel):
    id: int
    kind: Literal["grant", "hold", "capture", "release", "adjustment"]
    amount: int
    note: str | None
    generation_id: str | None
    created_at: str


class KeyCredits(ApiModel):
    """The calling key's own limit and spend (`creditLimit` and `remaining` null: only the
    tenant's balance limits it)."""

    prefix: str
    credit_limit: int | None
    limit_period: str
    period_start: str
    spent: int
    remaining: int | None


class Credits(ApiModel):
    balance: int
    entries: list[LedgerEntry]
    key: KeyCredits | None = None


class Balance(ApiModel):
    balance: int


class ModelSummary(ApiModel):
    id: str
    provider: str
    description: str
    price: int = Field(description="credits per image at imageSize 1K (the default)")
    sizes: list[str] = Field(description="the imageSize values this model offers")
    prices: dict[str, int] = Field(description="credits per image at each of `sizes`")
    native_aspect_ratios: list[str]
    supported_aspect_ratios: list[str]
    image_to_image: bool
    max_reference_images: int = Field(description="source images one request may carry")
    configured: bool = Field(description="false: no credentials here, requests answer 503")
    default: bool


class Models(ApiModel):
    object: Literal["list"]
    data: list[OpenAIModel]
    models: list[ModelSummary]
    default_model: str
    aspect_ratios: list[str]


class Preset(ApiModel):
    id: str
    description: str


class Presets(ApiModel):
    presets: list[Preset]
    default_preset: str


class Health(ApiModel):
    status: Literal["ok"]
    rate_limiter: str
    # Upstream concurrency caps: shared by every replica (Redis), or per process.
    concurrency: Literal["shared", "local", "local (redis unavailable)"]
    request_bytes_in_use: int
    requests_waiting_for_bytes: int


class Readiness(ApiModel):
    """`checks` maps each dependency to `ok`, `timeout` or `error: <kind>`."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
