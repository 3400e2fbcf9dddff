"""Scripted upstream faults shared by every emulator.

A FaultPlan is a queue of faults. Each generation call an emulator receives takes the next
one (or none) and the emulator renders it in its own upstream's wire format: a Gemini 429
looks like Google's error body, an OpenAI 429 like OpenAI's, and so on. Tests script the
plan in-process (`plan.add(...)`) or, for a server in another process, over HTTP through
`fault_control_router`.

Body faults (reset, slow_body, oversized, gzip_bomb) keep the status and headers of a good
answer and spoil its body on the wire (app.emulators.bodies renders them). Control routes
are open on a standalone emulator (tests, bench) and require a bearer token when the
emulator is mounted inside a gateway (`control_token`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.params import Depends as DependsParam
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from app.bearer import bearer_matches

# Reason strings are upstream vocabulary (Gemini block reasons, finish reasons, ...), so
# they are checked for shape only; each emulator decides what they mean.
_REASON = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
_URL = Field(min_length=1, max_length=2000, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_MAX_BODY = 64 * 1024**3
# Which BFL answer a body fault spoils: the submit answer, the poll answer that carries the
# result (the default) or the sample download. Gemini and OpenAI answer once per call.
BflStage = Literal["submit", "result", "sample"]


class _FaultBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(default=1, ge=1, le=10_000, description="How many calls this applies to")


class ErrorFault(_FaultBase):
    """Answer with an HTTP error, in the upstream's error format."""

    kind: Literal["error"] = "error"
    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0, le=3600)
    message: str | None = Field(default=None, max_length=1000)


class DelayFault(_FaultBase):
    """Wait, then answer normally (exercises client timeouts and slow upstreams); a caller
    who hangs up meanwhile gets nothing rendered."""

    kind: Literal["delay"] = "delay"
    seconds: float = Field(gt=0, le=600)


class BlockedFault(_FaultBase):
    """The upstream rejects the prompt itself."""

    kind: Literal["blocked"] = "blocked"
    reason: Annotated[str, _REASON] = "PROHIBITED_CONTENT"


class RefusedFault(_FaultBase):
    """The upstream accepts the prompt but returns no image."""

    kind: Literal["refused"] = "refused"
    finish_reason: Annotated[str, _REASON] = "IMAGE_SAFETY"


class FailedFault(_FaultBase):
    """The upstream accepted the job, then it failed while running.

    BFL renders it as a task that ends with status "Error". Upstreams without accepted jobs
    (Gemini, OpenAI answer in one call) should render it as their 500 (Gemini `INTERNAL`,
    OpenAI `server_error`); an emulator that does not handle a kind answers normally.
    """

    kind: Literal["failed"] = "failed"
    message: str | None = Field(default=None, max_length=1000)


class LostFault(_FaultBase):
    """The upstream accepts a job and then forgets it (BFL: "Task not found" when polled)."""

    kind: Literal["lost"] = "lost"


class ForeignSampleFault(_FaultBase):
    """The result points at `url` instead of the emulator's own signed sample URL.

    Exercises the gateway's host allow-list: an adapter must refuse hosts it does not expect.
    """

    kind: Literal["foreign_sample"] = "foreign_sample"
    url: Annotated[str, _URL]


class ForeignPollingFault(_FaultBase):
    """BFL: the submit answer's `polling_url` is `url` (`{id}` is replaced by the task id).

    Exercises origin pinning: another port or scheme of the API host, userinfo, another host.
    """

    kind: Literal["foreign_polling"] = "foreign_polling"
    url: Annotated[str, _URL]


class ResetFault(_FaultBase):
    """Send the status, the full Content-Length and `after_bytes` of the body (at most half
    of it, so something is always missing), then close the connection."""

    kind: Literal["reset"] = "reset"
    after_bytes: int = Field(default=1024, ge=0, le=_MAX_BODY)
    stage: BflStage = "result"


class SlowBodyFault(_FaultBase):
    """Send the headers at once, then `chunk_bytes` of the body every `interval_seconds`."""

    kind: Literal["slow_body"] = "slow_body"
    chunk_bytes: int = Field(default=64, ge=1, le=1024 * 1024)
    interval_seconds: float = Field(default=1.0, gt=0, le=600)
    stage: BflStage = "result"


class OversizedFault(_FaultBase):
    """A valid body padded to `total_bytes` (JSON whitespace, or zeros after an image).

    `declare_length` false sends it chunked, so only a counting reader can refuse it.
    """

    kind: Literal["oversized"] = "oversized"
    total_bytes: int = Field(ge=1, le=_MAX_BODY)
    declare_length: bool = True
    stage: BflStage = "result"


