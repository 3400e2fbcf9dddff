"""Request and response models of the OpenAI-compatible routes under /v1 (snake_case,
as OpenAI's Images API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.generation.request import DEFAULT_MODEL, MAX_IMAGES, MAX_PROMPT_CHARS


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
    """`url` (with `revised_prompt`, always null) or `b64_json`, by `response_format`."""

    url: str | None = None
    revised_prompt: str | None = None
    b64_json: str | None = None


class ImagesResponse(_Strict):
    created: int
    data: list[OpenAIImage]
    output_format: Literal["webp", "png", "jpeg"]
    size: str = Field(description="WIDTHxHEIGHT of the images")


_SIZE = "WIDTHxHEIGHT (mapped to the nearest contract aspect ratio) or auto"


class ImageGenerationRequest(BaseModel):
    """The JSON body of /v1/images/generations (documentation; parsed by hand). Fields
    OpenAI defines that the gateway does not use (quality, style, user, ...) are ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = Field(
        default=DEFAULT_MODEL, description="a catalog id, or a bare upstream name (gpt-image-1)"
    )
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str = Field(default="auto", description=_SIZE)
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["webp", "png", "jpeg"] = "webp"


class ImageEditRequest(BaseModel):
    """The multipart form of /v1/images/edits (documentation; parsed by hand)."""

    image: bytes = Field(
        json_schema_extra={"format": "binary"}, description="the source image (png, jpeg, webp)"
    )
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = DEFAULT_MODEL
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str = Field(default="auto", description=_SIZE)
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["webp", "png", "jpeg"] = "webp"
