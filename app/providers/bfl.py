"""Black Forest Labs adapter (FLUX.1 Kontext, FLUX.2) on httpx: submit, poll, download.

BFL has no SDK. A call is three HTTP exchanges: submit the job (`x-key` header), poll the
`polling_url` BFL returns until the task is terminal, then download the signed sample URL,
which needs no key and expires about ten minutes after it is issued.

URLs that come back from BFL are pinned before anything is sent to them: either the API's
exact origin (scheme, host and port of the base URL), or an allow-listed host over https on
its default port (loopback hosts may use http and any port, for tests), never with userinfo.
So the `x-key` header only goes to the API origin (or BFL's allow-listed regional API
hosts it polls on), never to another port or scheme of the same host. Submit and poll
answers are small JSON and read with a small cap; samples are streamed up to their cap.
The submit bodies per endpoint are built in `bfl_body.py`.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import re
import time
from typing import Any

import httpx

from app.imaging.formats import STILL_TYPES, sniff_image_type
from app.providers.base import (
    ImageRequest,
    Moderated,
    ProviderImage,
    RateLimited,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.bfl_body import submit_body
from app.providers.transport import translate_http_error, validation_error_text

log = logging.getLogger(__name__)

MODERATED_STATUSES = frozenset({"Request Moderated", "Content Moderated"})
_MAX_DETAIL_CHARS = 300
# Submit and poll answers are a few hundred bytes of JSON; anything this big is not one.
MAX_JSON_BYTES = 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Runs this long of base64-ish characters are image data echoed back, never a message.
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{64,}")


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether `host` is one of `patterns`: exact names, or `*.suffix` for any subdomain.

    Compare ASCII (IDNA) forms, lower case, without a trailing dot. `*.bfl.ai` matches
    `api.eu1.bfl.ai` but not `bfl.ai` itself, nor `evilbfl.ai`.
    """
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


