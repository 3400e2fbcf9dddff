"""Validation of the generate-image request body, with messages that name the field."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.errors import InvalidRequest
from app.generation.presets import PRESET_NAMES
from app.generation.sources import parse_sources
from app.imaging.aspect import CONTRACT_RATIOS
from app.imaging.exact import OutputSpec
from app.providers.base import ImageOptions
from app.providers.catalog import DEFAULT_IMAGE_SIZE, IMAGE_SIZES, Catalog, CatalogModel

DEFAULT_MODEL = "google/gemini-2.5-flash-image"
MAX_PROMPT_CHARS = 4000
MAX_IMAGES = 4
# Emoji sequences: the joiner, and a flag's tag sequence (UTS #51, ED-14a).
_ZWJ = "\u200d"
_TAG_BASE = "\U0001f3f4"
_TAG_FIRST, _TAG_LAST, _CANCEL_TAG = "\U000e0020", "\U000e007e", "\U000e007f"


class GenerateImageBody(BaseModel):
    """The documented request shape (for OpenAPI); parsing is done by parse_generate_request."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = DEFAULT_MODEL
    aspectRatio: str = Field(default="1:1", json_schema_extra={"enum": list(CONTRACT_RATIOS)})
    numImages: int = Field(default=1, ge=1, le=MAX_IMAGES)
    stylePreset: str = Field(default="none", json_schema_extra={"enum": list(PRESET_NAMES)})
    sourceImage: str | None = Field(
        default=None,
        description="data:image/(png|jpeg|webp);base64,... for image-to-image; not together "
        "with sourceImages",
    )
    sourceImages: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Several reference images, data URLs like sourceImage, in order: from 1 up "
        "to the model's maxReferenceImages (GET /api/v1/models; the limit is per model). Each "
        "has sourceImage's bounds, and all together at most the gateway's total "
        "(IMAGEGATE_MAX_SOURCE_BYTES_TOTAL); not together with sourceImage",
    )
    webhookUrl: str | None = Field(
        default=None,
        max_length=2048,
        description="With `Prefer: respond-async` only: an http(s) URL the finished job's"
        " body is POSTed to, signed per Standard Webhooks with the tenant's webhook secret",
    )
    imageSize: str = Field(
        default=DEFAULT_IMAGE_SIZE,
        description="Output resolution: the long side about 512, 1024, 2048 or 4096 px; "
        "each model offers some (GET /api/v1/models lists its sizes and their prices)",
        json_schema_extra={"enum": list(IMAGE_SIZES)},
    )


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation as the service runs it, whatever route it came from."""

    prompt: str
    model: CatalogModel
    aspect_ratio: str
    num_images: int
    style_preset: str = "none"
    # Encoded source images (png/jpeg/webp bytes, not yet decoded), in the caller's order.
    source_images: tuple[bytes, ...] = field(default=(), repr=False)
    mask: bytes | None = field(default=None, repr=False)  # OpenAI-style edit mask (PNG)
    options: ImageOptions = field(default_factory=ImageOptions)
    # The exact size and format to store (the /v1 routes); None: WebP at aspect_ratio.
    output: OutputSpec | None = None
    # What the caller called the source images, for the messages that refuse them.
    source_field: str = "sourceImage"
    image_size: str = "1K"  # one of model.sizes; the price is model.price_for(image_size)


def parse_generate_request(
    payload: Any,
    catalog: Catalog,
    *,
    max_source_bytes: int,
    max_source_bytes_total: int | None = None,
) -> GenerateRequest:
    """The native contract's body; `sourceImage` or `sourceImages` data URLs come back
    decoded to bytes (base64 work: call this off the event loop when the body carries
    one). `max_source_bytes` bounds each image, `max_source_bytes_total` all of them."""
    if not isinstance(payload, dict):
        raise InvalidRequest("Request body must be a JSON object")
    prompt = validate_prompt(payload.get("prompt"))
    model = _model(payload.get("model"), catalog)
    sources, source_field = parse_sources(
        payload, model, max_bytes=max_source_bytes, max_total=max_source_bytes_total
    )
    return GenerateRequest(
        prompt=prompt,
        model=model,
        aspect_ratio=_choice(payload.get("aspectRatio"), "aspectRatio", CONTRACT_RATIOS, "1:1"),
        num_images=_num_images(payload.get("numImages")),
        style_preset=_choice(payload.get("stylePreset"), "stylePreset", PRESET_NAMES, "none"),
        source_images=sources,
        source_field=source_field,
        image_size=image_size(payload.get("imageSize"), model),
    )


def image_size(value: Any, model: CatalogModel) -> str:
    """The `imageSize` asked for, if `model` offers it (absent: 1K)."""
    size = _choice(value, "imageSize", IMAGE_SIZES, DEFAULT_IMAGE_SIZE)
    if size not in model.sizes:
        raise InvalidRequest(
            f"imageSize {size!r} is not offered by {model.id}; it offers: {', '.join(model.sizes)}",
            field="imageSize",
        )
    return size


def validate_prompt(value: Any, max_chars: int = MAX_PROMPT_CHARS) -> str:
    if value is None:
        raise InvalidRequest("prompt is required: a non-empty string", field="prompt")
    if not isinstance(value, str):
        raise InvalidRequest("prompt must be a string", field="prompt")
    prompt = value.strip()
    if not prompt:
        raise InvalidRequest("prompt must not be empty", field="prompt")
    if len(prompt) > max_chars:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters; the maximum is {max_chars}",
            field="prompt",
        )
    if bad := _disallowed_char(prompt):
        raise InvalidRequest(
            f"prompt contains a disallowed control or format character U+{ord(bad):04X}",
            field="prompt",
        )
    return prompt


def _disallowed_char(prompt: str) -> str | None:
    """The first character a prompt may not carry, or None.

    Newlines and tabs are fine; other control and format characters (NUL, escape
    sequences, bidi overrides, zero-width spaces, lone surrogates) are not, except those
    emoji sequences are made of: the zero-width joiner ("👨‍👩‍👧") and, only inside a flag's
    tag sequence ("🏴" + tags + cancel tag), the tag characters, which elsewhere would
    be invisible text. Variation selectors and skin tones are marks and symbols anyway.
    """
    tags_from: int | None = None  # where the open tag sequence's first tag is
    for index, char in enumerate(prompt):
        if tags_from is not None:
            if _TAG_FIRST <= char <= _TAG_LAST:
                continue
            if char != _CANCEL_TAG:
                return prompt[tags_from]  # a tag sequence must end with the cancel tag
            tags_from = None
            continue
        if char in "\n\t\r" or char == _ZWJ:
            continue
        if char == _TAG_BASE and _TAG_FIRST <= prompt[index + 1 : index + 2] <= _TAG_LAST:
            tags_from = index + 1  # the flag itself is a symbol
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return char
    return None if tags_from is None else prompt[tags_from]


def resolve_model(value: Any, catalog: Catalog) -> CatalogModel:
    """A catalog id or, for convenience, a bare upstream name like `gpt-image-1`."""
    if isinstance(value, str) and catalog.get(value) is None:
        matches = [model for model in catalog if model.id.split("/", 1)[1] == value]
        if len(matches) == 1:
            return matches[0]
    return _model(value, catalog)


def _model(value: Any, catalog: Catalog) -> CatalogModel:
    if value is None:
        value = DEFAULT_MODEL
    model = catalog.get(value) if isinstance(value, str) else None
    if model is None:
        raise InvalidRequest(
            f"model {_show(value)} is not available; use one of: {', '.join(catalog.ids)}",
            field="model",
        )
    return model


def _choice(value: Any, field: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(
            f"{field} {_show(value)} is not supported; use one of: {', '.join(allowed)}",
            field=field,
        )
    return value


def _num_images(value: Any) -> int:
    if value is None:
        return 1
    # bool is an int in Python; 2.0 is not an integer in the contract.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGES:
        raise InvalidRequest(
            f"numImages must be an integer from 1 to {MAX_IMAGES}; got {_show(value)}",
            field="numImages",
        )
    return value


def _show(value: Any) -> str:
    """A short, safe rendering of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