class GzipBombFault(_FaultBase):
    """A small `Content-Encoding: gzip` body that inflates to `inflated_bytes` (valid once
    inflated: the good body padded as for `oversized`)."""

    kind: Literal["gzip_bomb"] = "gzip_bomb"
    inflated_bytes: int = Field(default=4 * 1024**3, ge=1, le=_MAX_BODY)
    stage: BflStage = "result"


BodyFault = ResetFault | SlowBodyFault | OversizedFault | GzipBombFault
BODY_FAULTS = (ResetFault, SlowBodyFault, OversizedFault, GzipBombFault)

Fault = Annotated[
    ErrorFault
    | DelayFault
    | BlockedFault
    | RefusedFault
    | FailedFault
    | LostFault
    | ForeignSampleFault
    | ForeignPollingFault
    | ResetFault
    | SlowBodyFault
    | OversizedFault
    | GzipBombFault,
    Field(discriminator="kind"),
]
_FAULT_ADAPTER: TypeAdapter[Fault] = TypeAdapter(Fault)
_FAULT_TYPES = (
    ErrorFault,
    DelayFault,
    BlockedFault,
    RefusedFault,
    FailedFault,
    LostFault,
    ForeignSampleFault,
    ForeignPollingFault,
    *BODY_FAULTS,
)


class FaultBatch(BaseModel):
    """Body of `POST /_emulator/faults`."""

    model_config = ConfigDict(extra="forbid")

    faults: list[Fault] = Field(max_length=1000)


class EmulatorState(BaseModel):
    """Body of `GET /_emulator/state`; `count` in `pending` is what is left of each fault."""

    calls: int
    pending: list[Fault]


@dataclass
class _Pending:
    fault: Fault
    remaining: int


class FaultPlan:
    """A thread-safe queue of scripted faults plus a count of generation calls.

    Safe to share between an emulator served on a background thread and the test driving
    it: every operation takes a lock and none of them blocks or awaits while holding it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._calls = 0

    def add(self, *faults: Fault | Mapping[str, Any]) -> None:
        """Append faults, given as models or as their JSON-shaped dicts (validated)."""
        parsed = [
            fault if isinstance(fault, _FAULT_TYPES) else _FAULT_ADAPTER.validate_python(fault)
            for fault in faults
        ]
        with self._lock:
            self._queue.extend(_Pending(fault, fault.count) for fault in parsed)

    def clear(self) -> None:
        """Drop every pending fault; the call counter is kept."""
        with self._lock:
            self._queue.clear()

    def reset(self) -> None:
        """Drop every pending fault and zero the call counter."""
        with self._lock:
            self._queue.clear()
            self._calls = 0

    def next_fault(self) -> Fault | None:
        """Record one generation call and return the fault scripted for it, if any."""
        with self._lock:
            self._calls += 1
            if not self._queue:
                return None
            head = self._queue[0]
            head.remaining -= 1
            if head.remaining == 0:
                self._queue.popleft()
            return head.fault

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    @property
    def pending(self) -> list[Fault]:
        """The faults still queued, each with `count` set to the calls it has left."""
        return self.state().pending

    def state(self) -> EmulatorState:
        with self._lock:
            pending = [
                item.fault.model_copy(update={"count": item.remaining}) for item in self._queue
            ]
            return EmulatorState(calls=self._calls, pending=pending)


def control_guard(token: str | None) -> Sequence[DependsParam]:
    """Dependencies of every `/_emulator/*` route: none when `token` is None (a standalone
    emulator), otherwise `Authorization: Bearer <token>` or 401 (mounted in a gateway,
    whose admin token it is)."""
    if token is None:
        return ()

    async def require_token(request: Request) -> None:
        if not bearer_matches(request.headers.get("authorization", ""), token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Emulator control needs the gateway's admin token (Authorization: Bearer).",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return (Depends(require_token),)


def fault_control_router(plan: FaultPlan, *, token: str | None = None) -> APIRouter:
    """HTTP control of `plan` for tests that drive an emulator in another process.

    `POST /_emulator/faults` appends `{"faults": [...]}` (422 on invalid faults),
    `DELETE /_emulator/faults` clears them, `GET /_emulator/state` reports calls and
    pending faults, and `DELETE /_emulator/state` also zeroes the call counter. With a
    `token`, every route needs it as a bearer token (see `control_guard`).
    """
    router = APIRouter(
        prefix="/_emulator", tags=["emulator control"], dependencies=control_guard(token)
    )

    @router.post("/faults", response_model=EmulatorState)
    def add_faults(batch: FaultBatch) -> EmulatorState:
        plan.add(*batch.faults)
        return plan.state()

    @router.delete("/faults", status_code=status.HTTP_204_NO_CONTENT)
    def clear_faults() -> Response:
        plan.clear()
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/state", response_model=EmulatorState)
    def get_state() -> EmulatorState:
        return plan.state()

    @router.delete("/state", status_code=status.HTTP_204_NO_CONTENT)
    def reset_state() -> Response:
        plan.reset()
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router
