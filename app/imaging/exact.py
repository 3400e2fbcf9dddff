"""An image at an exact pixel size and in a chosen format (the /v1 routes' `size`,
`output_format` and `output_compression`).

The provider draws at its nearest native ratio; `render_exact` centre-crops that to the
requested ratio and resizes to exactly width x height, then encodes PNG, JPEG or WebP.
Alpha survives in PNG and WebP (transparent backgrounds); JPEG has none and is flattened.
Synchronous and CPU-bound: run it in the image pool within the decode budget
(`EXACT_COST` pixels per output-or-input pixel, whichever is larger).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps

from app.imaging.aspect import centre_crop_box
from app.imaging.decode import ImageDecodeError, load_pixels, open_bounded
from app.imaging.webp import WEBP_METHOD, EncodedImage, _convert_mode

OutputFormat = Literal["png", "jpeg", "webp"]
MIME_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# The decoded input, its converted/cropped copy and the resized output, in input pixels.
EXACT_COST = 4
# OpenAI's default for output_compression (webp/jpeg): 100, i.e. the best quality.
DEFAULT_COMPRESSION = 100


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What to store: `format`, and exactly `width` x `height` unless both are None (keep
    the provider's size). `compression` 0-100 is the encoder quality for jpeg and webp."""

    format: OutputFormat = "png"
    width: int | None = None
    height: int | None = None
    compression: int = DEFAULT_COMPRESSION


def render_exact(data: bytes, spec: OutputSpec, *, max_pixels: int) -> EncodedImage:
    """Decode, upright, centre-crop to the spec's ratio, resize to its size and encode."""
    image = open_bounded(data, max_pixels=max_pixels)
    try:
        load_pixels(image)
        ImageOps.exif_transpose(image, in_place=True)
        converted = _convert_mode(image)
        if spec.width is not None and spec.height is not None:
            converted = _fit(converted, spec.width, spec.height)
        if spec.format == "jpeg" and converted.mode != "RGB":
            converted = _flatten(converted)
        out = io.BytesIO()
        options: dict[str, object] = {}
        if spec.format == "jpeg":
            options = {"quality": min(spec.compression, 95) or 1}
        elif spec.format == "webp":
            options = {"quality": spec.compression, "method": WEBP_METHOD}
        converted.save(out, _PIL_FORMATS[spec.format], **options)
        return EncodedImage(
            data=out.getvalue(),
            width=converted.width,
            height=converted.height,
            mime_type=MIME_TYPES[spec.format],
        )
    finally:
        image.close()


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    try:
        box = centre_crop_box(image.width, image.height, f"{width}:{height}")
    except ValueError as exc:
        raise ImageDecodeError(str(exc)) from exc
    if (image.width, image.height) == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS, box=box)


def _flatten(image: Image.Image) -> Image.Image:
    """RGBA on white: JPEG has no alpha, and black (Pillow's drop) reads as damage."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
