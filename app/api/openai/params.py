"""The parameters OpenAI's SDKs send to /v1/images/*, each honoured or refused.

Every parameter of `images.generate` / `images.edit` (openai-python's
`image_generate_params.py`, `image_edit_params.py`) is listed here: forwarded to the
provider (OpenAI models: quality, background, moderation, input_fidelity, mask),
implemented by the gateway (size, output_format, output_compression, n, response_format)
or refused with a 400 naming it as sent. Anything else is an unknown parameter (400), as
OpenAI answers. Rules the gateway adds are in `SIZE_RULE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest
from app.generation.request import DEFAULT_MODEL, GenerateRequest, resolve_model, validate_prompt
from app.imaging.aspect import nearest_native
from app.imaging.exact import DEFAULT_COMPRESSION, OutputFormat, OutputSpec
from app.providers.base import ImageOptions
from app.providers.catalog import Catalog, CatalogModel

__all__ = [
    "DEFAULT_MODEL",
    "MAX_IMAGES",
    "MAX_PARTIAL_IMAGES",
    "MAX_PROMPT_CHARS",
    "SIZE_RULE",
    "StreamParams",
    "View",
    "parse",
    "stream_params",
]

MAX_IMAGES = 10
MAX_PARTIAL_IMAGES = 3
MAX_PROMPT_CHARS = 32_000
# The gateway crops and resizes to any size within these bounds (gpt-image-2's rule).
MIN_SIDE, MAX_SIDE, MAX_PIXELS, SIDE_STEP = 256, 3840, 3840 * 2160, 16
SIZE_RULE = (
    "auto or WIDTHxHEIGHT with both sides multiples of 16 from 256 to 3840, at most "
    "3840x2160 pixels in all and a ratio between 1:3 and 3:1 (e.g. 1024x1024, 1536x1024, "
    "1024x1536, 256x256, 512x512, 1792x1024)"
)
# The longest side each imageSize draws at most (OpenAI's 1K is 1536x1024, Gemini's 21:9
# 2K 3168x1344): a `size` longer than that is asked upstream at the model's next size up,
# and billed at it; beyond the model's largest, the gateway upscales.
_SIZE_REACH = {"1K": 1536, "2K": 3072, "4K": 6144}
_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
_OPENAI_QUALITIES = ("low", "medium", "high", "auto")
# Other models draw at one quality: `auto` and DALL-E's `standard` mean exactly that.
_SINGLE_QUALITIES = ("auto", "standard")
_COMMON = frozenset(
    {
        "prompt", "model", "n", "size", "response_format", "output_format",
        "output_compression", "background", "quality", "moderation", "user",
        "safety_identifier", "stream", "partial_images",
    }
)  # fmt: skip
GENERATION_PARAMS = _COMMON | {"style"}
EDIT_PARAMS = _COMMON | {"input_fidelity"}
# Parameters of features the gateway does not offer; refused by name, never ignored.
_UNSUPPORTED = {
    "complexity": "complexity is not supported by this gateway",
    "frame_count": "frame_count applies to GIF output, which this gateway does not produce",
    "frame_duration_ms": "frame_duration_ms applies to GIF output, which is not supported",
    "svg": "svg applies to SVG output, which this gateway does not produce",
    "markup": "markup is not supported by this gateway",
}


@dataclass(frozen=True, slots=True)
class View:
    """How the response presents the images (and what it echoes)."""

    response_format: str  # url | b64_json
    output_format: OutputFormat
    background: str  # opaque | transparent
    quality: str | None  # low | medium | high, as asked; None: the model's own


@dataclass(frozen=True, slots=True)
class StreamParams:
    """A caller's `stream=true`: previews asked (0-3)."""

    partial_images: int


def stream_params(fields: dict[str, Any]) -> StreamParams | None:
    """`stream` and `partial_images` (JSON values, or form strings for edits); None when no
    stream is asked. Streaming takes n=1 and b64_json, as OpenAI's does."""
    partials = _integer(fields, "partial_images", 0, MAX_PARTIAL_IMAGES, 0)
    if not _flag(fields.get("stream"), "stream"):
        if fields.get("partial_images") not in (None, ""):
            # Previews exist only in a stream: refused rather than silently dropped.
            raise InvalidRequest(
                "partial_images needs stream=true: previews are sent only in a stream",
                field="partial_images",
            )
        return None
    if fields.get("n") not in (None, 1, "1"):
        raise InvalidRequest("Streaming is only supported with n=1.", field="n")
    if fields.get("response_format") == "url":
        raise InvalidRequest(
            "response_format 'url' is not available with stream=true: stream events carry b64_json",
            field="response_format",
        )
    return StreamParams(partial_images=partials)


