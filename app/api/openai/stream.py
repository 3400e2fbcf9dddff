"""Streamed /v1 image answers (`stream=true`): OpenAI's Server-Sent Events.

The stream is `partial_images` (0-3) `<kind>.partial_image` events, then one
`<kind>.completed` event with the final image in `b64_json` (`kind` is `image_generation`
or `image_edit`), each as an `event:` line and a `data:` line, as OpenAI sends them.
Partials come only from upstreams that stream them (OpenAI's Images API); for every other
model the stream is the completed event alone. Streaming takes `n=1`, as OpenAI's does.

Charging, the honest rule: the hold is settled once, after the completed event has been
written. The image is charged only if the server handed that event to the connection and
the client was still connected right after (no `http.disconnect` seen); otherwise it is
deleted and refunded. If recording the charge then fails, the service refunds the hold:
the image was delivered free, never charged twice. A client that leaves before the
completed event is charged nothing and the remaining work stops: the generation task is
cancelled (the service refunds the hold) and the upstream read ends at its next partial
(the sink raises, the SDK closes the response; nothing of httpx is cancelled). Bytes the
kernel accepted just before a hang-up may still be lost in transit: as with any HTTP
response, the server cannot know.

Errors before the first event are ordinary HTTP errors (402, 400, 502, ...), since the
response is not started until an event exists; an error after it is an `error` event,
which the SDKs raise as `APIError`.

The /v1 routes call `params.stream_params` on the caller's fields first and, when it
asks for a stream, answer `await stream_response(...)` with the parsed generation request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.openai.params import StreamParams
from app.errors import GatewayError
from app.generation.producer import PartialImages, StoredImage
from app.generation.request import GenerateRequest
from app.generation.service import GenerationResult, GenerationService
from app.imaging.webp import EncodedImage
from app.tenants.service import Caller

log = logging.getLogger(__name__)

# nginx's "client closed request": nobody reads it, the access log and metrics do.
CLIENT_GONE = 499
# The 200 of a streamed answer, for the route's `responses=` (OpenAPI).
STREAM_RESPONSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "With `stream: true`: Server-Sent Events (partial images, then the "
        "completed image)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
Kind = Literal["image_generation", "image_edit"]


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How events render. The images are sent as the producer encoded them: the stored
    final and each partial alike are already in the asked size and `output_format`
    (cropped, resized and encoded in the image pool, within the decode budget)."""

    kind: Kind
    output_format: str
    usage: Callable[[StoredImage], dict[str, Any]]
    quality: str = "auto"
    background: str = "auto"
    # How long a completed event may wait to be written: a client that stays connected but
    # stops reading must not pin the hold and the image until the sweeper (hold TTL, 900 s
    # by default). Not written in time: not delivered, so not charged.
    delivery_timeout: float = 300.0


async def stream_response(
    request: Request,
    generation: GenerationService,
    caller: Caller,
    generate_request: GenerateRequest,
    params: StreamParams,
    fmt: StreamFormat,
) -> Response:
    """Start the generation and answer its events once the first exists (see above)."""
    stream = _Stream(fmt, request.receive)
    partials = (
        PartialImages(params.partial_images, stream.partial) if params.partial_images else None
    )
    stream.start(
        generation.generate(caller, generate_request, partials=partials, deliver=stream.deliver)
    )
    try:
        first = await stream.first()
    except BaseException:
        await stream.close()
        raise
    if first is None:  # the client left before anything could be sent
        await stream.close()
        return Response(status_code=CLIENT_GONE)
    return EventStreamResponse(stream)


class ClientGone(Exception):
    """Raised into the upstream read when the stream's client has left."""


@dataclass(slots=True)
class _Event:
    data: bytes
    # Set for a completed event: resolved True once written to a connected client.
    sent: asyncio.Future[bool] | None = None


_END = _Event(b"")


