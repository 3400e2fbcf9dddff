"""The BFL emulator over real HTTP: submit, poll, signed samples, limits and faults."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.emulators.bfl import create_bfl_emulator
from app.emulators.bfl_wire import ENDPOINTS, KONTEXT_SIZES, output_size
from app.emulators.faults import FaultPlan
from tests.support.images import BLUE, GREEN, RED, band_colours, solid_png
from tests.support.servers import serve_in_thread

KEY = {"x-key": "test-key"}
MAX = "/v1/flux-kontext-max"
PRO = "/v1/flux-kontext-pro"
IDLE = dict.fromkeys(ENDPOINTS, 0)  # every endpoint, no task active


class Clock:
    """Wall-clock time that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def emulator(clock: Clock) -> FastAPI:
    return create_bfl_emulator(clock=clock)


@pytest.fixture
def plan(emulator: FastAPI, clock: Clock) -> Iterator[FaultPlan]:
    faults: FaultPlan = emulator.state.faults
    faults.reset()
    emulator.state.tasks.reset()
    clock.offset = 0.0
    yield faults
    faults.reset()
    emulator.state.tasks.reset()
    clock.offset = 0.0


@pytest.fixture
async def http(base_url: str, plan: FaultPlan) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


async def submit(http: httpx.AsyncClient, path: str = MAX, **body: Any) -> dict[str, Any]:
    response = await http.post(path, headers=KEY, json={"prompt": "a red fox", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def poll_until_done(http: httpx.AsyncClient, polling_url: str) -> dict[str, Any]:
    for _ in range(50):
        body: dict[str, Any] = (await http.get(polling_url, headers=KEY)).json()
        if body["status"] != "Pending":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("task never finished")


def png_bytes(colour: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


async def test_submit_poll_ready_and_download(http: httpx.AsyncClient, base_url: str) -> None:
    task = await submit(http, aspect_ratio="16:9", seed=7)
    assert set(task) == {"id", "polling_url", "cost"}
    assert task["polling_url"] == f"{base_url}/v1/get_result?id={task['id']}"
    assert task["cost"] == 8.0

    statuses = []
    for _ in range(3):
        body = (await http.get(task["polling_url"], headers=KEY)).json()
        statuses.append(body["status"])
    assert statuses == ["Pending", "Pending", "Ready"]
    assert body["id"] == task["id"]
    assert body["result"]["prompt"] == "a red fox"
    assert body["result"]["seed"] == 7
    sample = body["result"]["sample"]
    assert sample.startswith(f"{base_url}/samples/{task['id']}.png?se=")

    download = await http.get(sample)  # no key: the delivery host does not want one
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(download.content))
    assert (image.format, image.size) == ("PNG", (1392, 752))


async def _render(http: httpx.AsyncClient, **body: Any) -> tuple[bytes, int]:
    """The sample's bytes and the seed the task reports."""
    task = await submit(http, PRO, aspect_ratio="1:1", **body)
    done = await poll_until_done(http, task["polling_url"])
    return (await http.get(done["result"]["sample"])).content, done["result"]["seed"]


async def test_a_seed_pins_the_output_and_without_one_each_task_draws_its_own(
    http: httpx.AsyncClient,
) -> None:
    async def render(**body: Any) -> bytes:
        return (await _render(http, **body))[0]

    plain, drawn = await _render(http)
    # Like real BFL: a seed per task when none is given, reported in the result...
    assert await render() != plain
    # ...and that seed reproduces the picture; an explicit seed is deterministic.
    assert await render(seed=drawn) == plain
    assert await render(seed=1) == await render(seed=1)
    assert await render(seed=1) != await render(seed=2)
    red = await render(input_image=base64.b64encode(png_bytes("red")).decode(), seed=5)
    green = await render(input_image=base64.b64encode(png_bytes("green")).decode(), seed=5)
    assert len({plain, red, green}) == 3


async def test_every_input_image_shows_in_order(http: httpx.AsyncClient) -> None:
    def encoded(colour: tuple[int, int, int]) -> str:
        return base64.b64encode(solid_png(colour)).decode()

    async def render(*colours: tuple[int, int, int]) -> bytes:
        names = ["input_image", "input_image_2", "input_image_3"]
        images = {name: encoded(colour) for name, colour in zip(names, colours, strict=False)}
        return (await _render(http, seed=9, **images))[0]

    three, two, one = (
        await render(RED, GREEN, BLUE),
        await render(RED, GREEN),
        await render(RED),
    )
    assert len({three, two, one}) == 3  # a dropped reference is another picture
    assert band_colours(Image.open(io.BytesIO(three)), 3) == [RED, GREEN, BLUE]
    assert band_colours(Image.open(io.BytesIO(two)), 2) == [RED, GREEN]
    assert band_colours(Image.open(io.BytesIO(await render(GREEN, RED))), 2) == [GREEN, RED]
    assert band_colours(Image.open(io.BytesIO(one)), 2) == [RED, RED]


async def test_without_a_ratio_the_input_image_shape_is_kept(http: httpx.AsyncClient) -> None:
    wide = base64.b64encode(png_bytes("blue", (160, 90))).decode()
    done = await poll_until_done(http, (await submit(http, input_image=wide))["polling_url"])
    sample = await http.get(done["result"]["sample"])
    assert Image.open(io.BytesIO(sample.content)).size == output_size("16:9")


async def test_jpeg_output(http: httpx.AsyncClient) -> None:
    task = await submit(http, output_format="jpeg")
    done = await poll_until_done(http, task["polling_url"])
    assert ".jpeg?" in done["result"]["sample"]
    download = await http.get(done["result"]["sample"])
    assert download.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(download.content)).format == "JPEG"


def test_sizes_are_about_one_megapixel_multiples_of_16_and_nearest_the_ratio() -> None:
    assert output_size("1:1") == (1024, 1024)
    assert output_size("16:9") == (1392, 752)
    assert output_size("9:16") == (752, 1392)
    assert output_size("4:3") == (1184, 880)
    assert output_size("21:9") == (1568, 672)
    assert output_size("9:21") == (672, 1568)
    for width, height in KONTEXT_SIZES:
        assert width % 16 == 0 and height % 16 == 0
        assert 0.95e6 < width * height < 1.1e6


async def test_works_mounted_under_a_prefix() -> None:
    parent = FastAPI()
    parent.mount("/emulators/bfl", create_bfl_emulator())
    with serve_in_thread(parent) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"{url}/emulators/bfl{PRO}", headers=KEY, json={"prompt": "x"}
            )
            polling_url = response.json()["polling_url"]
            assert polling_url.startswith(f"{url}/emulators/bfl/v1/get_result?id=")
            done = await poll_until_done(http, polling_url)
            assert done["result"]["sample"].startswith(f"{url}/emulators/bfl/samples/")
            assert (await http.get(done["result"]["sample"])).status_code == 200


