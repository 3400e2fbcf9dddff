"""AUTOMATIC1111 adapter (also Forge and SD.Next): `/sdapi/v1/txt2img` and `/sdapi/v1/img2img`.

The web UI's API (started with `--api`) has no SDK: one JSON POST per image, answered with
`{"images": [base64 PNG, ...], "parameters": {...}, "info": "<JSON string>"}`. Without a
source image the call is txt2img; with one it is img2img, the first source as
`init_images[0]` (raw base64) and `denoising_strength` from the options; a mask (OpenAI's,
transparent where the image may change) goes as `mask` with `inpainting_mask_invert: 1`,
since the web UI takes a mask's alpha channel as "paint here where opaque".

Width and height come from the request's aspect ratio and `image_size` (1K about 1 MP,
2K about 4 MP, 4K about 16 MP), both sides a multiple of `size_multiple` (64 by default;
Stable Diffusion works in 8-pixel latents and prefers 64). The gateway crops the answer to
the exact ratio. Steps, sampler, scheduler, CFG scale and the rest come from `options`
(the catalog's defaults, OPTION_TYPES lists them); the negative prompt is the request's
(the style preset's) joined with the options' `negative_prompt`.

Credentials: an `api_key` of the form `user:password` is sent as HTTP Basic auth (the web
UI's `--api-auth user:password`); any other value as `Authorization: Bearer` (a reverse
proxy in front of it); none, nothing.

Errors. The web UI answers every exception, HTTPException included, as
`{"error": <type name>, "detail": ..., "body": ..., "errors": str(exc)}` with the
exception's status (500 for anything unplanned), and validation failures as FastAPI's 422
`{"detail": [{"loc", "msg", "type"}]}`. Mapped here:
- 401/403: UpstreamBadRequest (credentials); 404 ("Sampler not found", "Model not found", or
  no API at that path: started without `--api`), 400, 413, 422 and other 4xx:
  UpstreamBadRequest with the detail text, scrubbed of anything like image data;
- 500 whose `error` is HTTPException: a deliberate refusal ("Invalid encoded image"),
  UpstreamBadRequest; 500 OutOfMemoryError ("CUDA out of memory") and any other 500:
  Unavailable (retryable: the GPU's memory frees up, another model may serve);
- 502/503/504 (a proxy, or the web UI restarting): Unavailable; 408: UpstreamTimeout;
  429: RateLimited; timeouts, resets and refused connections: translate_http_error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import httpx

from app.imaging.aspect import parse_ratio
from app.imaging.formats import STILL_TYPES, sniff_image_type
from app.providers.base import (
    ImageRequest,
    ProviderImage,
    RateLimited,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.transport import translate_http_error, validation_error_text

UPSTREAM = "AUTOMATIC1111"
# Pixels each size asks for (the gateway's `imageSize`).
SIZE_PIXELS = {"512": 512 * 512, "1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
# The options a catalog entry may set, and their types (bool is not an int here).
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "steps": (int,),
    "sampler_name": (str,),
    "scheduler": (str,),
    "cfg_scale": (int, float),
    "denoising_strength": (int, float),
    "negative_prompt": (str,),
    "clip_skip": (int,),
    "max_pixels": (int,),
    "size_multiple": (int,),
}
DEFAULT_OPTIONS: dict[str, int | float | str | bool] = {
    "steps": 25,
    "sampler_name": "DPM++ 2M",
    "cfg_scale": 7.0,
    "denoising_strength": 0.75,
    "size_multiple": 64,
}
_MAX_DETAIL_CHARS = 300
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{64,}")


def validated_options(
    options: Mapping[str, int | float | str | bool],
) -> dict[str, int | float | str | bool]:
    """DEFAULT_OPTIONS overlaid with `options`; ValueError naming a bad key or value, so a
    catalog entry that cannot work fails when the gateway starts, not per request."""
    merged = dict(DEFAULT_OPTIONS)
    for key, value in options.items():
        types = OPTION_TYPES.get(key)
        if types is None:
            raise ValueError(
                f"automatic1111 option {key!r} is unknown; known: {sorted(OPTION_TYPES)}"
            )
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"automatic1111 option {key!r} must be {types[0].__name__}")
        merged[key] = value
    checks = {
        "steps": (1, 150),
        "cfg_scale": (1, 30),
        "denoising_strength": (0, 1),
        "clip_skip": (1, 12),
        "max_pixels": (64 * 64, 64 * 1024 * 1024),
        "size_multiple": (8, 256),
    }
    for key, (low, high) in checks.items():
        set_to = merged.get(key)
        if set_to is not None and not low <= float(set_to) <= high:
            raise ValueError(f"automatic1111 option {key!r} must be between {low} and {high}")
    if int(merged["size_multiple"]) % 8:
        raise ValueError("automatic1111 option 'size_multiple' must be a multiple of 8")
    return merged


def output_size(
    aspect_ratio: str, image_size: str, *, multiple: int, max_pixels: int | None = None
) -> tuple[int, int]:
    """Width and height, multiples of `multiple`, of about the size's pixel count at the
    ratio (whichever rounding of the height keeps the ratio closest)."""
    pixels = SIZE_PIXELS.get(image_size)
    if pixels is None:
        raise UpstreamBadRequest(
            f"{UPSTREAM} has no image size {image_size[:20]!r}; sizes: {', '.join(SIZE_PIXELS)}"
        )
    if max_pixels is not None and pixels > max_pixels:
        raise UpstreamBadRequest(
            f"{UPSTREAM} upstream is configured for at most {max_pixels} pixels; "
            f"{image_size} asks for {pixels}"
        )
    rw, rh = parse_ratio(aspect_ratio)
    if rw <= 0 or rh <= 0:
        raise UpstreamBadRequest(f"{UPSTREAM} cannot draw aspect ratio {aspect_ratio[:20]!r}")
    ratio = rw / rh
    ideal_height = math.sqrt(pixels / ratio) / multiple
    best: tuple[float, int, int] | None = None
    for units in {max(1, math.floor(ideal_height)), max(1, math.ceil(ideal_height))}:
        height = units * multiple
        width = max(1, round(height * ratio / multiple)) * multiple
        error = abs(math.log(width / height / ratio))
        if best is None or error < best[0]:
            best = (error, width, height)
    assert best is not None
    return best[1], best[2]


def _basic_or_bearer(api_key: str | None) -> dict[str, str]:
    if not api_key:
        return {}
    if ":" in api_key:
        token = base64.b64encode(api_key.encode("utf-8")).decode("ascii")
        return {"authorization": f"Basic {token}"}
    return {"authorization": f"Bearer {api_key}"}


class Automatic1111Adapter:
    name = "automatic1111"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        http_client: httpx.AsyncClient,
        options: Mapping[str, int | float | str | bool],
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **_basic_or_bearer(api_key)}
        self._client = http_client
        self._options = validated_options(options)

    async def generate(self, request: ImageRequest) -> ProviderImage:
        if len(request.source_images) > 1:
            raise UpstreamBadRequest(f"{UPSTREAM} img2img takes one init image")
        if request.mask is not None and not request.source_images:
            raise UpstreamBadRequest(f"{UPSTREAM} takes a mask only with an image to edit")
        endpoint = "img2img" if request.source_images else "txt2img"
        # Base64 and JSON of a multi-megabyte init image stay off the event loop.
        content = await asyncio.to_thread(self._body, request)
        try:
            response = await self._client.post(
                f"{self._base_url}/sdapi/v1/{endpoint}",
                content=content,
                headers=self._headers,
                follow_redirects=False,  # a redirect would carry the credentials along
            )
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, UPSTREAM) from None
        _raise_for_status(response)
        # The body (already capped by the transport) holds the image as base64: parsing
        # and decoding megabytes stay off the loop too.
        data = await asyncio.to_thread(_first_image, response.content)
        return ProviderImage(data=data, mime_type=_sniff(data))

    async def aclose(self) -> None:
        # Nothing to release: the httpx client and its pool belong to whoever built them.
        return None

    def _body(self, request: ImageRequest) -> bytes:
        options = self._options
        max_pixels = options.get("max_pixels")
        width, height = output_size(
            request.aspect_ratio,
            request.image_size,
            multiple=int(options["size_multiple"]),
            max_pixels=int(max_pixels) if max_pixels is not None else None,
        )
        negatives = [request.negative_prompt, options.get("negative_prompt")]
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": ", ".join(str(text) for text in negatives if text),
            "width": width,
            "height": height,
            "steps": options["steps"],
            "sampler_name": options["sampler_name"],
            "cfg_scale": options["cfg_scale"],
            "seed": -1,  # the web UI draws one: N calls give N pictures
            "batch_size": 1,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
        }
        if "scheduler" in options:
            body["scheduler"] = options["scheduler"]
        override: dict[str, Any] = {}
        if request.upstream_model and request.upstream_model != "default":
            override["sd_model_checkpoint"] = request.upstream_model
        if "clip_skip" in options:
            override["CLIP_stop_at_last_layers"] = options["clip_skip"]
        if override:
            body["override_settings"] = override
        if request.source_images:
            body["init_images"] = [_b64(request.source_images[0].data)]
            body["denoising_strength"] = options["denoising_strength"]
            body["resize_mode"] = 1  # crop and resize: the source keeps its proportions
            body["include_init_images"] = False  # do not echo megabytes back
            if request.mask is not None:
                body["mask"] = _b64(request.mask.data)
                body["inpainting_mask_invert"] = 1  # paint where the mask is transparent
                body["inpainting_fill"] = 1  # start from the original pixels
                body["inpaint_full_res"] = False
        return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")  # raw base64, no data: prefix


def _first_image(content: bytes) -> bytes:
    try:
        body = json.loads(content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise Unavailable(f"{UPSTREAM} response is not JSON") from None
    images = body.get("images") if isinstance(body, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], str):
        raise Unavailable(f"{UPSTREAM} returned no image")
    encoded = images[0]
    if encoded.startswith("data:"):  # some forks answer data URLs
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Unavailable(f"{UPSTREAM} image is not valid base64") from None


def _sniff(data: bytes) -> str:
    # PNG by default; the web UI's `samples_format` setting may make it JPEG or WebP.
    mime_type = sniff_image_type(data)
    if mime_type is not None and mime_type in STILL_TYPES:
        return mime_type
    raise Unavailable(f"{UPSTREAM} image is not a PNG, JPEG or WebP image")


def _raise_for_status(response: httpx.Response) -> None:
    """The one place the web UI's HTTP errors become shared error types."""
    status = response.status_code
    if 200 <= status < 300:
        return
    error, detail = _error_body(response)
    message = f"{UPSTREAM} {status}: {detail}"
    if status == 429:
        raise RateLimited(message, retry_after=_retry_after(response))
    if status in (401, 403):
        raise UpstreamBadRequest(f"{UPSTREAM} rejected the credentials (HTTP {status})")
    if status == 404 and detail == "Not Found":
        raise UpstreamBadRequest(
            f"{UPSTREAM} has no {response.request.url.path} (is the web UI started with --api?)"
        )
    if status == 408:
        raise UpstreamTimeout(f"{UPSTREAM} timed out (HTTP 408)")
    if status == 500 and error == "HTTPException":
        raise UpstreamBadRequest(message)  # raised on purpose, e.g. "Invalid encoded image"
    if status >= 500:
        raise Unavailable(f"{UPSTREAM} {status} {error or ''}".rstrip() + f": {detail}")
    raise UpstreamBadRequest(message)


def _error_body(response: httpx.Response) -> tuple[str | None, str]:
    """(the `error` type name, the detail text) of an error answer, flattened, clipped and
    scrubbed of anything like image data (a 422 may quote the field it refused)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        text = validation_error_text(detail)
    elif isinstance(detail, str) and detail:
        text = detail
    elif isinstance(body, dict) and isinstance(body.get("errors"), str) and body["errors"]:
        text = body["errors"]
    else:
        text = f"HTTP {response.status_code}"
    name = _clip(error, 60) if isinstance(error, str) and error else None
    return name, _clip(_BLOB.sub("<data>", text), _MAX_DETAIL_CHARS)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
