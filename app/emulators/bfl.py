"""A wire-faithful fake of Black Forest Labs' FLUX.1 Kontext API: submit, poll, download.

Same paths (`POST /v1/flux-kontext-max|pro`, `GET /v1/get_result?id=`), same `x-key`
header, FastAPI-style `{"detail": ...}` errors, absolute `polling_url`s, signed sample URLs
that expire ten minutes after they are issued, and the per-endpoint limit on active tasks
(6 for kontext-max, 24 for kontext-pro) answered with 429. Samples are real images derived
deterministically from (endpoint, prompt, aspect ratio, seed, input image).

Task life: a task is active from submit until it is terminal. It reports "Pending" for the
first `pending_polls` polls (2 by default) and then its outcome; with a delay fault it stays
Pending until that many seconds after submit instead. Like the real service, a task nobody
polls still finishes on its own (after UNATTENDED_SECONDS), so an abandoned client does not
hold an active slot forever.

Faults are taken at submit: error (the submit answers that status), delay, blocked
("Request Moderated"), refused ("Content Moderated"), failed ("Error"), lost ("Task not
found" when polled), foreign_sample (the result's sample URL is the given URL),
foreign_polling (the submit answer's polling_url is the given URL) and the body faults
(reset, slow_body, oversized, gzip_bomb), which spoil the answer their `stage` names:
the submit answer, the Ready poll answer (default) or the sample download.
`GET /_emulator/bfl` reports active tasks and the most seen at once, per endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import io
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, Field, PlainValidator, ValidationError, field_validator
from starlette.responses import Response

from app.emulators.bodies import spoil
from app.emulators.faults import (
    BODY_FAULTS,
    BflStage,
    BlockedFault,
    DelayFault,
    ErrorFault,
    FailedFault,
    Fault,
    FaultPlan,
    ForeignPollingFault,
    ForeignSampleFault,
    LostFault,
    RefusedFault,
    control_guard,
    fault_control_router,
)
from app.emulators.images import InvalidSourceImage, synthesize_png


@dataclass(frozen=True, slots=True)
class Endpoint:
    max_active: int
    cost: float  # BFL credits per image (1 credit = $0.01)


ENDPOINTS: dict[str, Endpoint] = {
    "flux-kontext-max": Endpoint(max_active=6, cost=8.0),
    "flux-kontext-pro": Endpoint(max_active=24, cost=4.0),
}
# The resolutions FLUX.1 Kontext was trained on (from BFL's flux repository): each about
# one megapixel with both sides multiples of 16, spanning exactly 9:21 to 21:9. A request
# gets the one nearest its aspect ratio (by log-ratio distance), so 1:1 -> 1024x1024,
# 16:9 -> 1392x752, 4:3 -> 1184x880, 21:9 -> 1568x672; like the real model, the output
# ratio is close to, not always exactly, the requested one.
KONTEXT_SIZES: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)
DEFAULT_PENDING_POLLS = 2
SAMPLE_TTL_SECONDS = 600  # signed sample URLs expire ten minutes after they are issued
# How long a task that nobody polls takes to finish by itself (BFL renders in ~5-30 s).
UNATTENDED_SECONDS = 30.0
RETENTION_SECONDS = 2 * SAMPLE_TTL_SECONDS  # finished tasks are forgotten after this
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_PROMPT_CHARS = 10_000

_RATIO = re.compile(r"(\d{1,5}):(\d{1,5})")
_NOT_AUTHENTICATED = "Not authenticated - Invalid Authentication"
_DEFAULT_MESSAGES = {
    402: "Insufficient credits. Add credits at https://api.bfl.ai to continue.",
    403: _NOT_AUTHENTICATED,
    429: "Rate limit exceeded. Please retry later.",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
Clock = Callable[[], float]


def parse_aspect_ratio(value: str) -> float:
    """Width over height of a "W:H" ratio between 21:9 and 9:21; ValueError otherwise."""
    match = _RATIO.fullmatch(value)
    width, height = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if width <= 0 or height <= 0:
        raise ValueError("aspect_ratio must look like 'W:H' with positive integers")
    # Integer cross-multiplication: 21:9 and 9:21 themselves must pass exactly.
    if not (9 * width <= 21 * height and 21 * width >= 9 * height):
        raise ValueError("aspect_ratio must be between 21:9 and 9:21")
    return width / height


def output_size(aspect_ratio: str | float) -> tuple[int, int]:
    """The Kontext output size for a "W:H" ratio (or a width/height float)."""
    ratio = parse_aspect_ratio(aspect_ratio) if isinstance(aspect_ratio, str) else aspect_ratio
    target = math.log(ratio)
    return min(KONTEXT_SIZES, key=lambda size: abs(math.log(size[0] / size[1]) - target))


# --- request parsing -------------------------------------------------------------------


def _decode_input_image(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("input_image must be a base64 string")
    head = value[:16].lower()
    if head.startswith("data:") or "://" in head:
        # Real BFL also fetches URLs; the emulator never makes outbound requests.
        raise ValueError("input_image must be raw base64 image data (no URL, no data: prefix)")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error:
        raise ValueError("input_image is not valid base64") from None
    if not data:
        raise ValueError("input_image is empty")
    return data


class _SubmitBody(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    input_image: Annotated[bytes | None, PlainValidator(_decode_input_image)] = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    aspect_ratio: str | None = Field(default=None, max_length=16)
    output_format: Literal["png", "jpeg"] = "png"
    safety_tolerance: int = Field(default=2, ge=0, le=6)
    prompt_upsampling: bool = False
    webhook_url: str | None = None  # accepted and ignored: the emulator never calls out
    webhook_secret: str | None = None

    @field_validator("aspect_ratio")
    @classmethod
    def _check_ratio(cls, value: str | None) -> str | None:
        if value is not None:
            parse_aspect_ratio(value)
        return value


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    prompt: str
    input_image: bytes | None
    seed: int
    aspect_ratio: str  # as requested, or derived from the input image
    width: int
    height: int
    output_format: Literal["png", "jpeg"]

    def without_image(self) -> SubmitRequest:
        return dataclasses.replace(self, input_image=None)


def parse_submit(body: bytes, endpoint: str) -> SubmitRequest:
    """Validate a submit body; raises RequestValidationError, which FastAPI renders as 422."""
    try:
        parsed = _SubmitBody.model_validate_json(body)
        ratio = parsed.aspect_ratio
        source_ratio = _image_ratio(parsed.input_image) if parsed.input_image else None
    except ValidationError as exc:
        # Unlike FastAPI, inputs are not echoed: they may be megabytes of base64.
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    except ValueError as exc:
        error = {"type": "value_error", "loc": ("body", "input_image"), "msg": str(exc)}
        raise RequestValidationError([error]) from None
    if ratio is not None:
        width, height = output_size(ratio)
    elif source_ratio is not None:  # Kontext keeps the input's shape when none is asked for
        width, height = output_size(min(max(source_ratio, 9 / 21), 21 / 9))
        ratio = f"{width}:{height}"
    else:
        ratio, (width, height) = "1:1", output_size("1:1")
    seed = parsed.seed
    if seed is None:
        # Real BFL picks a random seed; a derived one keeps the emulator deterministic.
        digest = hashlib.sha256(f"{endpoint}\0{parsed.prompt}\0{ratio}".encode())
        digest.update(hashlib.sha256(parsed.input_image or b"").digest())
        seed = int.from_bytes(digest.digest()[:4], "big")
    return SubmitRequest(
        parsed.prompt, parsed.input_image, seed, ratio, width, height, parsed.output_format
    )


def _image_ratio(data: bytes) -> float:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.width / image.height
    except (OSError, ValueError, SyntaxError, ZeroDivisionError, Image.DecompressionBombError):
        raise ValueError("input_image is not a decodable image") from None


def render_sample(endpoint: str, request: SubmitRequest) -> bytes:
    seed_text = f"{request.prompt} [{endpoint} {request.aspect_ratio} seed {request.seed}]"
    png = synthesize_png(seed_text, request.width, request.height, request.input_image)
    if request.output_format == "png":
        return png
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.save(out, "JPEG", quality=90)
    return out.getvalue()


# --- signed samples --------------------------------------------------------------------


class SampleSigner:
    """HMAC-signed, expiring sample paths, like the storage SAS URLs BFL hands out."""

    def __init__(self, secret: bytes, clock: Clock) -> None:
        self._secret = secret
        self._clock = clock

    def sign(self, name: str) -> str:
        expiry = math.ceil(self._clock() + SAMPLE_TTL_SECONDS)
        return f"/samples/{name}?se={expiry}&sig={self._mac(name, expiry)}"

    def valid(self, name: str, se: str, sig: str) -> bool:
        if not se.isdigit() or len(se) > 12:
            return False
        expected = self._mac(name, int(se))
        # Bytes on both sides: compare_digest refuses non-ASCII str.
        signed = hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))
        return signed and self._clock() <= int(se)

    def _mac(self, name: str, expiry: int) -> str:
        return hmac.new(self._secret, f"{name}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def _storage_error(status: int) -> Response:
    # The delivery host is blob storage: it answers in the storage service's XML, not JSON.
    code, message = (
        ("AuthenticationFailed", "Signature not valid or expired.")
        if status == 403
        else ("BlobNotFound", "The specified blob does not exist.")
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


# --- tasks -----------------------------------------------------------------------------


@dataclass(eq=False)
class Task:
    id: str
    endpoint: str
    request: SubmitRequest
    fault: Fault | None
    submitted: float
    ready_at: float  # when it is terminal even if nobody polls
    delayed: bool
    polls: int = 0
    finished: float | None = None
    outcome: dict[str, Any] | None = None  # status, result and details once terminal
    sample: bytes | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def active(self, now: float) -> bool:
        return self.finished is None and now < self.ready_at


class TaskBoard:
    """Every task the emulator knows, with active counts per endpoint.

    Thread-safe: the emulator runs on a server thread while tests read counts from theirs.
    """

    def __init__(self, clock: Clock, limits: dict[str, int]) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._max_active = dict.fromkeys(limits, 0)

    def admit(self, task: Task) -> bool:
        """Add `task` unless its endpoint already has its limit of active tasks."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            active = self._active(task.endpoint, now)
            if active >= self.limits[task.endpoint]:
                return False
            self._tasks[task.id] = task
            self._max_active[task.endpoint] = max(self._max_active[task.endpoint], active + 1)
            return True

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def finish(self, task: Task) -> None:
        with self._lock:
            if task.finished is None:
                task.finished = self._clock()
            task.request = task.request.without_image()  # nothing needs the input any more

    @property
    def max_active(self) -> dict[str, int]:
        with self._lock:
            return dict(self._max_active)

    @property
    def active(self) -> dict[str, int]:
        with self._lock:
            now = self._clock()
            return {endpoint: self._active(endpoint, now) for endpoint in self.limits}

    def reset(self) -> None:
        """Forget every task and every maximum."""
        with self._lock:
            self._tasks.clear()
            self._max_active = dict.fromkeys(self.limits, 0)

    def _active(self, endpoint: str, now: float) -> int:
        return sum(1 for t in self._tasks.values() if t.endpoint == endpoint and t.active(now))

    def _prune(self, now: float) -> None:
        stale = [
            task_id
            for task_id, task in self._tasks.items()
            if now > max(task.ready_at, task.finished or 0.0) + RETENTION_SECONDS
        ]
        for task_id in stale:
            del self._tasks[task_id]


