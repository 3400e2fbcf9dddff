"""Open untrusted image bytes within a pixel limit, and decode their pixels.

Synchronous and CPU-bound. Headers first (`open_bounded`, `decoded_size`): a
decompression bomb is refused before anything large is allocated. Callers charge the
decode budget (app/generation/decode_budget.py) and move the decode off the event loop.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError, _imaging

# What upstream providers return. Refusing the rest keeps Pillow's rarer (and riskier)
# decoders, e.g. EPS via Ghostscript, out of reach of whatever bytes an upstream sends.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")

# Pillow allocates decoded pixels in blocks of 16 MiB by default. glibc serves blocks of
# that size from its per-thread heaps once its adaptive mmap threshold has grown (up to
# 32 MiB) and keeps them after free, so RSS grew with the number of threads that ever
# decoded a big image, whatever the decode budget allows at once (bench/decode_memory.py:
# peak 580 -> 360 MiB). Larger blocks are always mmap'ed, and so returned when freed.
PIXEL_BLOCK_BYTES = 64 * 1024 * 1024
_imaging.set_block_size(PIXEL_BLOCK_BYTES)


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode (or are too large to decode safely)."""


def decoded_size(
    data: bytes, *, max_pixels: int, formats: tuple[str, ...] = ACCEPTED_FORMATS
) -> tuple[int, int]:
    """(width, height) from the header alone; ImageDecodeError as `open_bounded` says."""
    image = open_bounded(data, max_pixels=max_pixels, formats=formats)
    try:
        return image.width, image.height
    finally:
        image.close()


def open_bounded(
    data: bytes, *, max_pixels: int, formats: tuple[str, ...] = ACCEPTED_FORMATS
) -> Image.Image:
    """Open an image lazily and reject it from its header if it has too many pixels.

    Pillow only parses the header here; pixel data is decoded later by `load()`, so a
    decompression bomb is refused before it can allocate anything large.
    """
    if not data:
        raise ImageDecodeError("image is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        # Pillow's own (global) limit is looser than ours; report it the same way.
        raise ImageDecodeError(f"image has too many pixels (limit {max_pixels})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError("not a decodable image") from exc
    pixels = image.width * image.height
    if pixels > max_pixels:
        image.close()
        raise ImageDecodeError(
            f"image is {image.width}x{image.height} ({pixels} pixels), "
            f"more than the limit of {max_pixels}"
        )
    if pixels == 0:
        image.close()
        raise ImageDecodeError("image has no pixels")
    return image


def load_pixels(image: Image.Image) -> None:
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("image has too many pixels") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt pixel data surfaces only when decoding.
        raise ImageDecodeError("image data is corrupt or truncated") from exc
