"""One process-wide allowance of request-body bytes in flight.

A body's bytes are copied several times on their way upstream (the body, its text, the
parsed `sourceImage` string, the decoded image, the provider SDK's own base64 and JSON),
and none of that is pixels, so the decode budget does not bound it. A request with a big
body reserves `BODY_COPIES` times its Content-Length here, waiting (without blocking the
loop, FIFO) before its body is read, and holds it until its response is ready; small
bodies (no source image) are exempt. A request without a Content-Length reserves nothing
and may only be as big as an exempt one (411 beyond: big bodies must declare their size).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request

from app.api.body import declared_length
from app.errors import GatewayError
from app.generation.decode_budget import DecodeBudget

# Copies of a big body alive at once, at most, on its way upstream (measured with
# tracemalloc: body + text + parsed string + decoded image + SDK re-encoding).
BODY_COPIES = 4
# Bodies up to this size (a prompt, no source image) are not charged: never slowed.
EXEMPT_BYTES = 64 * 1024


class RequestBusy(GatewayError):
    """No room in the request-bytes budget within the wait; nothing was charged."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = "2"


def _busy() -> GatewayError:
    return RequestBusy(
        "the gateway is busy with other large requests (source images); retry in a moment"
    )


def request_bytes_budget(capacity: int) -> DecodeBudget:
    return DecodeBudget(capacity, busy=_busy)


def body_cost(request: Request, max_body_bytes: int) -> int:
    """What a request reserves: its copies, by its declared length. A body with no
    Content-Length reserves nothing: the route reads at most EXEMPT_BYTES of it (411
    beyond), so a chunked prompt does not hold a full-size body's share."""
    declared = declared_length(request)
    if declared is None or declared > max_body_bytes:
        return 0  # unsized, or refused by the body reader before a byte is read
    return 0 if declared <= EXEMPT_BYTES else declared * BODY_COPIES


@asynccontextmanager
async def reserve_body(
    request: Request, budget: DecodeBudget, *, max_body_bytes: int, wait_seconds: float
) -> AsyncIterator[None]:
    """Hold this request's share of the budget for the `with` (RequestBusy on timeout).

    The settings keep the budget at least one full-size body's share, so every request
    the body limit admits fits.
    """
    cost = body_cost(request, max_body_bytes)
    if cost == 0:
        yield
        return
    async with budget.reserve(cost, wait_seconds=wait_seconds):
        try:
            yield
        finally:
            # What is left of the copies is freed by reference cycles (httpx's request,
            # response and pool stream; tracebacks) that the cyclic collector, counting
            # objects not bytes, may not visit for many requests: the budget would then
            # bound nothing. Collect them before the share is given back.
            gc.collect()
