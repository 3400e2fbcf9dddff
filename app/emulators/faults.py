"""Scripted upstream faults shared by every emulator.

A FaultPlan is a queue of faults. Each generation call an emulator receives takes the next
one (or none) and the emulator renders it in its own upstream's wire format: a Gemini 429
looks like Google's error body, an OpenAI 429 like OpenAI's, and so on. Tests script the
plan in-process (`plan.add(...)`) or, for a server in another process, over HTTP through
`fault_control_router`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# Reason strings are upstream vocabulary (Gemini block reasons, finish reasons, ...), so
# they are checked for shape only; each emulator decides what they mean.
_REASON = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


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
    """Wait, then answer normally (exercises client timeouts and slow upstreams)."""

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
    url: str = Field(min_length=1, max_length=2000, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")


Fault = Annotated[
    ErrorFault
    | DelayFault
    | BlockedFault
    | RefusedFault
    | FailedFault
    | LostFault
    | ForeignSampleFault,
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


def fault_control_router(plan: FaultPlan) -> APIRouter:
    """HTTP control of `plan` for tests that drive an emulator in another process.

    `POST /_emulator/faults` appends `{"faults": [...]}` (422 on invalid faults),
    `DELETE /_emulator/faults` clears them, `GET /_emulator/state` reports calls and
    pending faults, and `DELETE /_emulator/state` also zeroes the call counter.
    """
    router = APIRouter(prefix="/_emulator", tags=["emulator control"])

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
