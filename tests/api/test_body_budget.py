"""The request-bytes budget over HTTP: big-source requests beyond IMAGEGATE_REQUEST_BYTES_
BUDGET_MB queue for it (all succeed) and give all of it back; one whose wait runs out is a
503 `busy` with nothing charged; a client gone mid-body returns its share.

A request holds its share from before its body is read, so a client that sends half a
body and pauses holds the budget for as long as the test wants: no timing involved.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from app.settings import Settings
from tests.support.gateway import Stack, TenantHandle, gateway_settings, stack_in_thread

PATH = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image
MAX_BODY = 256 * 1024
# The smallest budget allowed: 4 x the body limit. A ~200 KB body costs 4x that, so two
# never fit together.
BUDGET_MB = 1.0


def _settings(data_dir: Path, wait_seconds: float) -> Settings:
    return gateway_settings(
        data_dir=data_dir,
        max_body_bytes=MAX_BODY,
        request_bytes_budget_mb=BUDGET_MB,
        request_bytes_wait_seconds=wait_seconds,
    )


@pytest_asyncio.fixture(scope="module")
async def patient(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = _settings(tmp_path_factory.mktemp("bytes-patient"), wait_seconds=60)
    async for stack in stack_in_thread(settings, "bytes-patient"):
        yield stack


@pytest_asyncio.fixture(scope="module")
async def impatient(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # No wait at all: a request that finds the budget taken is refused at once.
    settings = _settings(tmp_path_factory.mktemp("bytes-impatient"), wait_seconds=0)
    async for stack in stack_in_thread(settings, "bytes-impatient"):
        yield stack


def _noisy_body(prompt: str) -> bytes:
    """A JSON body of ~200 KB: a noise PNG does not compress, so its size is predictable."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (220, 220), os.urandom(220 * 220 * 3)).save(buffer, "PNG")
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = f'{{"prompt": "{prompt}", "sourceImage": "{source}"}}'.encode()
    assert 150_000 < len(body) < MAX_BODY
    return body


async def _in_use(client: httpx.AsyncClient) -> int:
    response = await client.get("/healthz")
    assert response.status_code == 200
    return int(response.json()["requestBytesInUse"])


async def _until_held(client: httpx.AsyncClient) -> int:
    """The budget in use once the paused request has reserved its share."""
    for _ in range(500):
        if held := await _in_use(client):
            return held
        await asyncio.sleep(0.01)
    raise AssertionError("the paused request never reserved its share of the budget")


async def _until_waiting(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(500):
        response = await client.get("/healthz")
        if response.json()["requestsWaitingForBytes"] == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} requests never queued for the budget: {response.json()}")


async def _until_free(client: httpx.AsyncClient) -> None:
    for _ in range(500):
        if await _in_use(client) == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the budget was not given back: {await _in_use(client)} in use")