class BflAdapter:
    name = "bfl"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        http_client: httpx.AsyncClient,
        allowed_hosts: tuple[str, ...],
        max_sample_bytes: int,
        poll_interval: float = 0.5,
        max_poll_interval: float = 4.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._client = http_client
        # The configured API origin is trusted by definition (it already gets the key), so
        # an emulator or a regional base URL works without also listing it; only its exact
        # origin, though: another port or scheme of the same host is another server.
        self._api_origin = _origin(httpx.URL(self._base_url))
        self._allowed_hosts = allowed_hosts
        self._max_sample_bytes = max_sample_bytes
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval

    async def generate(self, request: ImageRequest) -> ProviderImage:
        # Retries belong to the one policy (app.providers.retry); the attempt's deadline is
        # enforced by the transport, which fails the next exchange once it has passed. An
        # abandoned task still runs to the end at BFL and holds one of BFL's active slots
        # until then (BFL has no cancel call).
        try:
            return await self._generate(request)
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, "BFL") from None

    async def aclose(self) -> None:
        # Nothing to release: the httpx client and its pool belong to whoever built them.
        return None

    async def _generate(self, request: ImageRequest) -> ProviderImage:
        # Base64 and JSON encoding of a multi-megabyte source image stay off the loop.
        content = await asyncio.to_thread(submit_body, request)
        submitted = await self._json_exchange(
            "POST",
            httpx.URL(f"{self._base_url}/v1/{request.upstream_model}"),
            "submit",
            content=content,
            headers={"x-key": self._api_key, "content-type": "application/json"},
        )
        polling_url = self._trusted_url(submitted.get("polling_url"), "polling")
        log.debug("BFL task submitted", extra={"task_id": str(submitted.get("id"))[:64]})

        result = await self._poll(polling_url)
        sample_url = self._trusted_url(result.get("sample"), "sample")
        data = await self._download(sample_url)
        return ProviderImage(data=data, mime_type=_sniff(data))

    async def _poll(self, url: httpx.URL) -> dict[str, Any]:
        """Poll until the task is terminal; the `result` object of a Ready task."""
        interval = self._poll_interval
        while True:
            await asyncio.sleep(interval)  # no task is Ready the moment it is submitted
            body = await self._json_exchange("GET", url, "poll", headers={"x-key": self._api_key})
            status = body.get("status")
            if status == "Pending":
                interval = min(interval * 1.5, self._max_poll_interval)
                continue
            if status == "Ready":
                result = body.get("result")
                if not isinstance(result, dict):
                    raise Unavailable("BFL reported Ready without a result")
                return result
            if status in MODERATED_STATUSES:
                raise Moderated(f"BFL {status.lower()}{_moderation_reasons(body)}")
            # "Error", "Task not found" and statuses we do not know all mean this job is
            # gone. Unavailable is retryable: the retry policy may submit a fresh job.
            raise Unavailable(f"BFL task ended with status {_clip(str(status), 40)!r}")

    async def _json_exchange(
        self,
        method: str,
        url: httpx.URL,
        what: str,
        *,
        headers: dict[str, str],
        content: bytes | None = None,
    ) -> dict[str, Any]:
        """One API exchange whose answer is JSON, read with a small size cap.

        No redirects: a redirect would carry the key to wherever it points.
        """
        async with self._client.stream(
            method, url, content=content, headers=headers, follow_redirects=False
        ) as response:
            if what == "poll" and response.status_code == 404:
                raise Unavailable("BFL task not found (HTTP 404)")  # gone: resubmit
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
                raise UpstreamBadRequest(f"BFL {what} answer is over {MAX_JSON_BYTES} bytes")
            size = 0
            chunks: list[bytes] = []
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_JSON_BYTES:
                    raise UpstreamBadRequest(f"BFL {what} answer is over {MAX_JSON_BYTES} bytes")
                chunks.append(chunk)
        return _json_object(response, b"".join(chunks), what)

    async def _download(self, url: httpx.URL) -> bytes:
        """The sample's bytes, streamed and refused beyond max_sample_bytes.

        No key header: the sample lives on a storage host that needs none and must not
        see it. No redirects either: they could lead off the allow-list.
        """
        cap = self._max_sample_bytes
        async with self._client.stream("GET", url, follow_redirects=False) as response:
            if response.status_code != 200:
                # Expired or missing: a fresh job gets a fresh URL, so this is retryable.
                raise Unavailable(f"BFL sample download failed with HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise UpstreamBadRequest(f"BFL sample is {declared} bytes, over the {cap} limit")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise UpstreamBadRequest(f"BFL sample is over the {cap} byte limit")
                chunks.append(chunk)
        return b"".join(chunks)

    def _trusted_url(self, value: object, what: str) -> httpx.URL:
        """`value` as a URL we are willing to fetch, or UpstreamBadRequest naming the host."""
        if not isinstance(value, str) or not value:
            raise Unavailable(f"BFL returned no {what} URL")
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise UpstreamBadRequest(f"BFL {what} URL is not a valid URL") from None
        if url.scheme not in ("http", "https"):
            raise UpstreamBadRequest(f"BFL {what} URL has scheme {_clip(url.scheme, 20)!r}")
        if url.userinfo:
            raise UpstreamBadRequest(f"BFL {what} URL carries credentials (userinfo)")
        if _origin(url) == self._api_origin:
            return url
        host = url.raw_host.decode("ascii", "replace")
        if not host or not host_allowed(host, self._allowed_hosts):
            raise UpstreamBadRequest(
                f"BFL {what} URL host {_clip(host, 100)!r} is not in the allowed hosts"
            )
        if _is_loopback(host):
            return url  # a test server: any port, and http is acceptable
        if url.scheme != "https":
            raise UpstreamBadRequest(f"BFL {what} URL is not https (host {_clip(host, 100)!r})")
        if url.port not in (None, 443):
            raise UpstreamBadRequest(f"BFL {what} URL uses port {url.port}, not 443")
        return url


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    scheme = url.scheme.lower()
    host = url.raw_host.decode("ascii", "replace").lower().rstrip(".")
    return scheme, host, url.port if url.port is not None else _DEFAULT_PORTS.get(scheme)


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_object(response: httpx.Response, content: bytes, what: str) -> dict[str, Any]:
    """The JSON object of a successful API response; BFL's HTTP errors translated here."""
    _raise_for_status(response, content)
    try:
        body = json.loads(content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise Unavailable(f"BFL {what} response is not JSON") from None
    if not isinstance(body, dict):
        raise Unavailable(f"BFL {what} response is not a JSON object")
    return body


def _raise_for_status(response: httpx.Response, content: bytes) -> None:
    """The one place BFL's HTTP errors become shared error types."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 429:
        raise RateLimited(
            f"BFL 429: {_detail(response, content)}", retry_after=_retry_after(response.headers)
        )
    if status == 402:
        raise UpstreamBadRequest("BFL account out of credits")
    if status in (401, 403):
        raise UpstreamBadRequest(f"BFL rejected the API key (HTTP {status})")
    if status == 422:
        raise UpstreamBadRequest(f"BFL rejected the request: {_detail(response, content)}")
    if status == 408:
        raise UpstreamTimeout("BFL timed out (HTTP 408)")
    if status >= 500:
        raise Unavailable(f"BFL {status}")
    # 3xx (redirects are not followed) and other 4xx.
    raise UpstreamBadRequest(f"BFL {status}: {_detail(response, content)}")


def _detail(response: httpx.Response, content: bytes) -> str:
    """BFL's `detail`, flattened, clipped, and scrubbed of anything like image data."""
    try:
        detail = json.loads(content).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        text = validation_error_text(detail)  # FastAPI's 422
    elif isinstance(detail, str):
        text = detail
    else:
        text = f"HTTP {response.status_code}"
    return _clip(_BLOB.sub("<data>", text), _MAX_DETAIL_CHARS)


def _moderation_reasons(body: dict[str, Any]) -> str:
    details = body.get("details")
    reasons = details.get("Moderation Reasons") if isinstance(details, dict) else None
    if isinstance(reasons, list) and reasons:
        return f" ({_clip(', '.join(str(r) for r in reasons), 120)})"
    return ""


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a `retry-after` header: delta-seconds or an HTTP date."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _sniff(data: bytes) -> str:
    mime_type = sniff_image_type(data)
    if mime_type is not None and mime_type in STILL_TYPES:
        return mime_type
    raise Unavailable("BFL sample is not a PNG, JPEG or WebP image")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
