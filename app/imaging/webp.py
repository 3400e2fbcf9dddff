"""Normalise any provider output to a WebP of exactly the requested aspect ratio.

Synchronous and CPU-bound: callers read `decoded_size` first (headers only), reserve
`TRANSCODE_COST` pixels per pixel from the decode budget (app/generation/decode_budget.py)
and run `normalise_to_webp` in a thread.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from app.imaging.aspect import centre_crop_box, parse_ratio
from app.imaging.decode import ImageDecodeError, load_pixels, open_bounded

# Quality 82: no visible loss on generated images at a fraction of the PNG size.
WEBP_QUALITY = 82
# libwebp's method trades CPU for size. Measured on the 2-core target box for a 1024x1024
# photo-like image: method 2 ~38 ms, method 3/4 ~90 ms, 6 ~185 ms. Method 2 fits the
# 60 ms budget and is within ~4% of method 4's size.
WEBP_METHOD = 2

# Decoded images held at once by `normalise_to_webp`, in units of the input's pixels:
# the decoded input, a converted or cropped copy, and libwebp's ARGB and YUV buffers.
# Measured on a 6000x6000 PNG: a plain decode peaks at +138 MiB, the whole transcode at
# +334 MiB (2.4x), so 3 leaves room for a mode conversion.
TRANSCODE_COST = 3

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_RGB_SPACE_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"})


@dataclass(frozen=True)
class EncodedImage:
    # Kept out of repr so a logged or failing-assert EncodedImage never dumps image bytes.
    data: bytes = field(repr=False)
    width: int
    height: int
    mime_type: str = "image/webp"


def normalise_to_webp(data: bytes, aspect_ratio: str, *, max_pixels: int) -> EncodedImage:
    """Decode, upright, centre-crop to exactly `aspect_ratio` and encode as WebP.

    An input that is already a single-frame WebP of the exact ratio, with no EXIF (so no
    orientation to apply), is returned byte-for-byte, which avoids a lossy re-encode. Its
    RIFF framing and bitstream headers are checked (see `_passthrough_webp`), not its
    pixels: decoding a 1024x1024 WebP costs ~15 ms of CPU, more than the rest of a
    request through the gateway, and would catch nothing more. libwebp turns damaged
    payload bytes into wrong pixels without an error (0 of 120 randomly corrupted
    1024x1024 files, lossy and lossless, failed to decode; all kept valid headers), while
    truncation, the damage a transfer causes, fails the framing check either way.
    """
    passed = passthrough(data, aspect_ratio, max_pixels=max_pixels)
    if passed is not None:
        return passed
    image = open_bounded(data, max_pixels=max_pixels)
    try:
        if _is_passthrough_webp(image, aspect_ratio):
            # EXIF without a rotation, or a layout the header check does not know: a
            # WebP that decodes is still passed through.
            load_pixels(image)
            return EncodedImage(data=data, width=image.width, height=image.height)
        load_pixels(image)
        # In place: without a rotation tag this is a no-op, where the default returns a
        # full copy (one more decoded image held at once, see TRANSCODE_COST).
        ImageOps.exif_transpose(image, in_place=True)
        converted = _convert_mode(image)
        try:
            box = centre_crop_box(converted.width, converted.height, aspect_ratio)
        except ValueError as exc:
            raise ImageDecodeError(str(exc)) from exc
        if box != (0, 0, converted.width, converted.height):
            converted = converted.crop(box)
        out = io.BytesIO()
        # exif=b"" drops metadata: the orientation is already applied to the pixels. An RGB
        # colour profile is kept so wide-gamut output (e.g. Display P3) keeps its colours.
        icc = image.info.get("icc_profile") if image.mode in _RGB_SPACE_MODES else None
        converted.save(
            out,
            "WEBP",
            quality=WEBP_QUALITY,
            method=WEBP_METHOD,
            exif=b"",
            icc_profile=icc or None,
        )
        return EncodedImage(data=out.getvalue(), width=converted.width, height=converted.height)
    finally:
        image.close()


def passthrough(data: bytes, aspect_ratio: str, *, max_pixels: int) -> EncodedImage | None:
    """The input itself if it is a well-framed still WebP of exactly `aspect_ratio`.

    Microseconds (headers only), so callers may run it on the event loop and send only
    the rest to `normalise_to_webp` in a thread.
    """
    size = _passthrough_webp(data, aspect_ratio, max_pixels=max_pixels)
    if size is None:
        return None
    return EncodedImage(data=data, width=size[0], height=size[1])


def _is_passthrough_webp(image: Image.Image, aspect_ratio: str) -> bool:
    if image.format != "WEBP" or getattr(image, "n_frames", 1) != 1:
        return False
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        return False
    w, h = parse_ratio(aspect_ratio)
    return image.width * h == image.height * w


_VP8X_ANIMATION = 0x02
_VP8X_EXIF = 0x08
_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F


def _passthrough_webp(data: bytes, aspect_ratio: str, *, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) if `data` is a well-framed still WebP of exactly `aspect_ratio`.

    Checks what libwebp's own header parsing (WebPGetFeatures) checks, in pure Python and
    without decoding: the RIFF size equals the data length, the chunks tile the file
    exactly, there is one VP8 (lossy key frame with its start code, first partition
    inside the chunk) or VP8L (signature) bitstream and no animation, the bitstream's
    size agrees with the VP8X canvas, and the pixel count is within `max_pixels`. Files
    with EXIF (which may carry a rotation) are left to Pillow. Anything else (truncated,
    mis-framed, animated, another ratio) is None: the caller then takes the decoding
    path, which refuses what does not decode.
    """
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    if struct.unpack_from("<I", data, 4)[0] + 8 != len(data):
        return None
    canvas: tuple[int, int] | None = None
    bitstream: tuple[int, int] | None = None
    offset = 12
    while offset < len(data):
        if offset + 8 > len(data):
            return None
        kind = data[offset : offset + 4]
        length = struct.unpack_from("<I", data, offset + 4)[0]
        start, end = offset + 8, offset + 8 + length
        if end > len(data):
            return None
        payload = data[start : start + min(length, 10)]  # the headers read below
        if kind == b"VP8X":
            if length < 10 or canvas is not None or offset != 12:
                return None
            flags = payload[0]
            if flags & (_VP8X_ANIMATION | _VP8X_EXIF):
                return None
            width = 1 + int.from_bytes(payload[4:7], "little")
            height = 1 + int.from_bytes(payload[7:10], "little")
            canvas = (width, height)
        elif kind in (b"VP8 ", b"VP8L"):
            if bitstream is not None:
                return None
            bitstream = _bitstream_size(kind, payload, length)
            if bitstream is None:
                return None
        elif kind in (b"ANIM", b"ANMF", b"EXIF"):
            return None
        offset = end + (length & 1)  # chunks are padded to an even length
    if offset != len(data) or bitstream is None:
        return None
    if canvas is not None and canvas != bitstream:
        return None
    width, height = bitstream
    w, h = parse_ratio(aspect_ratio)
    if width * height > max_pixels or width * h != height * w:
        return None
    return bitstream


