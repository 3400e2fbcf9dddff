"""Good answers delivered badly: the body faults of app.emulators.faults on the wire.

Each emulator builds its normal answer and, when the call drew a body fault, hands the
bytes to `spoiled_response`: the status and content type stay, the body is cut off
(reset), dripped (slow_body), padded far past any sane size (oversized) or gzip-encoded so
that a few kilobytes inflate to gigabytes (gzip_bomb). Padding keeps the body valid (JSON
whitespace before the closing brace, zeros after an image), so only a size cap refuses it.
Nothing big is ever held in memory: padding is streamed from one shared block.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import zlib
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.emulators.faults import (
    BODY_FAULTS,
    BodyFault,
    GzipBombFault,
    OversizedFault,
    ResetFault,
    SlowBodyFault,
)

__all__ = [
    "BODY_FAULTS",
    "CLIENT_GONE",
    "EmulatedReset",
    "delay_unless_gone",
    "spoil",
    "spoiled_response",
]

_BLOCK = 1024 * 1024
_SPACES = b" " * _BLOCK
_ZEROS = bytes(_BLOCK)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no mtime


# nginx's status for "the client closed the request": nobody reads it.
CLIENT_GONE = 499


async def delay_unless_gone(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or less if the client hangs up first; True if it did.

    A real upstream does not render for a caller who left; an emulator that did would burn
    the CPU a loaded test shares with the gateway on images nobody reads. Call it once the
    body is read: `receive()` then only reports the disconnect.
    """

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(gone(), seconds)
    except TimeoutError:
        return False
    return True


class EmulatedReset(ConnectionResetError):
    """Raised mid-body: the server closes the connection after what it has sent."""


def spoil(fault: object, response: Response) -> Response:
    """`response` as the fault delivers it, if `fault` is a body fault and it is a 200."""
    if not isinstance(fault, BODY_FAULTS) or response.status_code != 200:
        return response
    content_type = response.headers.get("content-type", "application/octet-stream")
    return spoiled_response(fault, bytes(response.body), content_type)


def spoiled_response(fault: BodyFault, body: bytes, content_type: str) -> Response:
    headers: dict[str, str] = {}
    stream: AsyncIterator[bytes]
    if isinstance(fault, ResetFault):
        headers["content-length"] = str(len(body))
        stream = _reset(body, min(fault.after_bytes, len(body) // 2))
    elif isinstance(fault, SlowBodyFault):
        headers["content-length"] = str(len(body))
        stream = _drip(body, fault.chunk_bytes, fault.interval_seconds)
    elif isinstance(fault, OversizedFault):
        if fault.declare_length:
            headers["content-length"] = str(max(fault.total_bytes, len(body)))
        stream = _padded(body, fault.total_bytes, _filler(content_type))
    elif isinstance(fault, GzipBombFault):
        headers["content-encoding"] = "gzip"
        stream = _gzip_bomb(body, fault.inflated_bytes, _filler(content_type))
    else:  # pragma: no cover - BodyFault is closed
        raise TypeError(f"not a body fault: {fault!r}")
    return StreamingResponse(
        stream, media_type=None, headers={"content-type": content_type, **headers}
    )


def _filler(content_type: str) -> bytes:
    return _SPACES if "json" in content_type else _ZEROS


def _split(body: bytes, filler: bytes) -> tuple[bytes, bytes]:
    """Where padding goes: before a JSON body's closing brace, after anything else."""
    if filler is _SPACES and body.rstrip().endswith((b"}", b"]")):
        end = len(body.rstrip()) - 1
        return body[:end], body[end:]
    return body, b""


async def _reset(body: bytes, after: int) -> AsyncIterator[bytes]:
    if after:
        yield body[:after]
    await asyncio.sleep(0)  # let the server flush what was sent
    raise EmulatedReset("emulated reset mid-body")


async def _drip(body: bytes, chunk: int, interval: float) -> AsyncIterator[bytes]:
    for start in range(0, len(body), chunk):
        await asyncio.sleep(interval)
        yield body[start : start + chunk]


async def _padded(body: bytes, total: int, filler: bytes) -> AsyncIterator[bytes]:
    head, tail = _split(body, filler)
    yield head
    left = max(total - len(body), 0)
    while left > 0:
        piece = filler if left >= len(filler) else filler[:left]
        left -= len(piece)
        yield piece
        await asyncio.sleep(0)  # the block is shared: yielding it costs no copy
    yield tail


@functools.cache
def _deflated_block(filler: bytes) -> bytes:
    """One block of filler as raw deflate after a full flush: a full flush resets the
    compressor, so the same bytes stand for every further block (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressor.compress(b"x")
    compressor.flush(zlib.Z_FULL_FLUSH)
    first = compressor.compress(filler) + compressor.flush(zlib.Z_FULL_FLUSH)
    second = compressor.compress(filler) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert first == second, "a full flush must make blocks repeatable"
    return first


async def _gzip_bomb(body: bytes, inflated: int, filler: bytes) -> AsyncIterator[bytes]:
    head, tail = _split(body, filler)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(head)
    yield _GZIP_HEADER + compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
    unit = await asyncio.to_thread(_deflated_block, filler)
    blocks = max(inflated - len(body), 0) // len(filler)
    for _ in range(blocks):
        # A correct trailer needs the CRC of everything: a thread keeps it off the loop.
        crc = await asyncio.to_thread(zlib.crc32, filler, crc)
        yield unit
    rest = max(inflated - len(body), 0) - blocks * len(filler)
    final = filler[:rest] + tail
    crc = zlib.crc32(final, crc)
    size = len(head) + blocks * len(filler) + len(final)
    yield compressor.compress(final) + compressor.flush(zlib.Z_FINISH)
    yield struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
