"""Request and response models of the OpenAI-compatible routes under /v1 (snake_case,
as OpenAI's Images API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.openai.params import (
    DEFAULT_MODEL,
    MAX_IMAGES,
    MAX_PARTIAL_IMAGES,
    MAX_PROMPT_CHARS,
    SIZE_RULE,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAIModel(_Strict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(_Strict):
    object: Literal["list"]
    data: list[OpenAIModel]


class OpenAIImage(_Strict):
    """`url` or `b64_json`, by `response_format`; `revised_prompt` is always null."""

    url: str | None = None
    revised_prompt: str | None = None
    b64_json: str | None = None


class TokenDetails(_Strict):
    image_tokens: int
    text_tokens: int


class ImageUsage(_Strict):
    """OpenAI's token usage, summed over the images, where the upstream reports tokens;
    else counts of images (input: references sent, output: images delivered)."""

    input_tokens: int
    input_tokens_details: TokenDetails
    output_tokens: int
    output_tokens_details: TokenDetails
    total_tokens: int


class ImagesResponse(_Strict):
    created: int
    data: list[OpenAIImage]
    background: Literal["transparent", "opaque"]
    output_format: Literal["png", "jpeg", "webp"]
    quality: Literal["low", "medium", "high"] | None = None
    size: str = Field(description="WIDTHxHEIGHT of the images")
    usage: ImageUsage


_SIZE = SIZE_RULE
_QUALITY = "OpenAI models: low, medium, high, auto; others: auto or standard"


class _ImageParams(BaseModel):
    """What both image routes take (documentation; parsed by app/api/openai/params.py)."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = Field(
        default=DEFAULT_MODEL, description="a catalog id, or a bare upstream name (gpt-image-1)"
    )
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str = Field(default="auto", description=_SIZE)
    response_format: Literal["url", "b64_json"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int = Field(default=100, ge=0, le=100, description="jpeg and webp")
    background: Literal["transparent", "opaque", "auto"] = Field(
        default="auto", description="transparent: models with transparent_background only"
    )
    quality: str = Field(default="auto", description=_QUALITY)
    moderation: Literal["low", "auto"] = Field(default="auto", description="low: OpenAI only")
    user: str | None = Field(default=None, description="accepted; not stored or forwarded")
    safety_identifier: str | None = Field(default=None, description="as user")
    stream: bool = Field(
        default=False,
        description="true: Server-Sent Events (partial images, then the completed image); "
        "takes n=1 and b64_json, and no Idempotency-Key",
    )
    partial_images: int = Field(
        default=0,
        ge=0,
        le=MAX_PARTIAL_IMAGES,
        description="previews streamed before the final image (OpenAI gpt-image models)",
    )


class ImageGenerationRequest(_ImageParams):
    """The JSON body of /v1/images/generations. `style` (dall-e-3), `stream` and other
    parameters the gateway cannot honour are refused with a 400 naming them."""


class ImageEditRequest(_ImageParams):
    """The multipart form of /v1/images/edits: `image` (or several `image[]`, up to the
    model's max_reference_images) and an optional `mask` (OpenAI models)."""

    image: bytes = Field(
        json_schema_extra={"format": "binary"}, description="the source image (png, jpeg, webp)"
    )
    mask: bytes | None = Field(
        default=None,
        json_schema_extra={"format": "binary"},
        description="PNG, transparent where the first image may change (OpenAI models)",
    )
    input_fidelity: Literal["high", "low"] | None = Field(default=None, description="OpenAI")
