"""The AUTOMATIC1111 web UI's API wire: request models, error bodies, samplers, the render.

Request fields are those of `StableDiffusionTxt2ImgProcessingAPI` and
`StableDiffusionImg2ImgProcessingAPI` (modules/api/models.py): every field optional with
the web UI's default, unknown fields ignored (pydantic's default there), values coerced
as pydantic does ("512" is 512). Error bodies are the web UI's: every exception, its
HTTPExceptions included, as `{"error": <type name>, "detail", "body", "errors": str(exc)}`
with the exception's status (500 when it has none), and validation failures as FastAPI's
422 `{"detail": [{"loc", "msg", "type"}]}` (pydantic 1 shape: no `input` echoed back).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, ValidationError

from app.emulators.images import InvalidSourceImage, synthesize_png

MAX_REQUEST_BYTES = 64 * 1024 * 1024
# The latent space is 8 pixels a unit: the picture's sides are the request's, floored.
LATENT_UNIT = 8
# The web UI sets no bound; a GPU runs out of memory. The emulated card holds this much.
DEFAULT_GPU_PIXELS = 20_000_000
MIN_SIDE = 64

SAMPLERS: dict[str, list[str]] = {
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ SDE": ["k_dpmpp_sde"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ 3M SDE": ["k_dpmpp_3m_sde"],
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 a": ["k_dpm_2_a"],
    "DDIM": ["ddim"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
    "LCM": ["k_lcm"],
}
# Scheduler labels and names; "DPM++ 2M Karras" is the sampler "DPM++ 2M" with "Karras".
SCHEDULERS = {
    "automatic": "Automatic",
    "uniform": "Uniform",
    "karras": "Karras",
    "exponential": "Exponential",
    "polyexponential": "Polyexponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "normal": "Normal",
    "beta": "Beta",
}
MODELS: tuple[dict[str, Any], ...] = (
    {
        "title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
        "model_name": "sd_xl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "filename": "/models/Stable-diffusion/sd_xl_base_1.0.safetensors",
        "config": None,
    },
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    },
)


class A1111Error(Exception):
    """An exception the web UI's middleware renders (`handle_exception`)."""

    def __init__(
        self,
        status: int,
        error: str,
        errors: str,
        *,
        detail: Any = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(errors)
        self.status = status
        self.error = error
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, "body": "", "errors": self.errors}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def http_exception(status: int, detail: str, headers: dict[str, str] | None = None) -> A1111Error:
    """fastapi's HTTPException as the web UI answers it (str(exc) is "status: detail")."""
    return A1111Error(
        status, "HTTPException", f"{status}: {detail}", detail=detail, headers=headers
    )


def out_of_memory(message: str | None = None) -> A1111Error:
    return A1111Error(
        500,
        "OutOfMemoryError",
        message
        or "CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 23.65 GiB total capacity; "
        "20.10 GiB already allocated; 1.21 GiB free)",
    )


def validation_error(errors: list[dict[str, Any]]) -> JSONResponse:
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


class InvalidRequest(Exception):
    """A 422, with FastAPI's error list."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("validation failed")
        self.errors = errors


class Txt2ImgBody(BaseModel):
    """StableDiffusionTxt2ImgProcessingAPI, the fields the emulator reads."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    sampler_name: str | None = None
    sampler_index: str = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = False


