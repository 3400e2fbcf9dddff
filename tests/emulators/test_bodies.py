"""Body faults on the wire: a good answer reset, dripped, oversized or gzip-bombed.

Driven over real loopback HTTP (the in-process ASGI transport has no sockets to reset)."""

from __future__ import annotations

import itertools
import json
import time
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.emulators.bfl import create_bfl_emulator
from app.emulators.faults import FaultPlan
from app.emulators.gemini import create_gemini_emulator

GENERATE = "/v1beta/models/gemini-2.5-flash-image:generateContent"
BODY = {"contents": [{"parts": [{"text": "a lighthouse"}]}]}
KEY = {"x-goog-api-key": "k"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_gemini_emulator()


@pytest.fixture
async def http(base_url: str, plan: FaultPlan) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, headers=KEY, timeout=30) as client:
        yield client


async def test_reset_sends_part_of_the_body_then_closes(
    http: httpx.AsyncClient, plan: FaultPlan
) -> None:
    plan.add({"kind": "reset", "after_bytes": 100})
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("POST", GENERATE, json=BODY) as response:
            assert response.status_code == 200
            declared = int(response.headers["content-length"])
            async for chunk in response.aiter_raw():
                received += chunk
    assert len(received) == 100 < declared
    assert (await http.post(GENERATE, json=BODY)).status_code == 200  # one call only


async def test_slow_body_sends_headers_then_drips(http: httpx.AsyncClient, plan: FaultPlan) -> None:
    plan.add({"kind": "slow_body", "chunk_bytes": 10, "interval_seconds": 0.5})
    # No tight timeout: on a loaded machine the render alone can take longer than the
    # drip interval. What must hold is the shape: headers first, then small, spaced chunks.
    chunks: list[tuple[float, bytes]] = []
    async with http.stream("POST", GENERATE, json=BODY, timeout=30) as response:
        assert response.status_code == 200  # headers before the body
        async for chunk in response.aiter_raw():
            chunks.append((time.monotonic(), chunk))
            if len(chunks) == 3:
                break
    assert len(chunks) == 3
    assert all(len(chunk) <= 10 for _, chunk in chunks)
    arrivals = [arrived for arrived, _ in chunks]
    assert all(later - earlier >= 0.4 for earlier, later in itertools.pairwise(arrivals))


@pytest.mark.parametrize("declare_length", [True, False])
async def test_oversized_is_valid_json_of_the_size_asked(
    http: httpx.AsyncClient, plan: FaultPlan, declare_length: bool
) -> None:
    plan.add({"kind": "oversized", "total_bytes": 5 * MiB + 3, "declare_length": declare_length})
    response = await http.post(GENERATE, json=BODY)
    assert response.status_code == 200
    assert len(response.content) == 5 * MiB + 3
    assert ("content-length" in response.headers) is declare_length
    assert json.loads(response.content)["candidates"][0]["finishReason"] == "STOP"


async def test_gzip_bomb_is_small_on_the_wire_and_huge_inflated(
    http: httpx.AsyncClient, plan: FaultPlan
) -> None:
    plan.add({"kind": "gzip_bomb", "inflated_bytes": 64 * MiB})
    wire = b""
    async with http.stream("POST", GENERATE, json=BODY) as response:
        assert response.headers["content-encoding"] == "gzip"
        async for chunk in response.aiter_raw():
            wire += chunk
    assert len(wire) < 2 * MiB
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    inflated = inflater.decompress(wire) + inflater.flush()
    assert inflater.eof  # a complete member, trailer (CRC, size) included
    assert len(inflated) == 64 * MiB
    assert json.loads(inflated)["candidates"][0]["content"]["parts"]


async def test_bfl_foreign_polling_url_and_a_spoiled_sample() -> None:
    plan = FaultPlan()
    app = create_bfl_emulator(plan, pending_polls=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bfl") as http:
        headers = {"x-key": "k"}
        plan.add({"kind": "foreign_polling", "url": "https://u:p@bfl:444/v1/get_result?id={id}"})
        submit = await http.post("/v1/flux-kontext-pro", json={"prompt": "p"}, headers=headers)
        task = submit.json()
        assert task["polling_url"] == f"https://u:p@bfl:444/v1/get_result?id={task['id']}"

        plan.add({"kind": "oversized", "total_bytes": 3 * MiB, "stage": "sample"})
        task = (
            await http.post("/v1/flux-kontext-pro", json={"prompt": "p"}, headers=headers)
        ).json()
        result = (await http.get(task["polling_url"], headers=headers)).json()
        assert result["status"] == "Ready"
        sample = await http.get(result["result"]["sample"])
    assert sample.status_code == 200
    assert len(sample.content) == 3 * MiB
    assert sample.content.startswith(b"\x89PNG")
