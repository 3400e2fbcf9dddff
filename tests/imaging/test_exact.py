"""render_exact: exact size by centre-crop + resize, the asked format, alpha kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.imaging.exact import OutputSpec, render_exact

MAX_PIXELS = 50_000_000


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, (200, 40, 40, 255) if mode == "RGBA" else (200, 40, 40))
    if mode == "RGBA":
        for x in range(size[0]):
            image.putpixel((x, size[1] // 2), (0, 0, 0, 0))  # a transparent line across
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("source", "size"),
    [((1536, 1024), (1536, 1024)), ((1024, 768), (1536, 1024)), ((1024, 1024), (256, 256))],
)
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_the_output_is_exactly_the_size_and_format(
    source: tuple[int, int], size: tuple[int, int], fmt: str
) -> None:
    spec = OutputSpec(fmt, size[0], size[1], 80 if fmt != "png" else 100)  # type: ignore[arg-type]
    encoded = render_exact(_png(source), spec, max_pixels=MAX_PIXELS)
    image = Image.open(io.BytesIO(encoded.data))
    assert image.size == size == (encoded.width, encoded.height)
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert encoded.mime_type == f"image/{fmt}"


def test_no_size_keeps_the_provider_size() -> None:
    encoded = render_exact(_png((640, 480)), OutputSpec("png"), max_pixels=MAX_PIXELS)
    assert (encoded.width, encoded.height) == (640, 480)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_alpha_survives_png_and_webp(fmt: str) -> None:
    spec = OutputSpec(fmt, 64, 64)  # type: ignore[arg-type]
    encoded = render_exact(_png((64, 64), "RGBA"), spec, max_pixels=MAX_PIXELS)
    image = Image.open(io.BytesIO(encoded.data)).convert("RGBA")
    low = image.getchannel("A").getextrema()[0]
    assert isinstance(low, int) and low < 255


def test_jpeg_flattens_alpha_onto_white() -> None:
    encoded = render_exact(
        _png((64, 64), "RGBA"), OutputSpec("jpeg", 64, 64, 90), max_pixels=MAX_PIXELS
    )
    image = Image.open(io.BytesIO(encoded.data))
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((10, 32))  # type: ignore[misc]
    assert min(red, green, blue) > 200  # white where it was transparent, not black


def test_compression_changes_the_encoding() -> None:
    data = _png((256, 256))
    small = render_exact(data, OutputSpec("jpeg", 256, 256, 10), max_pixels=MAX_PIXELS)
    large = render_exact(data, OutputSpec("jpeg", 256, 256, 95), max_pixels=MAX_PIXELS)
    assert small.data != large.data