class Img2ImgBody(Txt2ImgBody):
    """StableDiffusionImg2ImgProcessingAPI: txt2img's fields and the init images."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    mask: str | None = None
    mask_blur: int | None = None
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


@dataclass(frozen=True)
class Call:
    """One validated call, ready to render."""

    endpoint: str  # txt2img | img2img
    body: Txt2ImgBody
    sampler: str
    scheduler: str
    width: int
    height: int
    seed: int
    model: dict[str, Any]
    init_images: tuple[bytes, ...] = ()
    mask: bytes | None = None


def parse_call(raw: bytes, endpoint: str, gpu_pixels: int) -> Call:
    """The call in `raw` (a JSON body), or InvalidRequest (422) / A1111Error."""
    model_type = Img2ImgBody if endpoint == "img2img" else Txt2ImgBody
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(
            [{"loc": ("body", 0), "msg": f"Invalid JSON: {exc}", "type": "json_invalid"}]
        ) from None
    try:
        body = model_type.model_validate(data)
    except ValidationError as exc:
        # FastAPI prefixes the body's fields with "body".
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise InvalidRequest(errors) from None
    _check_sides(body)
    sampler, scheduler = sampler_and_scheduler(
        body.sampler_name or body.sampler_index, body.scheduler
    )
    if sampler not in SAMPLERS:
        raise http_exception(404, "Sampler not found")
    width = body.width // LATENT_UNIT * LATENT_UNIT
    height = body.height // LATENT_UNIT * LATENT_UNIT
    if width * height * body.batch_size > gpu_pixels:
        raise out_of_memory()
    seed = body.seed if body.seed >= 0 else random.randrange(2**32)
    init: tuple[bytes, ...] = ()
    mask = None
    if isinstance(body, Img2ImgBody):
        if body.init_images is None:
            raise http_exception(404, "Init image not found")
        init = tuple(decode_image(value) for value in body.init_images)
        mask = decode_image(body.mask) if body.mask else None
    checkpoint = (body.override_settings or {}).get("sd_model_checkpoint")
    return Call(
        endpoint, body, sampler, scheduler, width, height, seed, _model(checkpoint), init, mask
    )


def _check_sides(body: Txt2ImgBody) -> None:
    errors = []
    for name in ("width", "height"):
        value = getattr(body, name)
        if value < MIN_SIDE:
            errors.append(
                {
                    "loc": ("body", name),
                    "msg": f"ensure this value is greater than or equal to {MIN_SIDE}",
                    "type": "value_error.number.not_ge",
                }
            )
    for name in ("batch_size", "n_iter", "steps"):
        if getattr(body, name) < 1:
            errors.append(
                {
                    "loc": ("body", name),
                    "msg": "ensure this value is greater than or equal to 1",
                    "type": "value_error.number.not_ge",
                }
            )
    if errors:
        raise InvalidRequest(errors)


def sampler_and_scheduler(name: str, scheduler: str | None) -> tuple[str, str]:
    """The web UI's get_sampler_and_scheduler: an old combined name ("DPM++ 2M Karras")
    splits when no scheduler is given; sampler aliases resolve; an unknown scheduler is
    Automatic."""
    for sampler, aliases in SAMPLERS.items():
        if name in aliases:
            name = sampler
    if scheduler is None and name not in SAMPLERS:
        for label in SCHEDULERS.values():
            base = name.removesuffix(f" {label}")
            if base != name and base in SAMPLERS:
                return base, label
    chosen = SCHEDULERS.get((scheduler or "automatic").lower().replace(" ", "_"))
    if chosen is None:
        chosen = next((label for label in SCHEDULERS.values() if label == scheduler), "Automatic")
    return name, chosen


def decode_image(value: str) -> bytes:
    """decode_base64_to_image: a data URL or base64 (non-alphabet characters skipped, as
    Python's b64decode does); what does not open as an image is a 500 HTTPException."""
    if value.startswith(("http://", "https://")):
        raise http_exception(500, "Requests not allowed")
    if value.startswith("data:image/"):
        value = value.split(";")[1].split(",")[1] if ";" in value and "," in value else ""
    try:
        data = base64.b64decode(value)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (binascii.Error, ValueError, OSError, SyntaxError, Image.DecompressionBombError):
        raise http_exception(500, "Invalid encoded image") from None
    return data


def _model(checkpoint: object) -> dict[str, Any]:
    """The checkpoint `sd_model_checkpoint` names, or (as the web UI falls back) the first."""
    for model in MODELS:
        if checkpoint in (model["title"], model["model_name"], model["title"].split(" ")[0]):
            return model
    return MODELS[0]


def render(call: Call) -> list[str]:
    """The batch's images as base64 PNGs: deterministic in everything that shapes a
    picture (prompt, negative prompt, seed, sampler, steps, CFG, sizes, every init image,
    the mask), each image of a batch its own seed (seed + i), as the web UI numbers them.
    Raises InvalidSourceImage when an image the checks let through cannot be drawn from."""
    body = call.body
    keep = _keep_mask(call.mask, body) if call.mask is not None else None
    init = call.init_images
    images = []
    for index in range(body.batch_size * body.n_iter):
        variant = _variant(call, call.seed + index)
        # Image i of a batch starts from init image i (cycling), as the web UI's does.
        source = init[index % len(init)] if init else None
        png = synthesize_png(
            body.prompt, call.width, call.height, source, mask=keep, variant=variant
        )
        images.append(base64.b64encode(png).decode("ascii"))
    return images


def _variant(call: Call, seed: int) -> int:
    body = call.body
    strength = body.denoising_strength if call.endpoint == "img2img" else None
    text = "|".join(
        str(part)
        for part in (
            seed,
            body.negative_prompt,
            call.sampler,
            call.scheduler,
            body.steps,
            body.cfg_scale,
            strength,
            call.model["model_name"],
            *(hashlib.sha256(image).hexdigest() for image in call.init_images),
        )
    )
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _keep_mask(mask: bytes, body: Txt2ImgBody) -> bytes:
    """The web UI's mask as the renderer's (opaque = keep the first image).

    create_binary_mask: an RGBA mask with any transparency is its alpha channel, anything
    else its luminance; white is where to paint, and inpainting_mask_invert swaps that.
    """
    invert = isinstance(body, Img2ImgBody) and body.inpainting_mask_invert == 1
    try:
        with Image.open(io.BytesIO(mask)) as opened:
            if opened.mode == "RGBA" and opened.getextrema()[-1] != (255, 255):
                paint = opened.getchannel("A").point(lambda x: 255 if x > 128 else 0)
            else:
                paint = opened.convert("L")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidSourceImage(f"mask could not be decoded: {exc}") from exc
    if invert:
        paint = ImageOps.invert(paint)
    keep = Image.new("RGBA", paint.size, (0, 0, 0, 0))
    keep.putalpha(ImageOps.invert(paint))
    buffer = io.BytesIO()
    keep.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def info(call: Call) -> str:
    """`info`: the JSON string of the web UI's Processed.js()."""
    body = call.body
    count = body.batch_size * body.n_iter
    seeds = [call.seed + i for i in range(count)]
    strength = body.denoising_strength if call.endpoint == "img2img" else None
    infotext = (
        f"{body.prompt}\nNegative prompt: {body.negative_prompt}\nSteps: {body.steps}, "
        f"Sampler: {call.sampler}, Schedule type: {call.scheduler}, CFG scale: {body.cfg_scale}, "
        f"Seed: {call.seed}, Size: {call.width}x{call.height}, "
        f"Model hash: {call.model['hash']}, Model: {call.model['model_name']}"
    )
    return json.dumps(
        {
            "prompt": body.prompt,
            "all_prompts": [body.prompt] * count,
            "negative_prompt": body.negative_prompt,
            "all_negative_prompts": [body.negative_prompt] * count,
            "seed": call.seed,
            "all_seeds": seeds,
            "subseed": body.subseed,
            "all_subseeds": [body.subseed] * count,
            "subseed_strength": body.subseed_strength,
            "width": call.width,
            "height": call.height,
            "sampler_name": call.sampler,
            "cfg_scale": body.cfg_scale,
            "steps": body.steps,
            "batch_size": body.batch_size,
            "restore_faces": bool(body.restore_faces),
            "sd_model_name": call.model["model_name"],
            "sd_model_hash": call.model["hash"],
            "denoising_strength": strength,
            "extra_generation_params": {"Schedule type": call.scheduler},
            "index_of_first_image": 0,
            "infotexts": [infotext] * count,
            "styles": body.styles or [],
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": "v1.10.1",
        }
    )


def parameters(call: Call) -> dict[str, Any]:
    """`parameters`: the request echoed, without the images unless include_init_images."""
    echoed = call.body.model_dump()
    if isinstance(call.body, Img2ImgBody) and not call.body.include_init_images:
        echoed["init_images"] = None
        echoed["mask"] = None
    return echoed
