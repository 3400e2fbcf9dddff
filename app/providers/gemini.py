"""Google Gemini adapter on the google-genai async client (one image per call)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from app.providers.base import (
    ImageRequest,
    Moderated,
    ProviderError,
    ProviderImage,
    RateLimited,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.transport import translate_http_error

_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiAdapter:
    name = "gemini"

    def __init__(self, *, api_key: str, base_url: str, http_client: httpx.AsyncClient) -> None:
        # Retries belong to our one policy (app.providers.retry): the SDK's stay off.
        self._http_client = http_client
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                api_version="v1beta",
                httpx_async_client=http_client,
            ),
        )

    async def generate(self, request: ImageRequest) -> ProviderImage:
        if request.mask is not None:
            raise UpstreamBadRequest("Gemini models do not take an edit mask")
        # Every reference inline, in order, before the prompt (as Google's examples do).
        parts = [
            types.Part.from_bytes(data=source.data, mime_type=source.mime_type)
            for source in request.source_images
        ]
        parts.append(types.Part.from_text(text=request.prompt))
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            candidate_count=1,
            image_config=_image_config(request),
        )
        try:
            response = await self._client.aio.models.generate_content(
                model=request.upstream_model,
                contents=[types.Content(role="user", parts=parts)],
                config=config,
            )
        except genai_errors.APIError as exc:
            raise _translate_api_error(exc) from None
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, "Gemini") from None
        return _image_from_response(response)

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def _image_config(request: ImageRequest) -> types.ImageConfig:
    """Ratio and, beyond the default 1K (which gemini-2.5-flash-image is always drawn at
    and takes no `imageSize` for), the size: 512 | 2K | 4K where the model offers them."""
    if request.image_size == "1K":
        return types.ImageConfig(aspect_ratio=request.aspect_ratio)
    return types.ImageConfig(aspect_ratio=request.aspect_ratio, image_size=request.image_size)


def _image_from_response(response: types.GenerateContentResponse) -> ProviderImage:
    if not response.candidates:
        feedback = response.prompt_feedback
        reason = feedback.block_reason if feedback and feedback.block_reason else None
        if reason is not None:
            raise Moderated(f"prompt blocked by the provider ({_enum_name(reason)})")
        raise Unavailable("Gemini returned no candidates")
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    # Pro models send interim "thought" images; the answer is the last non-thought image.
    images = [p for p in parts if p.inline_data and p.inline_data.data and not p.thought]
    texts = [p.text for p in parts if p.text and not p.thought]
    if not images:
        finish = _enum_name(candidate.finish_reason) if candidate.finish_reason else "NO_IMAGE"
        raise Moderated(f"the provider returned no image ({finish})")
    blob = images[-1].inline_data
    assert blob is not None and blob.data is not None
    return ProviderImage(
        data=blob.data,
        mime_type=blob.mime_type or "image/png",
        text=" ".join(texts) or None,
    )


def _translate_api_error(exc: genai_errors.APIError) -> ProviderError:
    message = f"Gemini {exc.code} {exc.status or ''}".strip()
    if exc.code == 429:
        return RateLimited(message, retry_after=_retry_delay(exc.details))
    if exc.code in (500, 502, 503, 504) or exc.code >= 500:
        return Unavailable(message)
    if exc.code == 408:
        return UpstreamTimeout(message)
    return UpstreamBadRequest(f"{message}: {exc.message or ''}".strip(": "))


def _retry_delay(details: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail, if the error carries one."""
    error = details.get("error") if isinstance(details, dict) else None
    for detail in (error or {}).get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _RETRY_DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))
