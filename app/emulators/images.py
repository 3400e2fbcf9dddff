"""Placeholder images for the upstream emulators.

Every emulator (Gemini, OpenAI, BFL) answers with a real PNG derived from the prompt and,
for image-to-image, from every input image and the mask, so tests can tell outputs apart
(a dropped reference or mask shows) and offline development shows something that visibly
follows the request: each input image fills its own band of the picture, in order, and a
mask keeps the first image where it is opaque. Rendering is deterministic in its inputs;
like the real services, the emulators add a per-call `variant` unless a seed pins it, so
N calls for one request give N different images. Everything here runs in Pillow's C code
(gradients, resizes, ImageDraw): no per-pixel Python loops.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import itertools
import random
import struct
import warnings
import zlib
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

# Source images above this are refused outright rather than decoded (decompression bombs).
MAX_SOURCE_PIXELS = 50_000_000
MAX_OUTPUT_SIDE = 8192

_GRADIENT_SIDE = 256
# A 256-px gradient rotated by any angle still covers a centred 256-px square only if it
# starts at least sqrt(2) times larger.
_ROTATE_SIDE = 363


class InvalidSourceImage(ValueError):
    """The source bytes are not an image Pillow can decode (or are too large to try)."""


class InvalidMask(InvalidSourceImage):
    """The same, for the mask."""


def synthesize_png(
    seed_text: str,
    width: int,
    height: int,
    sources: bytes | Sequence[bytes] | None = None,
    *,
    mask: bytes | None = None,
    variant: int | None = None,
) -> bytes:
    """A `width` x `height` PNG derived from `seed_text`, the input images, the mask and the
    variant (None: none).

    The same inputs always give byte-identical output. With input images, each is
    cover-cropped into its own vertical band (in order, so order matters too) and overlaid
    with the prompt's colours and shapes, so every one stays recognisable. With a `mask`
    (OpenAI's: transparent where to edit), the first image shows unchanged wherever the
    mask is opaque. Raises InvalidSourceImage when an input or the mask cannot be decoded.
    """
    if not (0 < width <= MAX_OUTPUT_SIDE and 0 < height <= MAX_OUTPUT_SIDE):
        raise ValueError(f"image size {width}x{height} is out of range")
    images = (sources,) if isinstance(sources, bytes) else tuple(sources or ())
    digest = hashlib.sha256(seed_text.encode("utf-8"))
    for source in images:
        digest.update(b"\0source\0" + hashlib.sha256(source).digest())
    if mask is not None:
        digest.update(b"\0mask\0" + hashlib.sha256(mask).digest())
    if variant is not None:
        digest.update(b"\0variant\0" + str(variant).encode())
    rng = random.Random(digest.digest())

    palette = _palette(rng)
    canvas = _background(rng, palette, width, height)
    if images:
        fitted = _bands(images, width, height)
        # Keep the inputs dominant so image-to-image output visibly follows them.
        canvas = Image.blend(fitted, canvas, 0.3)
        shape_alpha = 90
    else:
        shape_alpha = 170
    _draw_shapes(rng, canvas, palette, shape_alpha)
    _draw_caption(canvas, seed_text)
    if mask is not None and images:
        keep = _decode_mask(mask, width, height)
        canvas = Image.composite(_decode_cover(images[0], width, height), canvas, keep)

    return _encode_png(canvas)


_CALLS = itertools.count(1)


def per_call_variant() -> int:
    """A variant no earlier call got. Real upstreams draw a new picture per call unless a
    seed pins it, and the gateway asks once per image, so the N images of one request
    must differ here too."""
    return next(_CALLS)


def _bands(images: tuple[bytes, ...], width: int, height: int) -> Image.Image:
    """Each image cover-cropped into its own vertical band, left to right."""
    if len(images) == 1:
        return _decode_cover(images[0], width, height)
    canvas = Image.new("RGB", (width, height))
    edges = [round(width * i / len(images)) for i in range(len(images) + 1)]
    for image, left, right in zip(images, edges, edges[1:], strict=False):
        if right > left:
            canvas.paste(_decode_cover(image, right - left, height), (left, 0))
    return canvas


def _decode_mask(mask: bytes, width: int, height: int) -> Image.Image:
    """Where to keep the original: the mask's alpha (opaque = keep), stretched to size."""
    try:
        with Image.open(io.BytesIO(mask)) as opened:
            pixels = opened.width * opened.height
            if pixels <= MAX_SOURCE_PIXELS:
                alpha = opened.convert("RGBA").getchannel("A")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidMask(f"mask could not be decoded: {exc}") from exc
    if pixels > MAX_SOURCE_PIXELS:
        raise InvalidMask(f"mask is over the {MAX_SOURCE_PIXELS} pixel limit")
    return alpha.resize((width, height), Image.Resampling.BILINEAR)


def _palette(rng: random.Random) -> list[tuple[int, int, int]]:
    base_hue = rng.random()
    colours = []
    for offset in (0.0, 0.12 + rng.random() * 0.2, 0.45 + rng.random() * 0.2, 0.75):
        hue = (base_hue + offset) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.45 + rng.random() * 0.45, 0.55 + rng.random() * 0.4)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def _background(
    rng: random.Random, palette: list[tuple[int, int, int]], width: int, height: int
) -> Image.Image:
    """A two-colour linear gradient at a random angle, plus one soft radial glow."""
    ramp = Image.linear_gradient("L").resize((_ROTATE_SIDE, _ROTATE_SIDE))
    ramp = ramp.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)
    margin = (_ROTATE_SIDE - _GRADIENT_SIDE) // 2
    ramp = ramp.crop((margin, margin, margin + _GRADIENT_SIDE, margin + _GRADIENT_SIDE))
    mask = ramp.resize((width, height), Image.Resampling.BILINEAR)
    # Giving the grey ramp a two-colour palette and expanding it is one C pass, cheaper
    # than compositing two full-size solid images.
    start, end = palette[0], palette[1]
    mask.putpalette(
        [round(start[c] + (end[c] - start[c]) * i / 255) for i in range(256) for c in range(3)]
    )
    canvas = mask.convert("RGB")

    glow_side = max(2, int(min(width, height) * rng.uniform(0.5, 0.9)))
    glow_mask = _glow_falloff().resize((glow_side, glow_side), Image.Resampling.BILINEAR)
    glow = Image.new("RGB", (glow_side, glow_side), palette[2])
    x = int(rng.uniform(-0.2, 0.8) * width)
    y = int(rng.uniform(-0.2, 0.8) * height)
    canvas.paste(glow, (x, y), glow_mask)
    return canvas


