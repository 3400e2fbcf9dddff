from __future__ import annotations

import io

import pytest
from PIL import Image

from app.imaging.formats import STILL_TYPES, sniff_image_type


def _encode(pil_format: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, pil_format)
    return out.getvalue()


@pytest.mark.parametrize(
    ("pil_format", "mime_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_names_what_pillow_wrote(pil_format: str, mime_type: str) -> None:
    assert sniff_image_type(_encode(pil_format)) == mime_type


def test_still_types_are_what_the_gateway_passes_on() -> None:
    assert {"image/png", "image/jpeg", "image/webp"} == STILL_TYPES
    assert "image/gif" not in STILL_TYPES


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF\x00\x00\x00\x00WEB",  # cut inside the form type
        b"RIFF\x00\x00\x00\x00WAVE",  # RIFF, but audio
        b"\x89PNG\r\n",  # a truncated signature
        b"BM" + bytes(60),  # BMP: Pillow reads it, the gateway does not take it
        b"%PDF-1.7",
    ],
)
def test_anything_else_is_none(data: bytes) -> None:
    assert sniff_image_type(data) is None


def test_the_bytes_decide_not_the_suffix() -> None:
    # A PNG with bytes after it is still a PNG; a JPEG marker later in a file is not.
    assert sniff_image_type(_encode("PNG") + b"\xff\xd8\xff") == "image/png"
    assert sniff_image_type(b"\x00" + _encode("JPEG")) is None
