from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from app.imaging.aspect import CONTRACT_RATIOS, parse_ratio
from app.imaging.decode import ImageDecodeError
from app.imaging.webp import EncodedImage, normalise_to_webp
from tests.support.images import png_header_only

MAX_PIXELS = 40_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    base = Image.linear_gradient("L").resize((width, height))
    rgb = Image.merge(
        "RGB", (base, base.transpose(Image.Transpose.ROTATE_90).resize(base.size), base)
    )
    return rgb.convert(mode) if mode != "RGB" else rgb


def decode(result: EncodedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image


@pytest.mark.parametrize("ratio", CONTRACT_RATIOS)
def test_every_contract_ratio_is_exact(ratio: str) -> None:
    # 1000x700 matches none of the contract ratios.
    source = encode(gradient(1000, 700), "PNG")
    result = normalise_to_webp(source, ratio, max_pixels=MAX_PIXELS)
    w, h = parse_ratio(ratio)
    assert result.width * h == result.height * w
    assert result.mime_type == "image/webp"
    image = decode(result)
    assert image.format == "WEBP"
    assert image.size == (result.width, result.height)
    # The crop is the largest exact box: one side loses less than one ratio unit.
    assert 1000 - result.width < w or 700 - result.height < h


def test_crop_is_centred() -> None:
    # A wide image whose left and right quarters are red and the centre is blue.
    image = Image.new("RGB", (1600, 900), (255, 0, 0))
    image.paste((0, 0, 255), (450, 0, 1150, 900))
    result = normalise_to_webp(encode(image, "PNG"), "9:16", max_pixels=MAX_PIXELS)
    out = decode(result).convert("RGB")
    assert (result.width, result.height) == (504, 896)
    r, _, b = out.getpixel((result.width // 2, result.height // 2))  # type: ignore[misc]
    assert b > 200 and r < 60


def test_webp_of_exact_ratio_passes_through_unchanged() -> None:
    source = encode(gradient(640, 360), "WEBP", quality=90)
    result = normalise_to_webp(source, "16:9", max_pixels=MAX_PIXELS)
    assert result.data is source or result.data == source
    assert (result.width, result.height) == (640, 360)


def test_webp_of_another_ratio_is_cropped() -> None:
    source = encode(gradient(640, 480), "WEBP")
    result = normalise_to_webp(source, "16:9", max_pixels=MAX_PIXELS)
    assert result.data != source
    assert (result.width, result.height) == (640, 360)


def test_corrupt_webp_is_not_passed_through() -> None:
    source = encode(gradient(640, 360), "WEBP")
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(source[: len(source) // 2], "16:9", max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("RGB", {"quality": 90}),
        ("RGB", {"lossless": True}),
        ("RGBA", {"quality": 80}),
        ("RGB", {"quality": 80, "icc_profile": b"\x00" * 64}),
    ],
    ids=["lossy", "lossless", "alpha", "icc"],
)
def test_well_formed_webp_passes_through_without_decoding(
    mode: str, params: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = encode(gradient(640, 360, mode), "WEBP", **params)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a well-formed WebP of the exact ratio is not decoded")

    monkeypatch.setattr(Image, "open", no_decoding)
    result = normalise_to_webp(source, "16:9", max_pixels=MAX_PIXELS)
    assert result.data is source
    assert (result.width, result.height) == (640, 360)


def _corrupt(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-7],  # truncated: RIFF size no longer matches
        lambda d: _corrupt(d, 4, struct.pack("<I", len(d))),  # RIFF size off by 8
        lambda d: _corrupt(d, 20 + 3, b"\x00\x00\x00"),  # VP8 start code gone
        lambda d: _corrupt(d, 16, struct.pack("<I", len(d))),  # chunk runs past the end
        lambda d: _corrupt(d, 12, b"JUNK"),  # no bitstream chunk
    ],
    ids=["truncated", "riff-size", "start-code", "chunk-size", "no-bitstream"],
)
def test_damaged_webp_is_not_passed_through(damage: object) -> None:
    source = encode(gradient(640, 360), "WEBP", quality=90)
    assert source[12:16] == b"VP8 "  # a simple lossy file: VP8 chunk at offset 12
    assert callable(damage)
    damaged = damage(source)
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(damaged, "16:9", max_pixels=MAX_PIXELS)


def test_webp_passthrough_respects_the_pixel_limit() -> None:
    source = encode(gradient(640, 360), "WEBP")
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(source, "16:9", max_pixels=640 * 360 - 1)


def test_animated_webp_is_re_encoded() -> None:
    frames = [gradient(320, 180), gradient(320, 180).rotate(180)]
    source = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    result = normalise_to_webp(source, "16:9", max_pixels=MAX_PIXELS)
    assert result.data != source
    assert getattr(decode(result), "n_frames", 1) == 1


def test_alpha_is_kept() -> None:
    image = Image.new("RGBA", (300, 200), (10, 200, 30, 255))
    image.paste((0, 0, 0, 0), (100, 50, 200, 150))
    result = normalise_to_webp(encode(image, "PNG"), "1:1", max_pixels=MAX_PIXELS)
    out = decode(result)
    assert out.mode == "RGBA"
    assert out.getpixel((100, 100))[3] == 0  # type: ignore[index]
    assert out.getpixel((5, 5))[3] == 255  # type: ignore[index]


def test_opaque_alpha_channel_is_dropped() -> None:
    image = Image.new("RGBA", (300, 300), (10, 200, 30, 255))
    result = normalise_to_webp(encode(image, "PNG"), "1:1", max_pixels=MAX_PIXELS)
    assert decode(result).mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA"])
def test_other_modes_convert(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    source = encode(gradient(300, 200).convert(mode), fmt)
    result = normalise_to_webp(source, "4:3", max_pixels=MAX_PIXELS)
    assert (result.width, result.height) == (264, 198)
    assert decode(result).mode == "RGB"


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (300, 300), 32_768)  # mid-grey in 16 bits
    result = normalise_to_webp(encode(image, "PNG"), "1:1", max_pixels=MAX_PIXELS)
    red, green, blue = decode(result).convert("RGB").getpixel((150, 150))  # type: ignore[misc]
    assert 120 <= red <= 136 and red == green == blue


def test_exif_orientation_is_applied() -> None:
    # Stored landscape 400x200, EXIF says "rotate 90": displayed portrait 200x400.
    image = gradient(400, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    source = encode(image, "JPEG", exif=exif.tobytes())
    result = normalise_to_webp(source, "9:16", max_pixels=MAX_PIXELS)
    assert (result.width, result.height) == (198, 352)


def test_upright_webp_with_rotation_tag_is_re_encoded() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    source = encode(gradient(320, 180), "WEBP", exif=exif.tobytes())
    result = normalise_to_webp(source, "16:9", max_pixels=MAX_PIXELS)
    # Displayed upright it is 180x320, so the 16:9 crop comes from a portrait image.
    assert result.data != source
    assert (result.width, result.height) == (176, 99)


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    bomb = png_header_only(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(ImageDecodeError, match="pixels"):
        normalise_to_webp(bomb, "1:1", max_pixels=MAX_PIXELS)


def test_pixel_limit_is_ours_not_pillows() -> None:
    source = encode(gradient(200, 200), "PNG")
    with pytest.raises(ImageDecodeError, match="pixels"):
        normalise_to_webp(source, "1:1", max_pixels=200 * 200 - 1)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"RIFF\x00\x00\x00\x00WEBP"],
)
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(data, "1:1", max_pixels=MAX_PIXELS)


def test_truncated_png_is_rejected() -> None:
    source = encode(gradient(500, 500), "PNG")
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(source[: len(source) // 2], "1:1", max_pixels=MAX_PIXELS)


def test_image_too_small_for_ratio_is_rejected() -> None:
    source = encode(Image.new("RGB", (5, 1)), "PNG")
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(source, "9:21", max_pixels=MAX_PIXELS)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


def test_formats_outside_png_jpeg_webp_are_refused() -> None:
    source = encode(gradient(200, 200), "GIF")
    with pytest.raises(ImageDecodeError):
        normalise_to_webp(source, "1:1", max_pixels=MAX_PIXELS)
