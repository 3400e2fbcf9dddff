"""The BFL emulator's tasks: signed, expiring sample URLs, the task board (active counts per
endpoint, retention), and how a task moves on by one poll to its outcome."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from app.emulators.bfl_wire import SubmitRequest, render_sample
from app.emulators.faults import (
    BlockedFault,
    FailedFault,
    Fault,
    ForeignSampleFault,
    LostFault,
    RefusedFault,
)
from app.emulators.images import InvalidSourceImage

DEFAULT_PENDING_POLLS = 2
SAMPLE_TTL_SECONDS = 600  # signed sample URLs expire ten minutes after they are issued
# How long a task that nobody polls takes to finish by itself (BFL renders in ~5-30 s).
UNATTENDED_SECONDS = 30.0
RETENTION_SECONDS = 2 * SAMPLE_TTL_SECONDS  # finished tasks are forgotten after this
Clock = Callable[[], float]


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


def storage_error(status: int) -> Response:
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
        self._max_active_total = 0

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
            total = sum(1 for t in self._tasks.values() if t.active(now))
            self._max_active_total = max(self._max_active_total, total)
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
    def max_active_total(self) -> int:
        """The most tasks active at once across every endpoint (one account's load)."""
        with self._lock:
            return self._max_active_total

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
            self._max_active_total = 0

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


async def advance(
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
        return poll_body(task.id, "Pending", progress=round(min(progress, 0.99), 2))
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


def poll_body(task_id: str, status: str, *, progress: float | None = None) -> dict[str, Any]:
    return {"id": task_id, "status": status, "result": None, "progress": progress, "details": None}
