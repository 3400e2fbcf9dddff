"""A wire-faithful fake of the AUTOMATIC1111 web UI's API (`--api`), also served by Forge
and SD.Next: `POST /sdapi/v1/txt2img`, `POST /sdapi/v1/img2img`, `GET /sdapi/v1/sd-models`
and `GET /sdapi/v1/samplers`.

Answers are the web UI's: `{"images": [base64 PNG], "parameters": {the request}, "info":
"<JSON string>"}`; pictures are real PNGs of the requested sides floored to multiples of 8
(the latent unit), deterministic in prompt, seed and the other settings, each init image
and the mask changing them, and a new seed per call unless one is pinned. Errors are the
web UI's (app.emulators.automatic1111_wire): an unknown sampler is a 404 HTTPException,
an undecodable image a 500 HTTPException, a picture too large for the emulated GPU a 500
OutOfMemoryError, bad field types FastAPI's 422. The web UI sets no bounds on sides; here
sides under 64, like zero steps or batch size, are a 422 rather than a crash.

`api_auth` ("user:password", several comma-separated, as `--api-auth`) makes every
`/sdapi` route need HTTP Basic credentials (401 otherwise). Faults (app.emulators.faults),
one per authenticated generation call: error (a 500 is OutOfMemoryError, 502/503/504 a
proxy's page, others an HTTPException), failed (a 500 RuntimeError), delay and the body
faults. `GET /_emulator/automatic1111/calls` lists what the last calls asked for (fields,
never images).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
from collections import deque
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.emulators.automatic1111_wire import (
    DEFAULT_GPU_PIXELS,
    MAX_REQUEST_BYTES,
    MODELS,
    SAMPLERS,
    A1111Error,
    Call,
    Img2ImgBody,
    InvalidRequest,
    http_exception,
    info,
    out_of_memory,
    parameters,
    parse_call,
    render,
    validation_error,
)
from app.emulators.bodies import CLIENT_GONE, delay_unless_gone, spoil
from app.emulators.faults import (
    DelayFault,
    ErrorFault,
    FailedFault,
    FaultPlan,
    control_guard,
    fault_control_router,
)
from app.emulators.images import InvalidSourceImage

_RECENT_CALLS = 50
_PROXY_PAGES = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class RecordedCall(BaseModel):
    """What one call asked for (`GET /_emulator/automatic1111/calls`), without images."""

    endpoint: str
    user: str | None
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    sampler_name: str
    scheduler: str
    cfg_scale: float
    seed: int
    sd_model_checkpoint: str | None
    init_images: int
    mask: bool
    denoising_strength: float | None
    inpainting_mask_invert: int | None


def create_automatic1111_emulator(
    faults: FaultPlan | None = None,
    *,
    api_auth: str | None = None,
    gpu_pixels: int = DEFAULT_GPU_PIXELS,
    control: bool = True,
    control_token: str | None = None,
) -> FastAPI:
    """The emulator as an ASGI app; mountable under any prefix (`/emulators/automatic1111`).

    `gpu_pixels` is the largest width x height x batch_size the emulated GPU draws.
    `control` false leaves out the `/_emulator/*` routes; `control_token` guards them.
    """
    plan = faults if faults is not None else FaultPlan()
    credentials = _credentials(api_auth)
    calls: deque[RecordedCall] = deque(maxlen=_RECENT_CALLS)
    app = FastAPI(
        title="AUTOMATIC1111 API emulator", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.faults = plan
    app.state.calls = calls
    app.add_exception_handler(A1111Error, _render_error)
    app.add_exception_handler(StarletteHTTPException, _not_found)
    if control:
        app.include_router(fault_control_router(plan, token=control_token))

        @app.get(
            "/_emulator/automatic1111/calls",
            response_model=list[RecordedCall],
            dependencies=list(control_guard(control_token)),
        )
        def recorded_calls() -> list[RecordedCall]:
            return list(calls)

    def authenticate(request: Request) -> str | None:
        """The user, or a 401 as fastapi's HTTPBasic and the web UI's `auth` answer it."""
        if credentials is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not token:
            raise http_exception(401, "Not authenticated", {"WWW-Authenticate": "Basic"})
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise http_exception(
                401, "Invalid authentication credentials", {"WWW-Authenticate": "Basic"}
            ) from None
        expected = credentials.get(user)
        if expected is None or not secrets.compare_digest(password, expected):
            raise http_exception(
                401, "Incorrect username or password", {"WWW-Authenticate": "Basic"}
            )
        return user

    async def generate(request: Request, endpoint: str) -> Response:
        user = authenticate(request)
        # One fault per authenticated call, taken before the body is read.
        fault = plan.next_fault()
        if isinstance(fault, ErrorFault):
            return _fault_response(fault)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
            return JSONResponse({"detail": "Request Entity Too Large"}, status_code=413)
        raw = await request.body()
        if len(raw) > MAX_REQUEST_BYTES:
            return JSONResponse({"detail": "Request Entity Too Large"}, status_code=413)
        if isinstance(fault, DelayFault) and await delay_unless_gone(request, fault.seconds):
            return Response(status_code=CLIENT_GONE)
        try:
            # JSON, base64 and image decoding of a multi-megabyte body stay off the loop.
            call = await asyncio.to_thread(parse_call, raw, endpoint, gpu_pixels)
        except InvalidRequest as exc:
            return validation_error(exc.errors)
        calls.append(_record(call, user))
        if isinstance(fault, FailedFault):
            message = fault.message or "Sizes of tensors must match except in dimension 1"
            raise A1111Error(500, "RuntimeError", message)
        try:
            content = await asyncio.to_thread(_answer, call)
        except InvalidSourceImage:
            raise http_exception(500, "Invalid encoded image") from None
        return spoil(fault, Response(content, media_type="application/json"))

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request) -> Response:
        return await generate(request, "txt2img")

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Request) -> Response:
        return await generate(request, "img2img")

    @app.get("/sdapi/v1/samplers", response_model=list[SamplerItem])
    def samplers(request: Request) -> list[SamplerItem]:
        authenticate(request)
        return [
            SamplerItem(name=name, aliases=aliases, options={})
            for name, aliases in SAMPLERS.items()
        ]

    @app.get("/sdapi/v1/sd-models", response_model=list[SDModelItem])
    def sd_models(request: Request) -> list[SDModelItem]:
        authenticate(request)
        return [SDModelItem.model_validate(model) for model in MODELS]

    return app


def _credentials(api_auth: str | None) -> dict[str, str] | None:
    if api_auth is None:
        return None
    pairs = [entry.split(":", 1) for entry in api_auth.split(",")]
    if not pairs or any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise ValueError("api_auth must be user:password[,user:password...]")
    return {user: password for user, password in pairs}


def _answer(call: Call) -> bytes:
    body = {"images": render(call), "parameters": parameters(call), "info": info(call)}
    return json.dumps(body).encode("utf-8")


def _record(call: Call, user: str | None) -> RecordedCall:
    body = call.body
    img2img = isinstance(body, Img2ImgBody)
    checkpoint = (body.override_settings or {}).get("sd_model_checkpoint")
    return RecordedCall(
        endpoint=call.endpoint,
        user=user,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=call.width,
        height=call.height,
        steps=body.steps,
        sampler_name=call.sampler,
        scheduler=call.scheduler,
        cfg_scale=body.cfg_scale,
        seed=call.seed,
        sd_model_checkpoint=str(checkpoint) if checkpoint is not None else None,
        init_images=len(call.init_images),
        mask=call.mask is not None,
        denoising_strength=body.denoising_strength if img2img else None,
        inpainting_mask_invert=body.inpainting_mask_invert
        if isinstance(body, Img2ImgBody)
        else None,
    )


def _fault_response(fault: ErrorFault) -> Response:
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = str(math.ceil(fault.retry_after))
    status = fault.status
    if status == 500:
        error = out_of_memory(fault.message)
        error.headers = headers
        return error.response()
    if status in _PROXY_PAGES:
        # A reverse proxy (or the web UI restarting behind one): nginx's page, not JSON.
        title = f"{status} {_PROXY_PAGES[status]}"
        page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        return HTMLResponse(page, status_code=status, headers=headers)
    return http_exception(status, fault.message or "Emulated upstream error", headers).response()


async def _render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, A1111Error)
    return exc.response()


async def _not_found(request: Request, exc: Exception) -> Response:
    # Routing's own 404/405 are Starlette's, which the web UI's handler does not catch:
    # FastAPI's default `{"detail": "Not Found"}`.
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def recorded(app: FastAPI) -> list[dict[str, Any]]:
    """The calls an in-process emulator recorded, as dicts (tests)."""
    return [call.model_dump() for call in app.state.calls]
