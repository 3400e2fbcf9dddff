"""FaultPlan: scripted faults consumed one call at a time, and its HTTP control routes."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.emulators.faults import (
    BlockedFault,
    DelayFault,
    ErrorFault,
    FaultPlan,
    RefusedFault,
    fault_control_router,
)
from tests.support.servers import serve_in_thread


def test_faults_apply_in_order_for_their_count_then_calls_are_clean() -> None:
    plan = FaultPlan()
    plan.add({"kind": "error", "status": 429, "retry_after": 2, "count": 2})
    plan.add(DelayFault(seconds=0.5), {"kind": "blocked"}, {"kind": "refused"})

    taken = [plan.next_fault() for _ in range(6)]

    assert taken[0] == taken[1] == ErrorFault(status=429, retry_after=2, count=2)
    assert taken[2] == DelayFault(seconds=0.5)
    assert taken[3] == BlockedFault(reason="PROHIBITED_CONTENT")
    assert taken[4] == RefusedFault(finish_reason="IMAGE_SAFETY")
    assert taken[5] is None
    assert plan.calls == 6
    assert plan.pending == []


def test_pending_reports_remaining_counts() -> None:
    plan = FaultPlan()
    plan.add({"kind": "error", "status": 503, "count": 3}, {"kind": "refused", "count": 1})
    plan.next_fault()

    assert [(fault.kind, fault.count) for fault in plan.pending] == [("error", 2), ("refused", 1)]
    assert plan.state().calls == 1


def test_clear_keeps_the_call_count_and_reset_zeroes_it() -> None:
    plan = FaultPlan()
    plan.add({"kind": "error", "status": 500, "count": 5})
    plan.next_fault()
    plan.clear()
    assert plan.next_fault() is None
    assert plan.calls == 2
    plan.add({"kind": "error", "status": 500})
    plan.reset()
    assert plan.calls == 0
    assert plan.pending == []


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"kind": "error"},
        {"kind": "error", "status": 200},
        {"kind": "error", "status": 429, "retry_after": -1},
        {"kind": "delay", "seconds": 0},
        {"kind": "blocked", "count": 0},
        {"kind": "refused", "finish_reason": "two words"},
        {"kind": "blocked", "colour": "red"},
    ],
)
def test_invalid_faults_are_rejected(fault: dict[str, object]) -> None:
    plan = FaultPlan()
    with pytest.raises(ValidationError):
        plan.add(fault)
    assert plan.pending == []


def test_concurrent_calls_consume_each_fault_exactly_count_times() -> None:
    plan = FaultPlan()
    plan.add({"kind": "error", "status": 500, "count": 300}, {"kind": "refused", "count": 200})
    seen: list[str | None] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            fault = plan.next_fault()
            with lock:
                seen.append(fault.kind if fault else None)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert plan.calls == 800
    assert seen.count("error") == 300
    assert seen.count("refused") == 200
    assert seen.count(None) == 300


@pytest.fixture(scope="module")
def control() -> Iterator[tuple[str, FaultPlan]]:
    plan = FaultPlan()
    app = FastAPI()
    app.include_router(fault_control_router(plan))
    with serve_in_thread(app) as base_url:
        yield base_url, plan


@pytest.fixture
async def http(control: tuple[str, FaultPlan]) -> AsyncIterator[httpx.AsyncClient]:
    base_url, plan = control
    plan.reset()
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def test_http_control_appends_reports_and_clears(
    http: httpx.AsyncClient, control: tuple[str, FaultPlan]
) -> None:
    _, plan = control
    first = await http.post(
        "/_emulator/faults", json={"faults": [{"kind": "error", "status": 429, "retry_after": 3}]}
    )
    assert first.status_code == 200
    second = await http.post(
        "/_emulator/faults", json={"faults": [{"kind": "delay", "seconds": 1.5, "count": 2}]}
    )
    assert second.status_code == 200
    assert [fault["kind"] for fault in second.json()["pending"]] == ["error", "delay"]

    plan.next_fault()  # an emulator serving one call
    state = (await http.get("/_emulator/state")).json()
    assert state == {
        "calls": 1,
        "pending": [{"kind": "delay", "seconds": 1.5, "count": 2}],
    }

    assert (await http.delete("/_emulator/faults")).status_code == 204
    assert (await http.get("/_emulator/state")).json() == {"calls": 1, "pending": []}
    assert (await http.delete("/_emulator/state")).status_code == 204
    assert (await http.get("/_emulator/state")).json() == {"calls": 0, "pending": []}


@pytest.mark.parametrize(
    "body",
    [
        {"faults": [{"kind": "error", "status": 99}]},
        {"faults": [{"kind": "nope"}]},
        {"faults": "error"},
        {"fault": []},
    ],
)
async def test_http_control_rejects_bad_faults_with_422(
    http: httpx.AsyncClient, control: tuple[str, FaultPlan], body: dict[str, object]
) -> None:
    _, plan = control
    response = await http.post("/_emulator/faults", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]  # pydantic's list of what is wrong, and where
    assert plan.pending == []


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "oversized"},  # how big is required
        {"kind": "oversized", "total_bytes": 0},
        {"kind": "slow_body", "interval_seconds": 0},
        {"kind": "reset", "after_bytes": -1},
        {"kind": "gzip_bomb", "stage": "elsewhere"},
        {"kind": "foreign_polling", "url": "not a url"},
    ],
)
def test_body_and_polling_faults_are_validated(fault: dict[str, object]) -> None:
    plan = FaultPlan()
    with pytest.raises(ValidationError):
        plan.add(fault)
    assert plan.pending == []


def test_body_faults_default_to_the_bfl_result_stage() -> None:
    plan = FaultPlan()
    plan.add({"kind": "gzip_bomb"}, {"kind": "reset", "stage": "sample"})
    stages = [getattr(fault, "stage", None) for fault in plan.pending]
    assert stages == ["result", "sample"]
