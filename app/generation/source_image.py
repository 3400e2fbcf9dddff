"""Validate the `sourceImage` data URL of an image-to-image request.

The gateway never fetches URLs: only inline `data:image/...;base64,` payloads are
accepted. Every check that can run before decoding does (size from the base64 length,
magic bytes, header pixel count), so a hostile payload costs little. The full decode,
which proves the pixel data is intact, draws its pixels from the process's decode
budget: `decode_source_image` is the async entry point; `parse_source_image` is the
same checks, synchronous and unbudgeted.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import re
from dataclasses import dataclass, field

from app.errors import InvalidRequest
from app.generation.decode_budget import DecodeBudget
from app.imaging.decode import ImageDecodeError, open_bounded
from app.imaging.formats import STILL_TYPES, sniff_image_type
from app.providers.base import SourceImage

FIELD = "sourceImage"
_FORMAT_HINT = f"{FIELD} must be a data URL like data:image/png;base64,... (png, jpeg or webp)"

# Declared subtype -> (canonical MIME type, Pillow format name).
_DECLARED: dict[str, tuple[str, str]] = {
    "png": ("image/png", "PNG"),
    "jpeg": ("image/jpeg", "JPEG"),
    "jpg": ("image/jpeg", "JPEG"),
    "webp": ("image/webp", "WEBP"),
}
_HEADER = re.compile(r"data:image/(?P<subtype>[a-z]+);base64", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A source whose header passed every check; its pixel data is not decoded yet."""

    data: bytes = field(repr=False)
    mime_type: str
    pil_format: str
    width: int
    height: int


async def decode_source_image(
    value: str, *, budget: DecodeBudget, max_bytes: int, max_pixels: int, wait_seconds: float
) -> SourceImage:
    """`parse_source_image`, with the decode waiting (at most `wait_seconds`) for budget.

    An image larger than the whole budget is refused with a 400 naming the field, as
    it could never be decoded here; DecodeBusy (503) when the wait runs out.
    """
    checked = await asyncio.to_thread(
        _check_header, value, max_bytes=max_bytes, max_pixels=max_pixels
    )
    pixels = checked.width * checked.height
    if not budget.fits(pixels):
        raise InvalidRequest(
            f"{FIELD} is {checked.width}x{checked.height} ({pixels} pixels); this gateway "
            f"decodes at most {budget.capacity} pixels at once",
            field=FIELD,
        )
    return await budget.run(pixels, functools.partial(_verify, checked), wait_seconds=wait_seconds)


def parse_source_image(value: str, *, max_bytes: int, max_pixels: int) -> SourceImage:
    """Return the decoded image, or raise InvalidRequest saying what is wrong with it."""
    return _verify(_check_header(value, max_bytes=max_bytes, max_pixels=max_pixels))


def _check_header(value: str, *, max_bytes: int, max_pixels: int) -> _Checked:
    header, comma, payload = value.partition(",")
    # The header is tiny; bound it so a huge string without a comma is not regex-scanned.
    match = _HEADER.fullmatch(header) if comma and len(header) <= 64 else None
    if match is None:
        raise InvalidRequest(_FORMAT_HINT, field=FIELD)
    subtype = match.group("subtype").lower()
    if subtype not in _DECLARED:
        raise InvalidRequest(
            f"{FIELD} has unsupported type image/{subtype}; use png, jpeg or webp", field=FIELD
        )
    mime_type, pil_format = _DECLARED[subtype]

    data = _decode_base64(payload, max_bytes=max_bytes)
    del payload  # a copy of the base64 text (partition): not held through the checks
    actual = sniff_image_type(data)
    if actual not in STILL_TYPES:
        raise InvalidRequest(f"{FIELD} is not a png, jpeg or webp image", field=FIELD)
    if actual != mime_type:
        raise InvalidRequest(
            f"{FIELD} is declared as {mime_type} but its bytes are {actual}", field=FIELD
        )

    try:
        image = open_bounded(data, max_pixels=max_pixels, formats=(pil_format,))
    except ImageDecodeError as exc:
        raise InvalidRequest(f"{FIELD} is not usable: {exc}", field=FIELD) from exc
    with image:
        width, height = image.width, image.height
    return _Checked(data, mime_type, pil_format, width, height)


def _verify(checked: _Checked) -> SourceImage:
    """Decode the pixel data once (then free it): truncation and corruption show only here."""
    try:
        image = open_bounded(
            checked.data,
            max_pixels=checked.width * checked.height,
            formats=(checked.pil_format,),
        )
        try:
            image.load()
        finally:
            image.close()
    except ImageDecodeError as exc:
        raise InvalidRequest(f"{FIELD} is not usable: {exc}", field=FIELD) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pixel data that is truncated or corrupt only fails at load().
        raise InvalidRequest(
            f"{FIELD} is not usable: image data is corrupt or truncated", field=FIELD
        ) from exc
    return SourceImage(mime_type=checked.mime_type, data=checked.data)


def _decode_base64(payload: str, *, max_bytes: int) -> bytes:
    if not payload:
        raise InvalidRequest(f"{FIELD} has no image data after the comma", field=FIELD)
    # Refuse oversize payloads from their length alone, before allocating the decode.
    if (len(payload) // 4) * 3 - 2 > max_bytes:
        raise InvalidRequest(
            f"{FIELD} is too large: at most {max_bytes} bytes of image data are allowed",
            field=FIELD,
        )
    if len(payload) % 4:
        raise InvalidRequest(
            f"{FIELD} has invalid base64: the length is not a multiple of 4 "
            "(truncated or missing padding)",
            field=FIELD,
        )
    try:
        # strict_mode (b64decode's validate=True): standard alphabet only and padding only
        # at the end, instead of silently skipping stray characters. Straight from the
        # str: b64decode would first copy it to bytes. Non-ASCII is a ValueError.
        data = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        raise InvalidRequest(
            f"{FIELD} has invalid base64: only A-Z, a-z, 0-9, '+' and '/' are allowed, "
            "with '=' padding only at the end",
            field=FIELD,
        ) from None
    if len(data) > max_bytes:
        raise InvalidRequest(
            f"{FIELD} is too large: at most {max_bytes} bytes of image data are allowed",
            field=FIELD,
        )
    return data