async def test_urls_follow_the_request_host_through_asgi_transport() -> None:
    transport = httpx.ASGITransport(app=create_bfl_emulator())
    async with httpx.AsyncClient(transport=transport, base_url="http://bfl.emulator") as http:
        task = await submit(http, PRO)
        assert task["polling_url"].startswith("http://bfl.emulator/v1/get_result?id=")
        done = await poll_until_done(http, task["polling_url"])
        assert (await http.get(done["result"]["sample"])).status_code == 200


async def test_tampered_or_expired_samples_are_403(http: httpx.AsyncClient, clock: Clock) -> None:
    done = await poll_until_done(http, (await submit(http))["polling_url"])
    sample = httpx.URL(done["result"]["sample"])
    se, sig = sample.params["se"], sample.params["sig"]

    bad_sig = sample.copy_set_param("sig", ("0" if sig[0] != "0" else "1") + sig[1:])
    later = sample.copy_set_param("se", str(int(se) + 3600))
    other = sample.copy_with(path=sample.path.replace(".png", ".jpeg"))
    unsigned = sample.copy_with(query=None)
    for url in (bad_sig, later, other, unsigned):
        response = await http.get(url)
        assert response.status_code == 403, url
        assert b"AuthenticationFailed" in response.content

    clock.offset = 599
    assert (await http.get(sample)).status_code == 200
    clock.offset = 601
    assert (await http.get(sample)).status_code == 403