# --- the app ---------------------------------------------------------------------------


def create_bfl_emulator(
    faults: FaultPlan | None = None,
    *,
    max_active_tasks: dict[str, int] | None = None,
    pending_polls: int = DEFAULT_PENDING_POLLS,
    clock: Clock = time.time,
    control: bool = True,
    control_token: str | None = None,
) -> FastAPI:
    """The emulator as an ASGI app; mountable under any prefix (e.g. `/emulators/bfl`).

    `max_active_tasks` overrides per-endpoint limits; `clock` (wall-clock seconds) lets tests
    move time forward, e.g. to expire samples. `app.state.tasks` is the TaskBoard.
    `control` false leaves out the `/_emulator/*` routes; `control_token` guards them.
    """
    plan = faults if faults is not None else FaultPlan()
    limits = {name: endpoint.max_active for name, endpoint in ENDPOINTS.items()}
    unknown = set(max_active_tasks or {}) - set(limits)
    if unknown:
        raise ValueError(f"unknown BFL endpoints: {sorted(unknown)}")
    limits.update(max_active_tasks or {})
    board = TaskBoard(clock, limits)
    signer = SampleSigner(secrets.token_bytes(32), clock)
    app = FastAPI(title="BFL API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = plan
    app.state.tasks = board
    if control:
        app.include_router(fault_control_router(plan, token=control_token))
        guard = list(control_guard(control_token))

        @app.get("/_emulator/bfl", dependencies=guard)
        def emulator_state() -> dict[str, dict[str, int]]:
            return {"max_active": board.max_active, "active": board.active}

        @app.delete("/_emulator/bfl", status_code=204, dependencies=guard)
        def reset_emulator() -> Response:
            board.reset()
            return Response(status_code=204)

    def submit_route(endpoint: str) -> Callable[[Request], Awaitable[Response]]:
        async def submit(request: Request) -> Response:
            return await _submit(request, endpoint, plan, board, clock)

        return submit

    for name in ENDPOINTS:
        app.add_api_route(f"/v1/{name}", submit_route(name), methods=["POST"])

    @app.get("/v1/get_result")
    async def get_result(request: Request, task_id: str = Query(alias="id")) -> Response:
        if not request.headers.get("x-key"):
            return _detail(403, _NOT_AUTHENTICATED)
        task = board.get(task_id)
        if task is None:
            return JSONResponse(_poll_body(task_id, "Task not found"))
        async with task.lock:  # one render per task, however many polls race
            if task.outcome is None:
                pending = await _advance(task, board, clock, pending_polls)
                if pending is not None:
                    return JSONResponse(pending)
        assert task.outcome is not None
        outcome = dict(task.outcome)
        if outcome["status"] == "Ready" and task.sample is not None:
            # Each poll issues a freshly signed URL, valid for SAMPLE_TTL_SECONDS from now.
            path = signer.sign(f"{task.id}.{task.request.output_format}")
            outcome["result"] = {**outcome["result"], "sample": _base_url(request) + path}
        answer = JSONResponse({"id": task.id, **outcome, "progress": None})
        return _spoil_at(task.fault, "result", answer) if outcome["status"] == "Ready" else answer

    @app.get("/samples/{name}")
    async def sample(name: str, se: str = "", sig: str = "") -> Response:
        # The delivery host wants no key, only a valid, unexpired signature.
        if not signer.valid(name, se, sig):
            return _storage_error(403)
        task_id, _, ext = name.rpartition(".")
        task = board.get(task_id)
        if task is None or task.sample is None or ext != task.request.output_format:
            return _storage_error(404)
        return _spoil_at(task.fault, "sample", Response(task.sample, media_type=f"image/{ext}"))

    return app


def _spoil_at(fault: Fault | None, stage: BflStage, response: Response) -> Response:
    """`response` spoiled by `fault` if it is a body fault aimed at this stage."""
    if isinstance(fault, BODY_FAULTS) and fault.stage == stage:
        return spoil(fault, response)
    return response


async def _submit(
    request: Request, endpoint: str, plan: FaultPlan, board: TaskBoard, clock: Clock
) -> Response:
    if not request.headers.get("x-key"):
        return _detail(403, _NOT_AUTHENTICATED)
    # One fault per authenticated submit, taken before the body is read, as a front end
    # answering quota and availability errors would.
    fault = plan.next_fault()
    if isinstance(fault, ErrorFault):
        message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "Emulated upstream error")
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = str(math.ceil(fault.retry_after))
        return _detail(fault.status, message, headers)

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        return _detail(413, "Request body too large")  # refused before buffering it
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        return _detail(413, "Request body too large")
    # JSON parsing and base64 decoding of a multi-megabyte input image stay off the loop.
    parsed = await asyncio.to_thread(parse_submit, body, endpoint)

    now = clock()
    delay = fault.seconds if isinstance(fault, DelayFault) else None
    task = Task(
        id=str(uuid.uuid4()),
        endpoint=endpoint,
        request=parsed,
        fault=fault,
        submitted=now,
        ready_at=now + (delay if delay is not None else UNATTENDED_SECONDS),
        delayed=delay is not None,
    )
    if not board.admit(task):
        return _detail(
            429,
            f"You have reached the limit of {board.limits[endpoint]} active tasks for "
            f"{endpoint}. Wait for a task to finish before submitting another.",
        )
    polling_url = f"{_base_url(request)}/v1/get_result?id={task.id}"
    if isinstance(fault, ForeignPollingFault):
        polling_url = fault.url.replace("{id}", task.id)
    answer = JSONResponse(
        {"id": task.id, "polling_url": polling_url, "cost": ENDPOINTS[endpoint].cost}
    )
    return _spoil_at(fault, "submit", answer)