def _bitstream_size(kind: bytes, payload: bytes, length: int) -> tuple[int, int] | None:
    if kind == b"VP8L":
        if length < 5 or payload[0] != _VP8L_SIGNATURE:
            return None
        bits = int.from_bytes(payload[1:5], "little")
        if bits >> 29:  # version must be 0
            return None
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if length < 10 or payload[3:6] != _VP8_START_CODE:
        return None
    tag = int.from_bytes(payload[0:3], "little")
    key_frame, version, shown = not tag & 1, (tag >> 1) & 7, (tag >> 4) & 1
    first_partition = tag >> 5
    if not key_frame or version > 3 or not shown or 10 + first_partition > length:
        return None
    width = int.from_bytes(payload[6:8], "little") & 0x3FFF
    height = int.from_bytes(payload[8:10], "little") & 0x3FFF
    if not width or not height:
        return None
    return width, height


def _convert_mode(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image really has transparency (WebP supports nothing else)."""
    has_alpha = image.mode in _ALPHA_MODES or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        # A fully opaque alpha channel only costs bytes.
        return rgba if _band_range(rgba.getchannel("A"))[0] < 255 else rgba.convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # High bit-depth greyscale: map the 16-bit range onto 8 bits instead of clipping
        # everything above 255 to white (Pillow's plain convert).
        wide = image.convert("F")
        high = _band_range(wide)[1]
        scale = 1.0 if high <= 255 else 255.0 / max(high, 65535.0)
        return wide.point(lambda v: v * scale).convert("L").convert("RGB")
    return image.convert("RGB")


def _band_range(band: Image.Image) -> tuple[float, float]:
    """(min, max) of a single-band image."""
    low, high = band.getextrema()
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        raise TypeError("expected a single-band image")
    return float(low), float(high)
