"""Validate the source images of an image-to-image request.

The gateway never fetches URLs: the native contract's `sourceImage` is an inline
`data:image/...;base64,` payload, which `decode_data_url` (the request parser) turns
into bytes; uploads (/v1/images/edits) are bytes already. Every check that can run
before decoding does (size from the base64 length, magic bytes, header pixel count), so
a hostile payload costs little. The full decode, which proves the pixel data is intact,
draws its pixels from the process's decode budget: `decode_source_image` is the async
entry point (bytes); `parse_source_image` is every check, synchronous and unbudgeted.
Messages name the field as the caller sent it (`field`).
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
_PIL_FORMATS = {mime: pil for mime, pil in _DECLARED.values()}
_HEADER = re.compile(r"data:image/(?P<subtype>[a-z]+);base64", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A source whose header passed every check; its pixel data is not decoded yet."""

    data: bytes = field(repr=False)
    mime_type: str
    pil_format: str
    width: int
    height: int


def decode_data_url(value: str, *, max_bytes: int, field: str = FIELD) -> bytes:
    """The image bytes of a `data:image/...;base64,` URL, checked against its declared type.

    Cheap checks only (header, base64, magic bytes); `decode_source_image` does the rest.
    """
    header, comma, payload = value.partition(",")
    # The header is tiny; bound it so a huge string without a comma is not regex-scanned.
    match = _HEADER.fullmatch(header) if comma and len(header) <= 64 else None
    if match is None:
        raise InvalidRequest(_FORMAT_HINT.replace(FIELD, field, 1), field=field)
    subtype = match.group("subtype").lower()
    if subtype not in _DECLARED:
        raise InvalidRequest(
            f"{field} has unsupported type image/{subtype}; use png, jpeg or webp", field=field
        )
    mime_type = _DECLARED[subtype][0]
    data = _decode_base64(payload, max_bytes=max_bytes, field=field)
    del payload  # a copy of the base64 text (partition): not held through the checks
    actual = _still_type(data, field)
    if actual != mime_type:
        raise InvalidRequest(
            f"{field} is declared as {mime_type} but its bytes are {actual}", field=field
        )
    return data


async def decode_source_image(
    data: bytes,
    *,
    budget: DecodeBudget,
    max_bytes: int,
    max_pixels: int,
    wait_seconds: float,
    field: str = FIELD,
) -> SourceImage:
    """`data` checked and decoded once, the decode waiting (at most `wait_seconds`) for budget.

    An image larger than the whole budget is refused with a 400 naming the field, as
    it could never be decoded here; DecodeBusy (503) when the wait runs out.
    """
    checked = await asyncio.to_thread(
        _check_image, data, max_bytes=max_bytes, max_pixels=max_pixels, field=field
    )
    pixels = checked.width * checked.height
    if not budget.fits(pixels):
        raise InvalidRequest(
            f"{field} is {checked.width}x{checked.height} ({pixels} pixels); this gateway "
            f"decodes at most {budget.capacity} pixels at once",
            field=field,
        )
    return await budget.run(
        pixels, functools.partial(_verify, checked, field), wait_seconds=wait_seconds
    )


def parse_source_image(value: str, *, max_bytes: int, max_pixels: int) -> SourceImage:
    """Return the decoded image, or raise InvalidRequest saying what is wrong with it."""
    data = decode_data_url(value, max_bytes=max_bytes)
    return _verify(
        _check_image(data, max_bytes=max_bytes, max_pixels=max_pixels, field=FIELD), FIELD
    )


def _still_type(data: bytes, field: str) -> str:
    actual = sniff_image_type(data)
    if actual not in STILL_TYPES:
        raise InvalidRequest(f"{field} is not a png, jpeg or webp image", field=field)
    return actual


def _check_image(data: bytes, *, max_bytes: int, max_pixels: int, field: str) -> _Checked:
    if len(data) > max_bytes:
        raise InvalidRequest(
            f"{field} is too large: at most {max_bytes} bytes of image data are allowed",
            field=field,
        )
    mime_type = _still_type(data, field)
    pil_format = _PIL_FORMATS[mime_type]
    try:
        image = open_bounded(data, max_pixels=max_pixels, formats=(pil_format,))
    except ImageDecodeError as exc:
        raise InvalidRequest(f"{field} is not usable: {exc}", field=field) from exc
    with image:
        width, height = image.width, image.height
    return _Checked(data, mime_type, pil_format, width, height)


def _verify(checked: _Checked, field: str) -> SourceImage:
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
        raise InvalidRequest(f"{field} is not usable: {exc}", field=field) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pixel data that is truncated or corrupt only fails at load().
        raise InvalidRequest(
            f"{field} is not usable: image data is corrupt or truncated", field=field
        ) from exc
    return SourceImage(mime_type=checked.mime_type, data=checked.data)


def _decode_base64(payload: str, *, max_bytes: int, field: str) -> bytes:
    if not payload:
        raise InvalidRequest(f"{field} has no image data after the comma", field=field)
    # Refuse oversize payloads from their length alone, before allocating the decode.
    if (len(payload) // 4) * 3 - 2 > max_bytes:
        raise InvalidRequest(
            f"{field} is too large: at most {max_bytes} bytes of image data are allowed",
            field=field,
        )
    if len(payload) % 4:
        raise InvalidRequest(
            f"{field} has invalid base64: the length is not a multiple of 4 "
            "(truncated or missing padding)",
            field=field,
        )
    try:
        # strict_mode (b64decode's validate=True): standard alphabet only and padding only
        # at the end, instead of silently skipping stray characters. Straight from the
        # str: b64decode would first copy it to bytes. Non-ASCII is a ValueError.
        data = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        raise InvalidRequest(
            f"{field} has invalid base64: only A-Z, a-z, 0-9, '+' and '/' are allowed, "
            "with '=' padding only at the end",
            field=field,
        ) from None
    if len(data) > max_bytes:
        raise InvalidRequest(
            f"{field} is too large: at most {max_bytes} bytes of image data are allowed",
            field=field,
        )
    return data
