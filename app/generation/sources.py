"""The native contract's source images: one `sourceImage` or several `sourceImages`.

Either field, never both. Every check that needs no decoding runs here, before any
base64 is decoded: the model takes images at all, how many it takes (the catalog's
`max_reference_images`), and the total size from the base64 lengths; then each data URL
is decoded (`decode_data_url`), its messages naming it by index (`sourceImages[2]`). The
pixel checks and the full decode run later in the generation service.
"""

from __future__ import annotations

from typing import Any

from app.errors import InvalidRequest
from app.generation.source_image import FIELD as SOURCE_IMAGE
from app.generation.source_image import decode_data_url
from app.providers.catalog import CatalogModel

SOURCE_IMAGES = "sourceImages"
_DATA_URL_HINT = "a data URL like data:image/png;base64,..."


def parse_sources(
    payload: dict[str, Any], model: CatalogModel, *, max_bytes: int, max_total: int | None
) -> tuple[tuple[bytes, ...], str]:
    """The encoded images of `payload` in order, and the field they came in."""
    single, several = payload.get(SOURCE_IMAGE), payload.get(SOURCE_IMAGES)
    if several is not None and single not in (None, ""):
        raise InvalidRequest(
            f"send either {SOURCE_IMAGE} or {SOURCE_IMAGES}, not both: put every reference "
            f"image in {SOURCE_IMAGES}",
            field=SOURCE_IMAGES,
        )
    if several is None:
        if single is None or single == "":
            return (), SOURCE_IMAGE
        if not isinstance(single, str):
            raise InvalidRequest(
                f"{SOURCE_IMAGE} must be a string: {_DATA_URL_HINT}", field=SOURCE_IMAGE
            )
        return (decode_data_url(single, max_bytes=max_bytes),), SOURCE_IMAGE
    if not isinstance(several, list):
        raise InvalidRequest(
            f"{SOURCE_IMAGES} must be an array of data URLs, each {_DATA_URL_HINT}",
            field=SOURCE_IMAGES,
        )
    if not several:
        raise InvalidRequest(
            f"{SOURCE_IMAGES} is empty: send at least one image, or leave the field out",
            field=SOURCE_IMAGES,
        )
    check_reference_count(model, len(several), SOURCE_IMAGES)
    for index, value in enumerate(several):
        if not isinstance(value, str):
            raise InvalidRequest(
                f"{SOURCE_IMAGES}[{index}] must be a string: {_DATA_URL_HINT}",
                field=f"{SOURCE_IMAGES}[{index}]",
            )
    if max_total is not None:
        # From the base64 lengths alone, before megabytes are decoded for nothing.
        encoded = sum((len(value) - value.find(",") - 1) // 4 * 3 for value in several)
        if encoded > max_total + 2 * len(several):  # padding: up to 2 bytes an image
            raise_over_total(encoded, max_total, SOURCE_IMAGES)
    images = tuple(
        decode_data_url(value, max_bytes=max_bytes, field=f"{SOURCE_IMAGES}[{index}]")
        for index, value in enumerate(several)
    )
    if max_total is not None and (total := sum(map(len, images))) > max_total:
        raise_over_total(total, max_total, SOURCE_IMAGES)
    return images, SOURCE_IMAGES


def check_reference_count(model: CatalogModel, count: int, field: str) -> None:
    """A 400 naming `field` when `model` takes no source image, or fewer than `count`."""
    if count and not model.image_to_image:
        raise InvalidRequest(
            f"model {model.id} does not support image-to-image ({field})", field=field
        )
    if count > model.max_reference_images:
        raise InvalidRequest(
            f"{field} has {count} images; model {model.id} takes at most "
            f"{model.max_reference_images}",
            field=field,
        )


def raise_over_total(total: int, max_total: int, field: str) -> None:
    raise InvalidRequest(
        f"{field}: {total} bytes of image data together; at most {max_total} bytes are "
        "allowed over all source images",
        field=field,
    )


def source_field_at(field: str, index: int, count: int) -> str:
    """How messages name one of a request's `count` source images: `sourceImages[2]`
    (several, or the array field), else the field itself (`sourceImage`)."""
    return f"{field}[{index}]" if count > 1 or field == SOURCE_IMAGES else field
