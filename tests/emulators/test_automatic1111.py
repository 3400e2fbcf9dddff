"""The AUTOMATIC1111 emulator over real HTTP: txt2img, img2img, masks, the web UI's error
bodies, basic auth and faults."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.emulators.automatic1111 import create_automatic1111_emulator
from app.emulators.faults import FaultPlan
from tests.support.images import BLUE, GREEN, RED, half_mask, nearest, region_mean, solid_png

TXT = "/sdapi/v1/txt2img"
IMG = "/sdapi/v1/img2img"
GPU_PIXELS = 2_000_000


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_automatic1111_emulator(gpu_pixels=GPU_PIXELS)


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_of(answer: httpx.Response, index: int = 0) -> Image.Image:
    assert answer.status_code == 200, answer.text
    return Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][index])))


def test_txt2img_answers_a_png_of_the_size_and_the_web_uis_fields(
    http: httpx.Client, plan: FaultPlan
) -> None:
    body = {"prompt": "a lighthouse", "negative_prompt": "fog", "width": 768, "height": 512}
    body |= {"steps": 20, "sampler_name": "Euler a", "cfg_scale": 6.5, "seed": 42}
    answer = http.post(TXT, json=body)
    image = image_of(answer)
    assert (image.format, image.size) == ("PNG", (768, 512))
    payload = answer.json()
    assert set(payload) == {"images", "parameters", "info"}
    assert payload["parameters"]["prompt"] == "a lighthouse"
    info = json.loads(payload["info"])  # a JSON string, as the web UI sends it
    assert info["seed"] == 42 and info["all_seeds"] == [42]
    assert (info["width"], info["height"], info["steps"]) == (768, 512, 20)
    assert info["sampler_name"] == "Euler a"
    assert info["negative_prompt"] == "fog"
    assert plan.calls == 1


def test_sides_are_floored_to_the_latent_unit(http: httpx.Client, plan: FaultPlan) -> None:
    image = image_of(http.post(TXT, json={"prompt": "x", "width": 1001, "height": 515}))
    assert image.size == (1000, 512)


def test_a_pinned_seed_repeats_and_every_setting_changes_the_picture(
    http: httpx.Client, plan: FaultPlan
) -> None:
    base = {"prompt": "a red fox", "width": 256, "height": 256, "seed": 7}

    def png(**changes: Any) -> bytes:
        answer = http.post(TXT, json=base | changes)
        assert answer.status_code == 200, answer.text
        return base64.b64decode(answer.json()["images"][0])

    first = png()
    assert png() == first
    variants = [
        png(seed=8),
        png(negative_prompt="snow"),
        png(steps=30),
        png(cfg_scale=9),
        png(sampler_name="DDIM"),
        png(prompt="a grey fox"),
    ]
    assert len({first, *variants}) == 1 + len(variants)
    unpinned = {png(seed=-1) for _ in range(3)}
    assert len(unpinned) == 3  # a new seed per call


def test_a_batch_numbers_its_seeds(http: httpx.Client, plan: FaultPlan) -> None:
    answer = http.post(
        TXT, json={"prompt": "x", "width": 128, "height": 128, "seed": 5} | {"batch_size": 2}
    )
    assert len(answer.json()["images"]) == 2
    assert json.loads(answer.json()["info"])["all_seeds"] == [5, 6]


def test_img2img_draws_from_the_init_image_and_each_changes_the_output(
    http: httpx.Client, plan: FaultPlan
) -> None:
    body = {"prompt": "repaint", "width": 320, "height": 240, "seed": 1}
    red = http.post(IMG, json=body | {"init_images": [b64(solid_png(RED))]})
    blue = http.post(IMG, json=body | {"init_images": [b64(solid_png(BLUE))]})
    as_data_url = http.post(
        IMG, json=body | {"init_images": ["data:image/png;base64," + b64(solid_png(RED))]}
    )
    middle = (40, 40, 280, 180)
    assert nearest(region_mean(image_of(red), middle), (RED, GREEN, BLUE)) == RED
    assert nearest(region_mean(image_of(blue), middle), (RED, GREEN, BLUE)) == BLUE
    assert red.json()["images"] == as_data_url.json()["images"]
    # The web UI leaves the images out of the echo unless include_init_images.
    assert red.json()["parameters"]["init_images"] is None
    stronger = http.post(
        IMG, json=body | {"init_images": [b64(solid_png(RED))], "denoising_strength": 0.3}
    )
    assert stronger.json()["images"] != red.json()["images"]


def test_a_mask_with_invert_keeps_the_opaque_part(http: httpx.Client, plan: FaultPlan) -> None:
    """An OpenAI mask (opaque = keep, on the left half) with inpainting_mask_invert=1: the
    web UI paints where the alpha is transparent, so the left half stays the source."""
    body = {"prompt": "edit", "width": 320, "height": 240, "seed": 3}
    body |= {"init_images": [b64(solid_png(GREEN))], "mask": b64(half_mask())}
    kept = image_of(http.post(IMG, json=body | {"inpainting_mask_invert": 1}))
    assert region_mean(kept, (10, 10, 150, 200)) == pytest.approx(list(GREEN), abs=1)
    assert region_mean(kept, (170, 10, 310, 200)) != pytest.approx(list(GREEN), abs=1)
    # Without invert, opaque is where to paint: the right half stays.
    swapped = image_of(http.post(IMG, json=body))
    assert region_mean(swapped, (170, 10, 310, 200)) == pytest.approx(list(GREEN), abs=1)


def test_validation_errors_are_fastapis_422_without_the_input(
    http: httpx.Client, plan: FaultPlan
) -> None:
    answer = http.post(TXT, json={"prompt": "x", "width": "wide", "steps": 0})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert [item["loc"] for item in detail] == [["body", "width"]]
    assert set(detail[0]) == {"loc", "msg", "type"}
    small = http.post(TXT, json={"prompt": "x", "width": 32, "steps": 0})
    assert small.status_code == 422
    assert [item["loc"] for item in small.json()["detail"]] == [
        ["body", "width"],
        ["body", "steps"],
    ]
    broken = http.post(TXT, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422


def test_unknown_sampler_is_the_web_uis_404(http: httpx.Client, plan: FaultPlan) -> None:
    answer = http.post(TXT, json={"prompt": "x", "sampler_name": "Nope"})
    assert answer.status_code == 404
    assert answer.json() == {
        "error": "HTTPException",
        "detail": "Sampler not found",
        "body": "",
        "errors": "404: Sampler not found",
    }
    # An old combined name splits into sampler and scheduler.
    combined = http.post(
        TXT, json={"prompt": "x", "width": 64, "height": 64, "sampler_name": "DPM++ 2M Karras"}
    )
    info = json.loads(combined.json()["info"])
    assert info["sampler_name"] == "DPM++ 2M"
    assert info["extra_generation_params"]["Schedule type"] == "Karras"


def test_img2img_refusals(http: httpx.Client, plan: FaultPlan) -> None:
    missing = http.post(IMG, json={"prompt": "x"})
    assert missing.status_code == 404 and missing.json()["detail"] == "Init image not found"
    broken = http.post(IMG, json={"prompt": "x", "init_images": [b64(b"not an image")]})
    assert broken.status_code == 500
    assert broken.json()["error"] == "HTTPException"
    assert broken.json()["detail"] == "Invalid encoded image"


def test_too_large_for_the_gpu_is_out_of_memory(http: httpx.Client, plan: FaultPlan) -> None:
    answer = http.post(TXT, json={"prompt": "x", "width": 2048, "height": 1024})
    assert answer.status_code == 500
    assert answer.json()["error"] == "OutOfMemoryError"
    assert "CUDA out of memory" in answer.json()["errors"]


def test_faults_render_as_the_web_ui_and_its_proxy_would(
    http: httpx.Client, base_url: str, plan: FaultPlan
) -> None:
    faults = [
        {"kind": "error", "status": 500},
        {"kind": "error", "status": 503, "retry_after": 2},
        {"kind": "failed"},
        {"kind": "error", "status": 429, "message": "queue full"},
    ]
    assert http.post("/_emulator/faults", json={"faults": faults}).status_code == 200
    body = {"prompt": "x", "width": 64, "height": 64}
    oom = http.post(TXT, json=body)
    assert (oom.status_code, oom.json()["error"]) == (500, "OutOfMemoryError")
    proxy = http.post(TXT, json=body)
    assert proxy.status_code == 503 and "text/html" in proxy.headers["content-type"]
    assert proxy.headers["retry-after"] == "2"
    failed = http.post(TXT, json=body)
    assert (failed.status_code, failed.json()["error"]) == (500, "RuntimeError")
    limited = http.post(TXT, json=body)
    assert limited.status_code == 429 and limited.json()["detail"] == "queue full"
    assert http.post(TXT, json=body).status_code == 200
    assert http.get("/_emulator/state").json()["calls"] == 5


def test_listings_and_unknown_paths(http: httpx.Client, plan: FaultPlan) -> None:
    samplers = http.get("/sdapi/v1/samplers").json()
    assert {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {}} in samplers
    models = http.get("/sdapi/v1/sd-models").json()
    assert models[0]["model_name"] == "sd_xl_base_1.0" and "title" in models[0]
    missing = http.post("/sdapi/v1/nothing", json={})
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})


def test_recorded_calls_name_what_was_asked(http: httpx.Client, plan: FaultPlan) -> None:
    http.post(IMG, json={"prompt": "rec", "init_images": [b64(solid_png(RED))], "width": 64})
    last = http.get("/_emulator/automatic1111/calls").json()[-1]
    assert last["endpoint"] == "img2img" and last["init_images"] == 1
    assert last["width"] == 64 and last["denoising_strength"] == 0.75


async def test_basic_auth_when_configured() -> None:
    app = create_automatic1111_emulator(api_auth="alice:s3cret,bob:pw")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://a1111") as client:
        body = {"prompt": "x", "width": 64, "height": 64}
        anonymous = await client.post(TXT, json=body)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Basic"
        assert anonymous.json()["error"] == "HTTPException"
        wrong = await client.post(TXT, json=body, auth=("alice", "nope"))
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "Incorrect username or password"
        assert (await client.get("/sdapi/v1/samplers")).status_code == 401
        assert (await client.post(TXT, json=body, auth=("bob", "pw"))).status_code == 200
        ok = await client.post(TXT, json=body, auth=("alice", "s3cret"))
        assert ok.status_code == 200
    assert app.state.faults.calls == 2  # refused calls draw no fault
    assert [call.user for call in app.state.calls] == ["bob", "alice"]
