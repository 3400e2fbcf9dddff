"""Image bytes for tests: solid inputs, an edit mask, headers Pillow will not write, and
readers of the emulators' output (which input image shows in which band)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

from PIL import Image, ImageStat


def png_header_only(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


RED = (230, 20, 20)
GREEN = (20, 200, 20)
BLUE = (20, 20, 230)


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def half_mask(size: tuple[int, int] = (320, 240)) -> bytes:
    """An OpenAI edit mask: opaque (keep) on the left half, transparent (edit) on the right."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (size[0] // 2, 0, size[0], size[1]))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def band_colours(
    image: Image.Image, bands: int, palette: Sequence[tuple[int, int, int]] = (RED, GREEN, BLUE)
) -> list[tuple[int, int, int]]:
    """For each of `bands` vertical bands (the emulators put one input image in each), the
    palette colour nearest its mean: which input shows there."""
    return [nearest(mean, palette) for mean in band_means(image, bands)]


def band_means(image: Image.Image, bands: int) -> list[list[float]]:
    """The mean RGB of each of `bands` vertical bands: of the middle half of each band,
    clear of the blend at its edges, and of the rows above the caption."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    means = []
    for i in range(bands):
        left, right = width * (4 * i + 1) // (4 * bands), width * (4 * i + 3) // (4 * bands)
        means.append(ImageStat.Stat(rgb.crop((left, height // 8, right, height * 3 // 4))).mean)
    return means


def nearest(mean: Sequence[float], palette: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    return min(palette, key=lambda c: sum((m - v) ** 2 for m, v in zip(mean, c, strict=True)))


def region_mean(image: Image.Image, box: tuple[int, int, int, int]) -> list[float]:
    return list(ImageStat.Stat(image.convert("RGB").crop(box)).mean)


def band_channels(image: Image.Image, bands: int) -> list[str]:
    """For each of `bands` vertical bands, which of "R", "G", "B" is strongest there: a
    reading of which solid RED/GREEN/BLUE input fills it that the emulators' random
    shapes over it cannot flip."""
    return ["RGB"[max(range(3), key=lambda c: mean[c])] for mean in band_means(image, bands)]