async def _advance(
    task: Task, board: TaskBoard, clock: Clock, pending_polls: int
) -> dict[str, Any] | None:
    """Move `task` on by one poll: a Pending body, or None once `task.outcome` is set."""
    now = clock()
    if isinstance(task.fault, LostFault):
        task.outcome = {"status": "Task not found", "result": None, "details": None}
    elif now < task.ready_at and (task.delayed or task.polls < pending_polls):
        task.polls += 1
        if task.delayed:
            progress = (now - task.submitted) / max(task.ready_at - task.submitted, 1e-9)
        else:
            progress = task.polls / (pending_polls + 1)
        return _poll_body(task.id, "Pending", progress=round(min(progress, 0.99), 2))
    else:
        task.outcome = await _outcome(task, clock)
    board.finish(task)
    return None


async def _outcome(task: Task, clock: Clock) -> dict[str, Any]:
    fault = task.fault
    if isinstance(fault, BlockedFault):
        return _terminal("Request Moderated", {"Moderation Reasons": [fault.reason]})
    if isinstance(fault, RefusedFault):
        return _terminal("Content Moderated", {"Moderation Reasons": [fault.finish_reason]})
    if isinstance(fault, FailedFault):
        return _terminal("Error", {"error": fault.message or "Task failed while generating"})
    result: dict[str, Any] = {"prompt": task.request.prompt, "seed": task.request.seed}
    if isinstance(fault, ForeignSampleFault):
        result["sample"] = fault.url
    else:
        try:
            task.sample = await asyncio.to_thread(render_sample, task.endpoint, task.request)
        except InvalidSourceImage:
            return _terminal("Error", {"error": "Failed to process input_image"})
    end = clock()
    result.update(start_time=task.submitted, end_time=end, duration=end - task.submitted)
    return {"status": "Ready", "result": result, "details": None}


def _terminal(status: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"status": status, "result": None, "details": details}


def _poll_body(task_id: str, status: str, *, progress: float | None = None) -> dict[str, Any]:
    return {"id": task_id, "status": status, "result": None, "progress": progress, "details": None}


def _base_url(request: Request) -> str:
    # Starlette's base_url leaves out a mount's prefix; the scope's root_path carries it.
    url = request.url
    return f"{url.scheme}://{url.netloc}{request.scope.get('root_path', '')}".rstrip("/")


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)
