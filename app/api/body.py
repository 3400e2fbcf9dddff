"""Reading a bounded JSON body: too large is refused before it is read whole."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from app.errors import GatewayError, InvalidRequest, PayloadTooLarge


class UnsupportedMediaType(GatewayError):
    status_code = 415
    code = "unsupported_media_type"


async def read_json_body(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("Request body is empty; send a JSON object with at least a prompt")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequest("Request body JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc.msg}") from None