class _PausedBody:
    """A request body sent in two halves, the second only when `resume` is set."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.resume = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = len(self.body) // 2
        yield self.body[:half]
        await self.resume.wait()
        yield self.body[half:]


def _paused_post(
    client: httpx.AsyncClient, tenant: TenantHandle, body: _PausedBody
) -> asyncio.Task[httpx.Response]:
    headers = tenant.auth | {
        "Content-Type": "application/json",
        "Content-Length": str(len(body.body)),
    }
    return asyncio.create_task(client.post(PATH, content=body, headers=headers))


def _post(
    client: httpx.AsyncClient, tenant: TenantHandle, body: bytes
) -> asyncio.Task[httpx.Response]:
    headers = tenant.auth | {"Content-Type": "application/json"}
    return asyncio.create_task(client.post(PATH, content=body, headers=headers))


async def test_big_requests_beyond_the_budget_queue_all_succeed_and_return_it(
    patient: Stack,
) -> None:
    tenant = await patient.new_tenant(credits=PRICE * 4)
    async with patient.client(timeout=120) as client:
        holder_body = _PausedBody(_noisy_body("the holder"))
        holder = _paused_post(client, tenant, holder_body)
        held = await _until_held(client)
        assert held == 4 * len(holder_body.body)
        queued = [_post(client, tenant, _noisy_body(f"queued {i}")) for i in range(3)]
        await _until_waiting(client, 3)  # all three reached the gateway and queue
        assert not any(task.done() for task in queued)
        assert await _in_use(client) == held  # they wait; nothing more was charged
        holder_body.resume.set()
        responses = [await holder, *await asyncio.gather(*queued)]
        for response in responses:
            assert response.status_code == 200, response.text
        await _until_free(client)
        # Small requests (no source image) take nothing from the budget.
        plain = await client.post(PATH, json={"prompt": "no source"}, headers=tenant.auth)
        assert plain.status_code == 402, plain.text  # out of credits, not out of budget
        assert await _in_use(client) == 0
    assert await patient.balance(tenant) == 0
    assert (await patient.audit(tenant)).ok


async def test_a_request_whose_wait_runs_out_is_503_busy_and_free(impatient: Stack) -> None:
    tenant = await impatient.new_tenant(credits=PRICE * 2)
    async with impatient.client(timeout=120) as client:
        holder_body = _PausedBody(_noisy_body("the holder"))
        holder = _paused_post(client, tenant, holder_body)
        held = await _until_held(client)
        # A prompt-only request is exempt: it is served while the budget is taken.
        plain = await client.post(PATH, json={"prompt": "no source"}, headers=tenant.auth)
        assert plain.status_code == 200, plain.text
        refused = await _post(client, tenant, _noisy_body("refused"))
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "busy"
        assert "busy" in refused.json()["error"]
        assert refused.headers["Retry-After"] == "2"
        assert await _in_use(client) == held  # the refused request holds nothing
        assert await impatient.balance(tenant) == PRICE  # only the plain request paid
        holder_body.resume.set()
        assert (await holder).status_code == 200
        await _until_free(client)
        assert await impatient.balance(tenant) == 0


async def test_a_client_gone_mid_body_returns_its_share(impatient: Stack) -> None:
    tenant = await impatient.new_tenant(credits=PRICE)
    async with impatient.client(timeout=120) as client:
        holder = _paused_post(client, tenant, _PausedBody(_noisy_body("abandoned")))
        await _until_held(client)
        holder.cancel()  # the connection closes with half a body sent
        with pytest.raises(asyncio.CancelledError):
            await holder
        await _until_free(client)
        # The whole budget is usable again.
        after = await _post(client, tenant, _noisy_body("after"))
        assert after.status_code == 200, after.text
        assert await _in_use(client) == 0
    assert await impatient.balance(tenant) == 0


async def test_an_openai_edit_upload_takes_its_share_too(impatient: Stack) -> None:
    tenant = await impatient.new_tenant(credits=PRICE * 2)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (220, 220), os.urandom(220 * 220 * 3)).save(buffer, "PNG")
    upload = buffer.getvalue()
    assert 100_000 < len(upload) < MAX_BODY  # with the holder, over the budget
    async with impatient.client(timeout=120) as client:
        holder_body = _PausedBody(_noisy_body("the holder"))
        holder = _paused_post(client, tenant, holder_body)
        held = await _until_held(client)
        refused = await client.post(
            "/v1/images/edits",
            data={"prompt": "an edit", "model": "google/gemini-2.5-flash-image"},
            files={"image": ("source.png", upload, "image/png")},
            headers=tenant.auth,
        )
        assert refused.status_code == 503, refused.text
        assert "busy" in refused.json()["error"]["message"]
        assert await _in_use(client) == held  # the refused upload holds nothing
        holder_body.resume.set()
        assert (await holder).status_code == 200
        await _until_free(client)
    assert await impatient.balance(tenant) == PRICE  # only the holder paid


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    """A body with no Content-Length: httpx sends it chunked."""
    for start in range(0, len(body), 16 * 1024):
        yield body[start : start + 16 * 1024]


async def test_a_chunked_body_reserves_nothing_and_must_be_small(impatient: Stack) -> None:
    tenant = await impatient.new_tenant(credits=PRICE * 2)
    headers = tenant.auth | {"Content-Type": "application/json"}
    async with impatient.client(timeout=120) as client:
        holder_body = _PausedBody(_noisy_body("the holder"))
        holder = _paused_post(client, tenant, holder_body)
        held = await _until_held(client)
        # A chunked prompt is served while the budget is taken: it holds no share.
        prompt = await client.post(
            PATH, content=_chunked(b'{"prompt": "a chunked prompt"}'), headers=headers
        )
        assert prompt.status_code == 200, prompt.text
        # A big chunked body must declare its size instead of holding a full-size share.
        big = await client.post(
            PATH, content=_chunked(_noisy_body("big and chunked")), headers=headers
        )
        assert big.status_code == 411, big.text
        assert big.json()["code"] == "length_required"
        assert "Content-Length" in big.json()["error"]
        assert await _in_use(client) == held
        holder_body.resume.set()
        assert (await holder).status_code == 200
        await _until_free(client)
    assert await impatient.balance(tenant) == 0  # the prompt and the holder paid


async def test_the_source_total_is_what_the_body_limit_admits(patient: Stack) -> None:
    """Unset, IMAGEGATE_MAX_SOURCE_BYTES_TOTAL is what the body limit carries once
    base64-encoded (here ~144 KiB): two references that fit in the body each but not
    together are a 400 on both routes, and nothing is charged."""
    tenant = await patient.new_tenant(credits=PRICE)
    total = patient.settings.source_bytes_total
    images = []
    for _ in range(2):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (170, 170), os.urandom(170 * 170 * 3)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    assert max(map(len, images)) < total < sum(map(len, images))
    urls = ["data:image/png;base64," + base64.b64encode(image).decode() for image in images]
    async with patient.client() as client:
        native = await client.post(
            PATH, json={"prompt": "two", "sourceImages": urls}, headers=tenant.auth
        )
        edit = await client.post(
            "/v1/images/edits",
            data={"prompt": "two", "model": "google/gemini-2.5-flash-image"},
            files=[("image[]", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)],
            headers=tenant.auth,
        )
        one = await client.post(
            PATH, json={"prompt": "one", "sourceImages": urls[:1]}, headers=tenant.auth
        )
    assert native.status_code == 400, native.text
    assert native.json()["field"] == "sourceImages"
    assert f"at most {total} bytes" in native.json()["error"]
    assert edit.status_code == 400, edit.text
    assert edit.json()["error"]["param"] == "image"
    assert f"at most {total} bytes" in edit.json()["error"]["message"]
    assert one.status_code == 200, one.text
    assert await patient.balance(tenant) == 0
