"""A wire-faithful fake of Black Forest Labs' FLUX API (FLUX.1 Kontext, FLUX.2): submit,
poll, download.

Same paths (`POST /v1/flux-kontext-max|pro`, `/v1/flux-2-pro|flex`, `GET
/v1/get_result?id=`), same `x-key` header, FastAPI-style `{"detail": ...}` errors, absolute
`polling_url`s, signed sample URLs that expire ten minutes after they are issued, and the
per-endpoint limit on active tasks (6 for kontext-max, 24 for the others) answered with
429. Samples are real images derived deterministically from (endpoint, prompt, aspect ratio
or FLUX.2's width and height, seed, input images: `input_image`, Kontext's
`input_image_2..4`, FLUX.2's `input_image_2..8`, each in its own band); without a `seed`
each submit draws a new one.

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
`GET /_emulator/bfl` reports active tasks and the most seen at once, per endpoint and in
total (`max_active_total`: across endpoints, as one account sees it).

This module is the app and its routes; the request wire (validation, sizes, errors, the
sample render) is `bfl_wire.py` (FLUX.2's body `bfl_flux2.py`), the task board, polling
and signed samples `bfl_tasks.py`.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from app.emulators.bfl_flux2 import parse_flux2_submit
from app.emulators.bfl_tasks import (
    DEFAULT_PENDING_POLLS,
    UNATTENDED_SECONDS,
    Clock,
    SampleSigner,
    Task,
    TaskBoard,
    advance,
    poll_body,
    storage_error,
)
from app.emulators.bfl_wire import (
    DEFAULT_MESSAGES,
    ENDPOINTS,
    MAX_REQUEST_BYTES,
    NOT_AUTHENTICATED,
    detail,
    parse_submit,
)
from app.emulators.bodies import spoil
from app.emulators.faults import (
    BODY_FAULTS,
    BflStage,
    DelayFault,
    ErrorFault,
    Fault,
    FaultPlan,
    ForeignPollingFault,
    control_guard,
    fault_control_router,
)

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
        def emulator_state() -> dict[str, dict[str, int] | int]:
            return {
                "max_active": board.max_active,
                "max_active_total": board.max_active_total,
                "active": board.active,
            }

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
            return detail(403, NOT_AUTHENTICATED)
        task = board.get(task_id)
        if task is None:
            return JSONResponse(poll_body(task_id, "Task not found"))
        async with task.lock:  # one render per task, however many polls race
            if task.outcome is None:
                pending = await advance(task, board, clock, pending_polls)
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
            return storage_error(403)
        task_id, _, ext = name.rpartition(".")
        task = board.get(task_id)
        if task is None or task.sample is None or ext != task.request.output_format:
            return storage_error(404)
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
        return detail(403, NOT_AUTHENTICATED)
    # One fault per authenticated submit, taken before the body is read, as a front end
    # answering quota and availability errors would.
    fault = plan.next_fault()
    if isinstance(fault, ErrorFault):
        message = fault.message or DEFAULT_MESSAGES.get(fault.status, "Emulated upstream error")
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = str(math.ceil(fault.retry_after))
        return detail(fault.status, message, headers)

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        return detail(413, "Request body too large")  # refused before buffering it
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        return detail(413, "Request body too large")
    # JSON parsing and base64 decoding of a multi-megabyte input image stay off the loop.
    parse = parse_flux2_submit if endpoint.startswith("flux-2") else parse_submit
    parsed = await asyncio.to_thread(parse, body, endpoint)

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
        return detail(
            429,
            f"You have reached the limit of {board.limits[endpoint]} active tasks for "
            f"{endpoint}. Wait for a task to finish before submitting another.",
        )
    polling_url = f"{_base_url(request)}/v1/get_result?id={task.id}"
    if isinstance(fault, ForeignPollingFault):
        polling_url = fault.url.replace("{id}", task.id)
    cost = ENDPOINTS[endpoint].cost_of(parsed.width, parsed.height)
    answer = JSONResponse({"id": task.id, "polling_url": polling_url, "cost": cost})
    return _spoil_at(fault, "submit", answer)


def _base_url(request: Request) -> str:
    # Starlette's base_url leaves out a mount's prefix; the scope's root_path carries it.
    url = request.url
    return f"{url.scheme}://{url.netloc}{request.scope.get('root_path', '')}".rstrip("/")
