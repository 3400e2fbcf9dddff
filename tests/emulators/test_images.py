"""Emulator images: real PNGs, stable bytes for the same inputs, driven by prompt, every
source image, the mask and the variant."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from app.emulators.images import InvalidMask, InvalidSourceImage, per_call_variant, synthesize_png
from tests.support.images import BLUE, GREEN, RED, band_colours, half_mask, solid_png


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (1536, 672), (768, 1344), (7, 3)])
def test_png_has_requested_size_and_decodes_fully(width: int, height: int) -> None:
    image = decode(synthesize_png("a lighthouse at dusk", width, height))
    assert image.size == (width, height)
    assert image.mode == "RGB"
    # Not a flat fill: gradients and shapes give many distinct colours.
    assert len(image.getcolors(maxcolors=1_000_000) or []) > (10 if width > 64 else 1)


def test_same_inputs_give_identical_bytes() -> None:
    source = encode(Image.new("RGB", (300, 200), (10, 200, 30)), "PNG")
    assert synthesize_png("fox", 640, 480) == synthesize_png("fox", 640, 480)
    assert synthesize_png("fox", 640, 480, source) == synthesize_png("fox", 640, 480, source)


def test_different_prompts_give_visibly_different_images() -> None:
    first = decode(synthesize_png("a red fox in the snow", 512, 512))
    second = decode(synthesize_png("a red fox in the snow!", 512, 512))
    third = decode(synthesize_png("a lighthouse at dusk", 512, 512))
    # A whole different palette and layout, not a few changed pixels.
    assert mean_difference(first, second) > 10
    assert mean_difference(first, third) > 10


def test_source_image_drives_the_output() -> None:
    red = encode(Image.new("RGB", (400, 300), (220, 20, 20)), "PNG")
    blue = encode(Image.new("RGB", (400, 300), (20, 20, 220)), "JPEG")
    plain = decode(synthesize_png("recolour it", 256, 256))
    from_red = decode(synthesize_png("recolour it", 256, 256, red))
    from_blue = decode(synthesize_png("recolour it", 256, 256, blue))

    assert mean_difference(plain, from_red) > 10
    red_r, _, red_b = ImageStat.Stat(from_red).mean
    blue_r, _, blue_b = ImageStat.Stat(from_blue).mean
    # The source dominates: a red source gives a redder result than a blue one.
    assert red_r > blue_r + 60
    assert blue_b > red_b + 60


def test_source_is_cover_cropped_not_stretched() -> None:
    # Left half black, right half white, in a wide source; a square crop of its centre
    # keeps both halves side by side, so the left edge stays darker than the right edge.
    source = Image.new("RGB", (800, 200), (0, 0, 0))
    source.paste((255, 255, 255), (400, 0, 800, 200))
    image = decode(synthesize_png("", 200, 200, encode(source, "PNG"))).convert("L")
    left = ImageStat.Stat(image.crop((0, 0, 20, 150))).mean[0]
    right = ImageStat.Stat(image.crop((180, 0, 200, 150))).mean[0]
    assert right > left + 80


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK"])
def test_source_in_any_pillow_mode_is_accepted(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    source = encode(Image.new("RGB", (64, 64), (90, 120, 150)).convert(mode), fmt)
    assert decode(synthesize_png("x", 128, 96, source)).size == (128, 96)


@pytest.mark.parametrize(
    "source",
    [b"", b"not an image", encode(Image.new("RGB", (64, 64)), "PNG")[:60]],
    ids=["empty", "garbage", "truncated"],
)
def test_undecodable_source_raises_invalid_source_image(source: bytes) -> None:
    with pytest.raises(InvalidSourceImage):
        synthesize_png("x", 64, 64, source)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, -1), (10_000, 10)])
def test_out_of_range_size_is_rejected(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        synthesize_png("x", width, height)


def test_a_variant_gives_a_visibly_different_image_and_none_the_plain_one() -> None:
    plain = synthesize_png("fox", 320, 240)
    assert synthesize_png("fox", 320, 240, variant=None) == plain
    one, two = (
        synthesize_png("fox", 320, 240, variant=1),
        synthesize_png("fox", 320, 240, variant=2),
    )
    assert synthesize_png("fox", 320, 240, variant=1) == one
    assert mean_difference(decode(one), decode(two)) > 10
    assert mean_difference(decode(one), decode(plain)) > 10


def test_per_call_variants_never_repeat() -> None:
    drawn = [per_call_variant() for _ in range(100)]
    assert len(set(drawn)) == 100


def test_every_source_fills_its_own_band_in_order() -> None:
    red, green, blue = solid_png(RED), solid_png(GREEN), solid_png(BLUE)
    three = synthesize_png("merge", 600, 300, [red, green, blue])
    assert band_colours(decode(three), 3) == [RED, GREEN, BLUE]
    assert band_colours(decode(synthesize_png("merge", 600, 300, [blue, red])), 2) == [BLUE, RED]
    # One source as bytes or as a one-item list is the same picture.
    assert synthesize_png("merge", 600, 300, red) == synthesize_png("merge", 600, 300, [red])
    assert three != synthesize_png("merge", 600, 300, [red, green])


def test_a_mask_keeps_the_first_source_where_it_is_opaque() -> None:
    red = solid_png(RED)
    masked = decode(synthesize_png("edit", 400, 300, [red], mask=half_mask()))
    plain = decode(synthesize_png("edit", 400, 300, [red]))
    # Clear of the few columns where the stretched mask blends at its edge.
    assert masked.crop((0, 0, 195, 300)).getcolors() == [(195 * 300, RED)]
    assert len(masked.crop((205, 0, 400, 300)).getcolors(maxcolors=100_000) or []) > 100
    assert plain.crop((0, 0, 195, 300)).getcolors(maxcolors=100_000) != [(195 * 300, RED)]
    with pytest.raises(InvalidMask):
        synthesize_png("edit", 400, 300, [red], mask=b"not a png")
