"""The /v1 parameter rules without a server: sizes, per-model options, unknown names."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.openai.params import (
    EDIT_PARAMS,
    GENERATION_PARAMS,
    StreamParams,
    parse,
    stream_params,
)
from app.errors import InvalidRequest
from app.providers.catalog import Catalog

CATALOG = Catalog.load()


@pytest.mark.parametrize(
    ("model", "size", "ratio"),
    [
        ("google/gemini-2.5-flash-image", "1536x1024", "3:2"),
        ("google/gemini-2.5-flash-image", "1792x1024", "16:9"),
        ("openai/gpt-image-1", "1024x1536", "2:3"),
        ("openai/gpt-image-1", "1792x1024", "3:2"),
        ("bfl/flux-kontext-pro", "1536x1024", "4:3"),
        ("bfl/flux-kontext-pro", "256x256", "1:1"),
    ],
)
def test_size_is_drawn_at_the_nearest_native_ratio(model: str, size: str, ratio: str) -> None:
    request, _ = parse(
        {"prompt": "x", "model": model, "size": size}, CATALOG, allowed=GENERATION_PARAMS
    )
    width, height = (int(side) for side in size.split("x"))
    assert request.aspect_ratio == ratio
    assert request.output is not None
    assert (request.output.width, request.output.height) == (width, height)


@pytest.mark.parametrize(
    "size", ["1023x1024", "240x240", "3856x2160", "3840x3840", "4000x1008", "1024x", "x", "²x²", 5]
)
def test_sizes_outside_the_rule_name_size(size: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse({"prompt": "x", "size": size}, CATALOG, allowed=GENERATION_PARAMS)
    assert refused.value.extra["field"] == "size"
    assert "multiples of 16" in refused.value.message


def test_openai_options_are_forwarded_and_defaults_follow_openai() -> None:
    fields = {"prompt": "x", "model": "gpt-image-1", "quality": "high", "moderation": "low"}
    request, view = parse(fields | {"input_fidelity": "low"}, CATALOG, allowed=EDIT_PARAMS)
    assert request.options.quality == "high" and request.options.moderation == "low"
    assert request.options.input_fidelity == "low"
    assert view.response_format == "b64_json" and view.output_format == "png"
    assert request.output is not None and request.output.width is None  # size auto


@pytest.mark.parametrize("name", ["input_fidelity", "mask_mode"])
def test_parameters_of_the_other_route_or_none_are_unknown(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse({"prompt": "x", name: "high"}, CATALOG, allowed=GENERATION_PARAMS)
    assert refused.value.extra["field"] == name


def test_form_strings_are_read_as_integers_and_flags() -> None:
    request, _ = parse(
        {
            "prompt": "x",
            "n": "3",
            "stream": "false",
            "output_format": "jpeg",
            "output_compression": "40",
        },
        CATALOG,
        allowed=EDIT_PARAMS,
    )
    assert request.num_images == 3
    assert request.output is not None and request.output.compression == 40


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"stream": True}, StreamParams(0)),
        ({"stream": "true", "partial_images": "3", "n": "1"}, StreamParams(3)),
    ],
)
def test_stream_params_read_json_values_and_form_strings(
    fields: dict[str, Any], expected: StreamParams | None
) -> None:
    assert stream_params(fields) == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": 1}, "stream"),  # 1 == True in Python; not a JSON boolean
        ({"stream": "yes"}, "stream"),
        ({"stream": True, "partial_images": True}, "partial_images"),
        ({"stream": True, "partial_images": "4"}, "partial_images"),
        ({"stream": True, "n": 2}, "n"),
        ({"stream": "true", "n": "2"}, "n"),
        ({"stream": True, "response_format": "url"}, "response_format"),
        ({"stream": "false", "partial_images": "2"}, "partial_images"),
        ({"partial_images": 0}, "partial_images"),
    ],
)
def test_stream_params_refuse_what_a_stream_cannot_honour(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        stream_params(fields)
    assert refused.value.extra["field"] == param