@dataclass(eq=False)
class _Stream:
    fmt: StreamFormat
    receive: Receive
    queue: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[GenerationResult] | None = None
    watcher: asyncio.Task[None] | None = None
    head: _Event | None = None
    partials_sent: int = 0
    delivered: int = 0
    gone: bool = False

    def start(self, work: Awaitable[GenerationResult]) -> None:
        self.task = asyncio.ensure_future(work)
        self.task.add_done_callback(lambda _: self.queue.put_nowait(_END))
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    # --- called by the generation (its task) ------------------------------------------

    async def partial(self, index: int, image: EncodedImage) -> None:
        if self.gone:
            raise ClientGone
        if index < self.partials_sent:
            return  # a retried upstream call starts its previews again: sent already
        data = await asyncio.to_thread(
            self._render, "partial_image", image, {"partial_image_index": index}
        )
        if self.gone:
            raise ClientGone
        self.partials_sent = index + 1
        self.queue.put_nowait(_Event(data))

    async def deliver(self, item: StoredImage) -> bool:
        if self.gone:
            return False
        usage = self.fmt.usage(item)
        data = await asyncio.to_thread(self._render, "completed", item.image, {"usage": usage})
        event = _Event(data, asyncio.get_running_loop().create_future())
        assert event.sent is not None
        self.queue.put_nowait(event)
        try:
            return await asyncio.wait_for(asyncio.shield(event.sent), self.fmt.delivery_timeout)
        except TimeoutError:
            return False  # if the write ends later, the image was free

    def _render(self, suffix: str, image: EncodedImage, extra: dict[str, Any]) -> bytes:
        """One SSE event; base64 and JSON run here, in a worker thread."""
        return _sse(
            f"{self.fmt.kind}.{suffix}",
            {
                "b64_json": base64.b64encode(image.data).decode("ascii"),
                "background": self.fmt.background,
                "output_format": self.fmt.output_format,
                "quality": self.fmt.quality,
                "size": f"{image.width}x{image.height}",
                **extra,
            },
        )

    # --- the response side --------------------------------------------------------------

    async def next(self) -> _Event | None:
        """The next event to send (`_END` after the last), or None once the client left."""
        assert self.watcher is not None
        getting = asyncio.ensure_future(self.queue.get())
        await asyncio.wait({getting, self.watcher}, return_when=asyncio.FIRST_COMPLETED)
        if self.watcher.done():
            getting.cancel()
            if getting.done() and not getting.cancelled():
                self.queue.put_nowait(getting.result())  # resolved by _leave below
            self._leave()
            return None
        return getting.result()

    async def first(self) -> _Event | None:
        """Waits for the first event; re-raises the generation's error if it ended first."""
        event = await self.next()
        if event is _END:
            assert self.task is not None
            self.task.result()  # raises the error: the route renders it as HTTP
            # Unreachable: a generation that delivered nothing raises (GenerationFailed).
            raise RuntimeError("a generation ended without delivering its image")
        self.head = event
        return event

    async def pump(self, send: Send) -> None:
        event, self.head = self.head, None
        while event is not None and event is not _END:
            await send({"type": "http.response.body", "body": event.data, "more_body": True})
            if event.sent is not None:
                await asyncio.sleep(0)  # a hang-up during the write is seen by now
                connected = self.watcher is not None and not self.watcher.done()
                self.delivered += connected
                if not event.sent.done():
                    event.sent.set_result(connected)
            event = await self.next()
        if event is _END and self.task is not None and not self.task.cancelled():
            error = self.task.exception()
            if error is not None and not self.delivered:
                await send({"type": "http.response.body", "body": _error(error), "more_body": True})

    def _leave(self) -> None:
        """The client left: undelivered images are refused; if none was delivered, the
        generation is cancelled (its hold is refunded)."""
        self.gone = True
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if event.sent is not None and not event.sent.done():
                event.sent.set_result(False)
        if self.task is not None and not self.delivered:
            self.task.cancel()

    async def close(self) -> None:
        """The generation has settled when this returns (cancelled first if undelivered)."""
        if self.watcher is not None:
            self.watcher.cancel()
        if self.task is None:
            return
        if not self.task.done() and not self.delivered:
            self.gone = True
            self.task.cancel()
        # asyncio.wait never cancels what it waits for, nor raises its error (that was
        # reported in the stream, or nobody is listening any more).
        await asyncio.wait({self.task})
        if not self.task.cancelled():
            self.task.exception()


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, stream: _Stream) -> None:
        # As StreamingResponse does: no body, so no Content-Length (the stream is chunked).
        self.status_code = 200
        self.background = None
        self.init_headers({"X-Accel-Buffering": "no"})
        self._stream = stream
        self._held = contextlib.AsyncExitStack()

    def release_after(self, held: contextlib.AsyncExitStack) -> None:
        """Keep `held` (e.g. the request-bytes budget of the uploads the generation still
        uses) until the stream has ended."""
        self._held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._stream.pump(send)
        finally:
            try:
                await self._stream.close()
            finally:
                await self._held.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _sse(kind: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, "created_at": int(time.time()), **payload})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _error(error: BaseException) -> bytes:
    kind = "server_error"
    if isinstance(error, GatewayError):
        code, message = error.code, error.message
        if error.status_code < 500:
            kind = "invalid_request_error"
    else:
        log.error("stream generation failed", exc_info=error)
        code, message = "internal_error", "internal error; nothing was charged"
    body = {"message": message, "type": kind, "param": None, "code": code}
    return f"event: error\ndata: {json.dumps({'type': 'error', 'error': body})}\n\n".encode()
