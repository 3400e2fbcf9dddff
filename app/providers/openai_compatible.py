"""`openai-compatible`: any self-hosted server that speaks OpenAI's Images API.

vLLM-Omni, LocalAI or another imagegate's `/v1`: `POST {base_url}/images/generations`, or
`/images/edits` when the request carries source images, through the official `openai` SDK
with our guarded httpx client and the SDK's retries off, exactly like the OpenAI adapter
(whose call building and error translation this reuses; errors name the upstream as
"OpenAI-compatible upstream", never its address or key).

What is sent: `model` (the entry's upstream_model), `prompt`, `n=1`, `size` (WxH from the
ratio and imageSize), `response_format=b64_json`, the caller's quality / background /
moderation / input_fidelity when given, and the catalog entry's `options` as extra body
fields (e.g. `{"output_format": "webp"}` or a server's own `steps`).

Results must come back as `b64_json`. A server that answers with a `url` instead is
refused (a final UpstreamBadRequest naming the fix), not followed: fetching a URL the
upstream chose would send the gateway wherever that server says, so the entry must point
at a server that honours `response_format=b64_json`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx

from app.imaging.aspect import parse_ratio
from app.providers.base import ImageRequest, ProviderImage, UpstreamBadRequest
from app.providers.images_answer import ImagesAnswer
from app.providers.openai import NATIVE_SIZES, ImagesAPIAdapter

# The area each imageSize asks for (the square's side); 1K at OpenAI's three ratios is
# OpenAI's own sizes, which every compatible server accepts.
SIZE_SIDES = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
SIDE_STEP = 16  # diffusion servers want multiples of 8 or 16; 16 satisfies both
LABEL = "OpenAI-compatible upstream"


def compatible_size(ratio: str, image_size: str) -> str:
    """`WIDTHxHEIGHT` for an aspect ratio and imageSize: OpenAI's sizes at 1K where they
    exist, else about `side`² pixels at the ratio, both sides multiples of 16."""
    if image_size == "1K" and ratio in NATIVE_SIZES:
        return NATIVE_SIZES[ratio]
    side = SIZE_SIDES.get(image_size)
    if side is None:
        raise UpstreamBadRequest(
            f"imageSize {image_size!r} has no size here (offered: {', '.join(SIZE_SIDES)})"
        )
    width_part, height_part = parse_ratio(ratio)
    width = math.sqrt(side * side * width_part / height_part)
    height = width * height_part / width_part
    return f"{_step(width)}x{_step(height)}"


def _step(length: float) -> int:
    return max(SIDE_STEP, round(length / SIDE_STEP) * SIDE_STEP)


class OpenAICompatibleAdapter(ImagesAPIAdapter):
    """One catalog entry's upstream (no streaming: not every compatible server streams)."""

    name = "openai-compatible"
    label = LABEL

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        http_client: httpx.AsyncClient,
        options: Mapping[str, int | float | str | bool],
    ) -> None:
        # A server that takes no key still gets a placeholder: the SDK would otherwise read
        # OPENAI_API_KEY from the environment and send the OpenAI key to this server.
        super().__init__(api_key=api_key or "none", base_url=base_url, http_client=http_client)
        # Nor may it send the OpenAI organization and project the SDK reads from
        # OPENAI_ORG_ID / OPENAI_PROJECT_ID: they belong to the gateway's OpenAI account.
        self._client.organization = None
        self._client.project = None
        self._extra = dict(options)

    def _size(self, request: ImageRequest) -> str:
        return compatible_size(request.aspect_ratio, request.image_size)

    def _params(self, request: ImageRequest, size: str) -> dict[str, Any]:
        options = request.options
        given = {"quality": options.quality, "background": options.background}
        return {
            "model": request.upstream_model,
            "prompt": request.prompt,
            "n": 1,
            "size": size,
            "response_format": "b64_json",
            **{name: value for name, value in given.items() if value is not None},
            "extra_body": self._extra or None,
        }

    def _image(self, response: ImagesAnswer) -> ProviderImage:
        data = response.data
        if data and not any(item.b64_json for item in data) and any(item.url for item in data):
            raise UpstreamBadRequest(
                f"{LABEL} answered with an image URL, not b64_json; this adapter takes base64 "
                "results only (point the entry at a server that honours "
                "response_format=b64_json)"
            )
        return super()._image(response)
