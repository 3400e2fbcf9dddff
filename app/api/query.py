"""Query-string parameters parsed by hand, so a bad one is a 400 that names it and its range."""

from __future__ import annotations

from typing import overload

from starlette.datastructures import QueryParams

from app.errors import InvalidRequest

# Offsets beyond this are not a page anyone browses to; keep the database from scanning.
MAX_OFFSET = 100_000
_MAX_TEXT_CHARS = 200


@overload
def int_param(
    params: QueryParams, name: str, *, default: int, minimum: int, maximum: int
) -> int: ...


@overload
def int_param(
    params: QueryParams, name: str, *, default: None, minimum: int, maximum: int
) -> int | None: ...


def int_param(
    params: QueryParams, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    value = parse_int(raw)
    if value is None or not minimum <= value <= maximum:
        raise InvalidRequest(f"{name} must be an integer from {minimum} to {maximum}", field=name)
    return value


def parse_int(raw: str, max_digits: int = 18) -> int | None:
    """A non-negative decimal integer of at most `max_digits` digits, else None."""
    text = raw.strip()
    # isascii: str.isdigit() also accepts digits like "²" that int() rejects. The length
    # cap keeps int() below Python's int-string conversion limit (and out of bignums).
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > max_digits:
        return None
    return int(significant)


def text_param(params: QueryParams, name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > _MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"{name} must be 1 to {_MAX_TEXT_CHARS} characters when given", field=name
        )
    return raw


def choice_param(
    params: QueryParams, name: str, allowed: tuple[str, ...], default: str | None = None
) -> str | None:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in allowed:
        raise InvalidRequest(
            f"{name} must be one of: {', '.join(allowed)}", field=name, allowed=list(allowed)
        )
    return raw
