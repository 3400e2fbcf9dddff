from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from app.errors import InvalidRequest
from app.generation.source_image import parse_source_image
from tests.support.images import png_header_only

MAX_BYTES = 1024 * 1024
MAX_PIXELS = 4_000_000


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, fmt)
    return out.getvalue()


def data_url(declared: str, data: bytes) -> str:
    return f"data:image/{declared};base64,{base64.b64encode(data).decode()}"


def parse(value: str, **limits: int) -> object:
    return parse_source_image(
        value,
        max_bytes=limits.get("max_bytes", MAX_BYTES),
        max_pixels=limits.get("max_pixels", MAX_PIXELS),
    )


def rejects(value: str, match: str, **limits: int) -> InvalidRequest:
    with pytest.raises(InvalidRequest, match=match) as info:
        parse(value, **limits)
    assert "sourceImage" in info.value.message
    assert info.value.status_code == 400
    return info.value


@pytest.mark.parametrize(
    ("declared", "fmt", "mime"),
    [
        ("png", "PNG", "image/png"),
        ("jpeg", "JPEG", "image/jpeg"),
        ("jpg", "JPEG", "image/jpeg"),
        ("webp", "WEBP", "image/webp"),
        ("PNG", "PNG", "image/png"),
    ],
)
def test_valid_images_are_accepted(declared: str, fmt: str, mime: str) -> None:
    raw = image_bytes(fmt)
    result = parse_source_image(data_url(declared, raw), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert result.mime_type == mime
    assert result.data == raw


def test_declared_type_must_match_the_bytes() -> None:
    error = rejects(data_url("png", image_bytes("JPEG")), "declared as image/png")
    assert "image/jpeg" in error.message


def test_unsupported_declared_type() -> None:
    rejects(data_url("gif", image_bytes("GIF")), "unsupported type image/gif")


def test_gif_bytes_under_a_png_label_are_not_an_image_we_take() -> None:
    # The shared sniffer names GIF (an upstream may send one); a source image still is not.
    rejects(data_url("png", image_bytes("GIF")), "is not a png, jpeg or webp image")


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/cat.png",
        "http://169.254.169.254/latest/meta-data",
        "",
        "data:image/png,rawbytes",
        "data:text/plain;base64,aGVsbG8=",
        "data:image/png;base64",
        "iVBORw0KGgo=",
    ],
)
def test_only_data_urls_are_accepted(value: str) -> None:
    error = rejects(value, "data URL")
    assert "png, jpeg or webp" in error.message


def test_truncated_base64() -> None:
    encoded = base64.b64encode(image_bytes("PNG")).decode()
    rejects(f"data:image/png;base64,{encoded[:-1]}", "invalid base64")


@pytest.mark.parametrize(
    "payload",
    ["aGVs bG8=", "aGVs\nbG8=", "aGVs-bG8", "aGVs_bG8", "aG=sbG8=", "aGVsbG8é"],
)
def test_invalid_base64(payload: str) -> None:
    rejects(f"data:image/png;base64,{payload}", "invalid base64")


def test_empty_payload() -> None:
    rejects("data:image/png;base64,", "no image data")


def test_non_image_bytes() -> None:
    rejects(data_url("png", b"just some text, not an image"), "not a png, jpeg or webp")


def test_image_magic_with_garbage_after_it() -> None:
    rejects(data_url("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100), "not usable")


def test_truncated_image_data() -> None:
    raw = image_bytes("PNG", (400, 400))
    rejects(data_url("png", raw[: len(raw) // 2]), "not usable")


def test_too_many_bytes_is_rejected_before_decoding() -> None:
    raw = image_bytes("PNG", (200, 200))
    error = rejects(data_url("png", raw), "too large", max_bytes=len(raw) - 10)
    assert str(len(raw) - 10) in error.message


def test_exactly_max_bytes_is_allowed() -> None:
    raw = image_bytes("PNG", (200, 200))
    parse(data_url("png", raw), max_bytes=len(raw))


def test_huge_length_is_rejected_without_decoding() -> None:
    # Not valid base64 at all: only the length can have rejected it.
    rejects("data:image/png;base64," + "!" * (4 * MAX_BYTES), "too large")


def test_too_many_pixels_in_a_tiny_file() -> None:
    bomb = png_header_only(30_000, 30_000)
    assert len(bomb) < 200
    rejects(data_url("png", bomb), "pixels")


def test_pixel_limit_is_exact() -> None:
    raw = image_bytes("PNG", (100, 100))
    parse(data_url("png", raw), max_pixels=10_000)
    rejects(data_url("png", raw), "pixels", max_pixels=9_999)


def test_error_names_the_field() -> None:
    error = rejects("nope", "sourceImage")
    assert error.extra.get("field") == "sourceImage"