@pytest.mark.parametrize("ratio", ["9:21", "21:9", "1:1", "5:4", "18:9"])
async def test_ratios_between_21_9_and_9_21_are_accepted(
    http: httpx.AsyncClient, ratio: str
) -> None:
    await submit(http, PRO, aspect_ratio=ratio)


@pytest.mark.parametrize("ratio", ["3:1", "1:3", "22:9", "9:22", "16x9", "0:1", "1:0", ""])
async def test_other_ratios_are_422(http: httpx.AsyncClient, ratio: str) -> None:
    response = await http.post(PRO, headers=KEY, json={"prompt": "x", "aspect_ratio": ratio})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "aspect_ratio"]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("data:image/png;base64," + base64.b64encode(png_bytes("red")).decode(), "data:"),
        ("https://example.com/cat.png", "URL"),
        ("not base64!", "base64"),
        (base64.b64encode(b"plain text, not an image").decode(), "decodable"),
    ],
)
async def test_input_image_must_be_raw_base64_of_an_image(
    http: httpx.AsyncClient, image: str, message: str
) -> None:
    response = await http.post(PRO, headers=KEY, json={"prompt": "x", "input_image": image})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "input_image"]
    assert message in error["msg"]
    assert "input" not in error  # image data is never echoed back


@pytest.mark.parametrize("body", [{}, {"prompt": ""}, {"prompt": "x", "output_format": "gif"}])
async def test_invalid_bodies_are_422(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert (await http.post(PRO, headers=KEY, json=body)).status_code == 422


@pytest.mark.parametrize("headers", [{}, {"x-key": ""}])
async def test_missing_key_is_403(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await http.post(MAX, headers=headers, json={"prompt": "x"})
    assert response.status_code == 403
    assert isinstance(response.json()["detail"], str)
    task = await submit(http)
    assert (await http.get(task["polling_url"], headers=headers)).status_code == 403


async def test_unknown_task_is_not_found(http: httpx.AsyncClient) -> None:
    body = (await http.get("/v1/get_result", params={"id": "nope"}, headers=KEY)).json()
    assert body["id"] == "nope"
    assert body["status"] == "Task not found"


async def test_seventh_concurrent_kontext_max_task_is_429(
    http: httpx.AsyncClient, emulator: FastAPI
) -> None:
    tasks = await asyncio.gather(*(submit(http) for _ in range(6)))
    response = await http.post(MAX, headers=KEY, json={"prompt": "x"})
    assert response.status_code == 429
    assert "6 active tasks" in response.json()["detail"]
    await submit(http, PRO)  # each endpoint has its own limit

    await poll_until_done(http, tasks[0]["polling_url"])  # a terminal task frees its slot
    await submit(http)
    assert (await http.post(MAX, headers=KEY, json={"prompt": "x"})).status_code == 429

    state = (await http.get("/_emulator/bfl")).json()
    assert state == {
        "max_active": {**IDLE, "flux-kontext-max": 6, "flux-kontext-pro": 1},
        "max_active_total": 7,  # both endpoints at once, as the account sees it
        "active": {**IDLE, "flux-kontext-max": 6, "flux-kontext-pro": 1},
    }
    assert emulator.state.tasks.max_active["flux-kontext-max"] == 6
    assert (await http.delete("/_emulator/bfl")).status_code == 204
    reset = (await http.get("/_emulator/bfl")).json()
    assert (reset["max_active"]["flux-kontext-max"], reset["max_active_total"]) == (0, 0)


async def test_unpolled_tasks_finish_by_themselves(http: httpx.AsyncClient, clock: Clock) -> None:
    for _ in range(6):
        await submit(http)
    assert (await http.post(MAX, headers=KEY, json={"prompt": "x"})).status_code == 429
    clock.offset = 31
    await submit(http)


async def test_active_limits_can_be_overridden() -> None:
    app = create_bfl_emulator(max_active_tasks={"flux-kontext-pro": 2})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bfl.emulator") as http:
        await submit(http, PRO)
        await submit(http, PRO)
        assert (await http.post(PRO, headers=KEY, json={"prompt": "x"})).status_code == 429
    assert app.state.tasks.max_active == {**IDLE, "flux-kontext-pro": 2}
    with pytest.raises(ValueError, match="unknown"):
        create_bfl_emulator(max_active_tasks={"flux-dev": 1})


async def test_error_faults_answer_the_submit(http: httpx.AsyncClient, plan: FaultPlan) -> None:
    plan.add(
        {"kind": "error", "status": 429, "retry_after": 2.5},
        {"kind": "error", "status": 402},
        {"kind": "error", "status": 503, "message": "down for maintenance"},
    )
    limited = await http.post(MAX, headers=KEY, json={"prompt": "x"})
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert isinstance(limited.json()["detail"], str)
    assert (await http.post(MAX, headers=KEY, json={"prompt": "x"})).status_code == 402
    down = await http.post(MAX, headers=KEY, json={"prompt": "x"})
    assert (down.status_code, down.json()) == (503, {"detail": "down for maintenance"})
    assert plan.calls == 3
    assert (await http.get("/_emulator/bfl")).json()["active"]["flux-kontext-max"] == 0


async def test_delay_fault_keeps_the_task_pending(http: httpx.AsyncClient, plan: FaultPlan) -> None:
    plan.add({"kind": "delay", "seconds": 0.6})
    task = await submit(http)
    for _ in range(4):  # more polls than the usual two
        assert (await http.get(task["polling_url"], headers=KEY)).json()["status"] == "Pending"
    await asyncio.sleep(0.7)
    assert (await http.get(task["polling_url"], headers=KEY)).json()["status"] == "Ready"


@pytest.mark.parametrize(
    ("fault", "status", "details"),
    [
        ({"kind": "blocked", "reason": "Derivative_Works"}, "Request Moderated", "Derivative"),
        ({"kind": "refused"}, "Content Moderated", "IMAGE_SAFETY"),
        ({"kind": "failed", "message": "GPU fell over"}, "Error", "GPU fell over"),
        ({"kind": "lost"}, "Task not found", None),
    ],
)
async def test_terminal_faults(
    http: httpx.AsyncClient,
    plan: FaultPlan,
    fault: dict[str, Any],
    status: str,
    details: str | None,
) -> None:
    plan.add(fault)
    task = await submit(http)
    body = await poll_until_done(http, task["polling_url"])
    assert body["status"] == status
    assert body["result"] is None
    if details is not None:
        assert details in str(body["details"])
    # Terminal: the slot is free and the outcome stays put.
    assert (await http.get("/_emulator/bfl")).json()["active"]["flux-kontext-max"] == 0
    assert (await http.get(task["polling_url"], headers=KEY)).json()["status"] == status


async def test_foreign_sample_fault(http: httpx.AsyncClient, plan: FaultPlan) -> None:
    plan.add({"kind": "foreign_sample", "url": "https://evil.example/cat.png"})
    task = await submit(http)
    body = await poll_until_done(http, task["polling_url"])
    assert body["status"] == "Ready"
    assert body["result"]["sample"] == "https://evil.example/cat.png"


async def test_new_fault_kinds_over_http_control(http: httpx.AsyncClient, plan: FaultPlan) -> None:
    ok = await http.post(
        "/_emulator/faults",
        json={
            "faults": [
                {"kind": "lost"},
                {"kind": "failed"},
                {"kind": "foreign_sample", "url": "http://h/x"},
            ]
        },
    )
    assert ok.status_code == 200
    assert [f["kind"] for f in ok.json()["pending"]] == ["lost", "failed", "foreign_sample"]
    for bad in ({"kind": "foreign_sample"}, {"kind": "foreign_sample", "url": "no scheme"}):
        response = await http.post("/_emulator/faults", json={"faults": [bad]})
        assert response.status_code == 422


async def test_input_image_that_fails_to_decode_ends_in_error(http: httpx.AsyncClient) -> None:
    truncated = base64.b64encode(png_bytes("red")[:60]).decode()  # a valid header only
    task = await submit(http, input_image=truncated)
    body = await poll_until_done(http, task["polling_url"])
    assert body["status"] == "Error"
    assert "input_image" in body["details"]["error"]