@functools.cache
def _glow_falloff() -> Image.Image:
    """White at the centre fading to black at the inscribed circle (no square edge)."""
    # radial_gradient reaches only ~181 at the middle of each side; rescale so it is 0 there.
    return Image.radial_gradient("L").point([max(0, 255 - i * 255 // 180) for i in range(256)])


def _decode_cover(source: bytes, width: int, height: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # The pixel cap below replaces Pillow's own bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(source))
            pixels = opened.width * opened.height
            if pixels <= MAX_SOURCE_PIXELS:
                # JPEG can decode straight at a reduced scale, which is much faster.
                opened.draft("RGB", (width, height))
                image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow reports corrupt data as any of these depending on the codec.
        raise InvalidSourceImage(f"source image could not be decoded: {exc}") from exc
    if pixels > MAX_SOURCE_PIXELS:
        raise InvalidSourceImage(
            f"source image is {opened.width}x{opened.height}, "
            f"over the {MAX_SOURCE_PIXELS} pixel limit"
        )
    return ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)


def _draw_shapes(
    rng: random.Random, canvas: Image.Image, palette: list[tuple[int, int, int]], alpha: int
) -> None:
    width, height = canvas.size
    # Drawing in "RGBA" mode on an RGB image alpha-blends each fill onto the canvas.
    draw = ImageDraw.Draw(canvas, "RGBA")
    for _ in range(rng.randint(3, 6)):
        colour = palette[rng.randrange(len(palette))]
        fill = (*colour, alpha)
        cx, cy = rng.uniform(0, 1) * width, rng.uniform(0, 1) * height
        rx = rng.uniform(0.06, 0.25) * width
        ry = rng.uniform(0.06, 0.25) * height
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            points = [(cx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)]
            draw.polygon(points, fill=fill)


def _draw_caption(canvas: Image.Image, seed_text: str) -> None:
    """The first words of the seed text in a strip at the bottom, as a human-visible hint."""
    width, height = canvas.size
    if width < 64 or height < 64:
        return
    # ASCII only: the bundled default font has no glyphs for most other scripts.
    text = " ".join(seed_text.split()).encode("ascii", "replace").decode("ascii")
    size = max(10, height // 48)
    font = ImageFont.load_default(size=size)
    max_chars = max(8, int(width / (size * 0.6)))
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    draw = ImageDraw.Draw(canvas, "RGBA")
    strip_top = height - size * 2
    draw.rectangle((0, strip_top, width, height), fill=(0, 0, 0, 110))
    draw.text((size // 2, strip_top + size // 2), text, fill=(255, 255, 255, 230), font=font)


def _encode_png(image: Image.Image) -> bytes:
    """A minimal RGB PNG: filter type 0 on every row, deflate level 1.

    Pillow's encoder tries every PNG filter on every row, which costs more than all the
    drawing above; for throwaway emulator output, speed matters more than file size.
    """
    width, height = image.size
    # Prefix each row with its filter byte (0) without a Python loop: view the RGB rows as
    # a greyscale image 3*width wide and paste it one column to the right of a zero column.
    rows = Image.frombytes("L", (width * 3, height), image.tobytes())
    scanlines = Image.new("L", (width * 3 + 1, height), 0)
    scanlines.paste(rows, (1, 0))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
