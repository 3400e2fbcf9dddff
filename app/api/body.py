"""Reading a bounded JSON body: too large is refused before it is read whole, and what
Python's json module accepts but the rest of the gateway cannot hold is refused here,
naming the field: integers past the int-string conversion limit and lone surrogates."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from fastapi import Request

from app.errors import GatewayError, InvalidRequest, PayloadTooLarge

# Python refuses to convert longer digit strings (sys.set_int_max_str_digits, 4300 by
# default); parsing one would raise a bare ValueError, and converting it back to text
# for a hash or a log line too.
MAX_INT_DIGITS = min(sys.get_int_max_str_digits() or 4300, 4300)
# A lone surrogate can only come from a \uD800-\uDFFF escape (raw UTF-8 cannot encode
# one); it cannot be encoded back to UTF-8 for a hash, a response or the database.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsupportedMediaType(GatewayError):
    status_code = 415
    code = "unsupported_media_type"


class _TooManyDigits:
    """Stands in for an integer too long to convert, so the walk can say where it was."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def declared_length(request: Request) -> int | None:
    """Content-Length as an int, None when absent; a malformed one counts as too large."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    text = declared.strip()
    # isascii: str.isdigit() also accepts digits like "²" that int() rejects.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return sys.maxsize
    return int(text)


async def read_json_body(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    declared = declared_length(request)
    if declared is not None and declared > limit:
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
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    too_long = False

    def parse_int(text: str) -> int | _TooManyDigits:
        nonlocal too_long
        digits = len(text) - text.startswith("-")
        if digits > MAX_INT_DIGITS:
            too_long = True
            return _TooManyDigits(digits)
        return int(text)

    try:
        payload = json.loads(raw, parse_int=parse_int)
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequest("Request body JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc.msg}") from None
    if too_long or _SURROGATE_ESCAPE.search(raw):
        _refuse_unrepresentable(payload)
    return payload


def _refuse_unrepresentable(payload: Any) -> None:
    """The first too-long integer or lone surrogate, as a 400 naming where it is."""
    # Iterative: a body nested almost to json's recursion limit must not overflow here.
    pending: list[tuple[str, Any]] = [("", payload)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, _TooManyDigits):
            raise InvalidRequest(
                f"{path or 'body'} is an integer of {value.digits} digits; "
                f"numbers may have at most {MAX_INT_DIGITS}",
                **_field(path),
            )
        if isinstance(value, str) and _SURROGATE.search(value):
            raise InvalidRequest(
                f"{path or 'body'} contains a lone UTF-16 surrogate (an unpaired "
                "\\ud800-\\udfff escape), which is not a character",
                **_field(path),
            )
        if isinstance(value, dict):
            items = list(value.items())
            for key, item in reversed(items):
                if _SURROGATE.search(key):
                    raise InvalidRequest(
                        f"a key in {path or 'the body'} contains a lone UTF-16 surrogate",
                        **_field(path),
                    )
                pending.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))


def _field(path: str) -> dict[str, str]:
    return {"field": path} if path else {}
