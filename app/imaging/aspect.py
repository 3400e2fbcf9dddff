"""The contract's aspect ratios, the nearest native ratio, and exact crop boxes."""

from __future__ import annotations

import math
from fractions import Fraction

CONTRACT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")


def parse_ratio(ratio: str) -> tuple[int, int]:
    width, _, height = ratio.partition(":")
    return int(width), int(height)


def nearest_native(ratio: str, native: tuple[str, ...]) -> str:
    """The native ratio closest to `ratio` on a log scale (so 2:1 and 1:2 are equally far)."""
    if ratio in native:
        return ratio
    target = math.log(_value(ratio))
    return min(native, key=lambda candidate: abs(math.log(_value(candidate)) - target))


def exact_crop_size(width: int, height: int, ratio: str) -> tuple[int, int]:
    """The largest width x height inside the image whose ratio is exactly `ratio`."""
    w, h = parse_ratio(ratio)
    reduced = Fraction(w, h)
    unit = min(width // reduced.numerator, height // reduced.denominator)
    if unit < 1:
        raise ValueError(f"{width}x{height} is too small to crop to {ratio}")
    return unit * reduced.numerator, unit * reduced.denominator


def centre_crop_box(width: int, height: int, ratio: str) -> tuple[int, int, int, int]:
    crop_w, crop_h = exact_crop_size(width, height, ratio)
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _value(ratio: str) -> float:
    w, h = parse_ratio(ratio)
    return w / h
