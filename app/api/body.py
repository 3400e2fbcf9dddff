"""Reading a bounded JSON body: too large is refused before it is read whole, and what
Python's json module accepts but the rest of the gateway cannot hold is refused here,
naming the field: integers past the int-string conversion limit, lone surrogates and
NUL characters (Postgres text cannot store one; SQLite would, so both refuse it here)."""

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
# A lone surrogate or a NUL comes from a \u escape or an encoded surrogate (parse_json
# looks for both; JSON forbids a raw NUL); a surrogate cannot be encoded back to UTF-8 for a
# hash, a response or the database, and Postgres text cannot hold a NUL.
_SUSPECT_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\\u0000")
_UNREPRESENTABLE = re.compile("[\ud800-\udfff\x00]")


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


class LengthRequired(GatewayError):
    status_code = 411
    code = "length_required"


async def read_json_body(request: Request, limit: int, *, unsized_limit: int | None = None) -> Any:
    """The parsed body, at most `limit` bytes; with `unsized_limit`, a body that declares
    no Content-Length (chunked) may only be that big (411 beyond it)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes", limit=limit)
    unsized = declared is None and unsized_limit is not None
    if unsized and unsized_limit is not None:
        limit = min(limit, unsized_limit)
    # One growing buffer, not a list of chunks joined at the end (two copies at once).
    raw = bytearray()
    async for chunk in request.stream():
        if len(raw) + len(chunk) > limit:
            if unsized:
                raise LengthRequired(
                    f"A request body over {limit} bytes must declare its Content-Length"
                )
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes", limit=limit)
        raw += chunk
    if not raw:
        raise InvalidRequest("Request body is empty; send a JSON object with at least a prompt")
    return parse_json(raw)


def parse_json(raw: bytearray | bytes) -> Any:
    """Parse `raw`; a bytearray is emptied once decoded to text, so the body's bytes, its
    text and the parsed strings are never all held at once."""
    suspect = _SUSPECT_ESCAPE.search(raw) is not None
    encoding = json.detect_encoding(raw)
    # "surrogatepass" (as json.loads(bytes) decodes) lets an encoded lone surrogate through:
    # in UTF-8 one starts with 0xED (as do some Hangul), in UTF-16/32 it is any unit.
    encoded_surrogate = encoding != "utf-8" or b"\xed" in raw
    try:
        # What json.loads(bytes) does, but with the bytes freed before parsing.
        text = raw.decode(encoding, "surrogatepass")
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8") from None
    if encoded_surrogate and not suspect:
        suspect = _UNREPRESENTABLE.search(text) is not None
    if isinstance(raw, bytearray):
        raw.clear()
    return _parse_text(text, suspect)


def _parse_text(document: str, suspect: bool) -> Any:
    too_long = False

    def parse_int(text: str) -> int | _TooManyDigits:
        nonlocal too_long
        digits = len(text) - text.startswith("-")
        if digits > MAX_INT_DIGITS:
            too_long = True
            return _TooManyDigits(digits)
        return int(text)

    try:
        payload = json.loads(document, parse_int=parse_int)
    except RecursionError:
        raise InvalidRequest("Request body JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc.msg}") from None
    if too_long or suspect:
        _refuse_unrepresentable(payload)
    return payload


def _refuse_unrepresentable(payload: Any) -> None:
    """The first too-long integer, lone surrogate or NUL, as a 400 naming where it is."""
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
        if isinstance(value, str) and (found := _UNREPRESENTABLE.search(value)):
            raise InvalidRequest(f"{path or 'body'} contains {_describe(found[0])}", **_field(path))
        if isinstance(value, dict):
            items = list(value.items())
            for key, item in reversed(items):
                if found := _UNREPRESENTABLE.search(key):
                    raise InvalidRequest(
                        f"a key in {path or 'the body'} contains {_describe(found[0])}",
                        **_field(path),
                    )
                pending.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))


def _describe(char: str) -> str:
    point = f"U+{ord(char):04X}"
    if char == "\x00":
        return f"the NUL character {point}, which text cannot hold"
    return f"{point}, a lone UTF-16 surrogate (an unpaired \\u escape), which is not a character"


def _field(path: str) -> dict[str, str]:
    return {"field": path} if path else {}