def parse(
    fields: dict[str, Any],
    catalog: Catalog,
    *,
    allowed: frozenset[str],
    images: tuple[bytes, ...] = (),
    mask: bytes | None = None,
) -> tuple[GenerateRequest, View]:
    """The GenerateRequest and View for one /v1 call (JSON values, or form strings)."""
    for name in fields:
        if name in _UNSUPPORTED:
            raise InvalidRequest(_UNSUPPORTED[name], field=name)
        if name not in allowed:
            raise InvalidRequest(f"Unknown parameter: '{name[:60]}'.", field=name[:60])
    for name in ("user", "safety_identifier"):
        # End-user ids for OpenAI's abuse monitoring: accepted, not stored or forwarded.
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise InvalidRequest(f"{name} must be a string", field=name)
    model = resolve_model(fields.get("model") or DEFAULT_MODEL, catalog)
    openai = model.adapter.startswith("openai")
    output_format = _choice(fields, "output_format", _FORMATS, "png")
    background = _choice(fields, "background", ("transparent", "opaque", "auto"), "auto")
    compression = _integer(fields, "output_compression", 0, 100, DEFAULT_COMPRESSION)
    if compression < 100 and output_format == "png":
        raise InvalidRequest(
            "output_compression applies to jpeg and webp; png is lossless",
            field="output_compression",
        )
    if background == "transparent":
        if not model.transparent_background:
            raise InvalidRequest(
                f"background 'transparent' is not supported by {model.id}; models with "
                f"transparency: {', '.join(m.id for m in catalog if m.transparent_background)}",
                field="background",
            )
        if output_format == "jpeg":
            raise InvalidRequest(
                "background 'transparent' needs output_format png or webp", field="background"
            )
    qualities = _OPENAI_QUALITIES if openai else _SINGLE_QUALITIES
    quality = _choice(fields, "quality", qualities, "auto", model)
    moderations = ("low", "auto") if openai else ("auto",)
    moderation = _choice(fields, "moderation", moderations, "auto", model)
    if fields.get("style") is not None:
        raise InvalidRequest(
            f"style is a dall-e-3 parameter; {model.id} does not take it (describe the "
            "style in the prompt)",
            field="style",
        )
    fidelities = ("high", "low") if openai else ()
    fidelity = _choice(fields, "input_fidelity", fidelities, None, model)
    response_format = _choice(fields, "response_format", ("url", "b64_json"), "b64_json")
    width, height, ratio = _size(fields.get("size"), model)
    request = GenerateRequest(
        prompt=validate_prompt(fields.get("prompt"), MAX_PROMPT_CHARS),
        model=model,
        aspect_ratio=ratio,
        num_images=_integer(fields, "n", 1, MAX_IMAGES, 1),
        source_images=images,
        mask=mask,
        options=ImageOptions(
            quality=quality if openai else None,
            background=background if openai and background != "auto" else None,
            moderation=moderation if openai and moderation != "auto" else None,
            input_fidelity=fidelity,
        ),
        output=OutputSpec(output_format, width, height, compression),
        source_field="image",
        image_size=_image_size(model, width, height),
    )
    view = View(
        response_format=response_format,
        output_format=output_format,
        background="transparent" if background == "transparent" else "opaque",
        quality=quality if quality in ("low", "medium", "high") else None,
    )
    return request, view


def _size(value: Any, model: CatalogModel) -> tuple[int | None, int | None, str]:
    """(width, height, the model's nearest native ratio); auto: the model's square."""
    if value is None or value == "auto":
        return None, None, nearest_native("1:1", model.native_aspect_ratios)
    width_text, _, height_text = value.partition("x") if isinstance(value, str) else ("", "", "")
    if _digits(width_text) and _digits(height_text) and len(value) <= 11:
        width, height = int(width_text), int(height_text)
        if (
            all(MIN_SIDE <= side <= MAX_SIDE and side % SIDE_STEP == 0 for side in (width, height))
            and width * height <= MAX_PIXELS
            and max(width, height) <= 3 * min(width, height)
        ):
            return width, height, nearest_native(f"{width}:{height}", model.native_aspect_ratios)
    raise InvalidRequest(f"size {_show(value)} is not supported; use {SIZE_RULE}", field="size")


def _image_size(model: CatalogModel, width: int | None, height: int | None) -> str:
    """The smallest of the model's sizes (1K up) that reaches a `size` of width x height."""
    longest = max(width or 0, height or 0)
    offered = [size for size in model.sizes if size in _SIZE_REACH]
    return next((size for size in offered if longest <= _SIZE_REACH[size]), offered[-1])


def _choice(
    fields: dict[str, Any],
    name: str,
    allowed: tuple[str, ...],
    default: Any,
    model: CatalogModel | None = None,
) -> Any:
    value = fields.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str) and value in allowed:
        return value
    for_model = f" for {model.id}" if model is not None else ""
    accepted = ", ".join(allowed) if allowed else "none (OpenAI models only)"
    raise InvalidRequest(
        f"{name} {_show(value)} is not supported{for_model}; use one of: {accepted}", field=name
    )


def _integer(fields: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = fields.get(name)
    if value is None:
        return default
    if isinstance(value, str) and _digits(value) and len(value) <= 6:  # a form field
        value = int(value)
    # bool is an int in Python; 2.0 is not an integer here.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}; got {_show(value)}", field=name
        )
    return value


def _flag(value: Any, name: str) -> bool:
    # Identity for the bools: 0 and 1 compare equal to them but are not flags.
    if value is None or value is False or value in ("false", "False", ""):
        return False
    if value is True or value in ("true", "True"):
        return True
    raise InvalidRequest(f"{name} must be true or false; got {_show(value)}", field=name)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # isdigit alone admits "²"
