"""The OpenAI emulator's `POST /v1/responses`, with the `image_generation` tool.

Reads the request (string or message-list `input`, `input_image` data URLs, the tool and
`tool_choice`) and answers with a completed Response object (reasoning item,
image_generation_call, assistant message, usage) close enough to OpenAI's that the
official SDK deserialises every output item to its typed class.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from app.emulators.faults import BlockedFault, Fault, RefusedFault
from app.emulators.openai_wire import (
    INPUT_IMAGE_TOKENS,
    ImageOptions,
    OpenAIApiError,
    image_options,
    image_usage,
    invalid_json,
    invalid_request,
    large_json_response,
    missing_parameter,
    new_id,
    render,
    text_tokens,
)

INPUT_IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
# The tool's defaults, echoed back in `tools` the way OpenAI fills in what was omitted.
TOOL_DEFAULTS: dict[str, Any] = {
    "type": "image_generation",
    "background": "auto",
    "model": "gpt-image-1",
    "moderation": "auto",
    "output_compression": 100,
    "output_format": "png",
    "quality": "auto",
    "size": "auto",
}
REASONING_TOKENS = 128
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^,;]*)*),", re.ASCII)


@dataclass(frozen=True)
class ResponsesCall:
    """What the emulator acts on in one `POST /v1/responses` body."""

    model: str
    prompt: str
    images: tuple[bytes, ...]  # input_image parts in order; the first is the one edited
    tool: dict[str, Any] | None  # the image_generation tool as sent, None if it may not run
    tool_param: str  # where the tool sits in the request, e.g. "tools[0]", for error params
    tools: list[Any]
    tool_choice: Any


@dataclass(frozen=True)
class ImageCall:
    """The image_generation_call item: a base64 result, or a refusal with its reason."""

    options: ImageOptions
    result_b64: str | None = None
    refusal_reason: str | None = None


async def create_response(body: bytes, fault: Fault | None) -> Response:
    """The endpoint, after auth and error/delay faults; raises OpenAIApiError."""
    # JSON and base64 decoding of multi-megabyte input images stay off the event loop.
    call = await asyncio.to_thread(parse_responses_request, body)
    options = image_options(call.tool, prefix=f"{call.tool_param}.") if call.tool else None
    if isinstance(fault, BlockedFault):
        raise OpenAIApiError(
            400,
            "Your request was rejected by the safety system. "
            f"safety_violations=[{fault.reason.lower()}].",
            code="moderation_blocked",
        )
    image: ImageCall | None = None
    if call.tool is not None and options is not None:
        if isinstance(fault, RefusedFault):
            # The model answers, but the tool call fails: a 200 without an image.
            image = ImageCall(options, refusal_reason=fault.finish_reason)
        else:
            image_model = f"{call.model}/{call.tool.get('model') or TOOL_DEFAULTS['model']}"
            result = await render(
                image_model, call.prompt, options, 0, call.images, source_param="input"
            )
            image = ImageCall(options, result_b64=result)
    return await large_json_response(response_object(call, image))


# --- the request ---------------------------------------------------------------------


def parse_responses_request(body: bytes) -> ResponsesCall:
    """Validate a Responses body the way OpenAI does; decodes the input images."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_json() from exc
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", None)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise missing_parameter("model")
    if payload.get("stream"):
        raise invalid_request("The emulator does not stream responses.", "stream")

    texts: list[str] = []
    images: list[bytes] = []
    _collect_input(payload.get("input"), texts, images)
    prompt = "\n".join(t for t in texts if t.strip()).strip()
    if not prompt and not images:
        raise missing_parameter("input")

    tools = payload.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_request("Invalid type for 'tools': expected an array.", "tools")
    found = [
        (i, tool)
        for i, tool in enumerate(tools)
        if isinstance(tool, dict) and tool.get("type") == "image_generation"
    ]
    tool_choice = payload.get("tool_choice", "auto")
    if (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") == "image_generation"
        and not found
    ):
        raise invalid_request(
            "Tool choice 'image_generation' not found in 'tools' parameter.", "tool_choice"
        )
    index, tool = found[0] if found else (0, None)
    return ResponsesCall(
        model=model,
        prompt=prompt,
        images=tuple(images),
        # With the tool offered (and allowed) the emulator draws: it stands in for a model
        # that was asked to.
        tool=None if tool_choice == "none" else tool,
        tool_param=f"tools[{index}]",
        tools=tools,
        tool_choice=tool_choice,
    )


def _collect_input(value: Any, texts: list[str], images: list[bytes]) -> None:
    if isinstance(value, str):
        texts.append(value)
        return
    if not isinstance(value, list) or not value:
        raise missing_parameter("input")
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_request(f"Invalid type for '{where}': expected an object.", where)
        # Earlier turns' outputs (reasoning, image_generation_call, ...) are history only.
        if item.get("type", "message") != "message":
            continue
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise invalid_request(
                f"Invalid value: '{str(role)[:40]}'. Supported values are: 'assistant', "
                "'system', 'developer', and 'user'.",
                f"{where}.role",
                "invalid_value",
            )
        content = item.get("content")
        if isinstance(content, str):
            if role == "user":
                texts.append(content)
            continue
        if not isinstance(content, list):
            raise invalid_request(
                f"Invalid type for '{where}.content': expected a string or an array.",
                f"{where}.content",
            )
        for j, part in enumerate(content):
            _collect_part(part, f"{where}.content[{j}]", role == "user", texts, images)


def _collect_part(
    part: Any, where: str, from_user: bool, texts: list[str], images: list[bytes]
) -> None:
    if not isinstance(part, dict):
        raise invalid_request(f"Invalid type for '{where}': expected an object.", where)
    kind = part.get("type")
    if kind == "input_text":
        text = part.get("text")
        if not isinstance(text, str):
            raise missing_parameter(f"{where}.text")
        if from_user:
            texts.append(text)
    elif kind == "input_image":
        images.append(_decode_data_url(part.get("image_url"), f"{where}.image_url"))
    elif kind not in ("output_text", "refusal"):  # assistant history carries these
        raise invalid_request(
            f"Invalid value: '{str(kind)[:40]}'. Supported values are: 'input_text', "
            "'input_image', and 'input_file'.",
            f"{where}.type",
            "invalid_value",
        )


def _decode_data_url(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise missing_parameter(where)
    match = _DATA_URL.match(value)
    if match is None:
        # The real API fetches http(s) URLs; an offline emulator cannot.
        raise invalid_request(
            f"Invalid '{where}'. The emulator accepts only base64 data URLs "
            "(e.g. 'data:image/png;base64,...').",
            where,
            "invalid_image_url",
        )
    mime = match.group("mime").lower()
    if mime not in INPUT_IMAGE_MIME_TYPES or ";base64" not in match.group("params").lower():
        raise invalid_request(
            f"Invalid '{where}'. Expected a base64-encoded data URL with an image MIME type "
            f"(e.g. 'data:image/png;base64,...'), but got unsupported MIME type '{mime[:40]}'.",
            where,
            "invalid_image_format",
        )
    try:
        return base64.b64decode(value[match.end() :], validate=True)
    except binascii.Error as exc:
        # Never echo the value: it is image data.
        raise invalid_request(
            f"Invalid '{where}'. The base64 image data could not be decoded.",
            where,
            "invalid_image_url",
        ) from exc


# --- the Response object -------------------------------------------------------------


def response_object(call: ResponsesCall, image: ImageCall | None) -> dict[str, Any]:
    """A completed Response: reasoning, the image_generation_call (if any), a message."""
    now = int(time.time())
    output: list[dict[str, Any]] = [{"id": new_id("rs_"), "type": "reasoning", "summary": []}]
    if image is not None:
        output.append(_image_call_item(call, image))
        drew = image.result_b64 is not None
        text = "Here is the image you asked for." if drew else "I can't create that image."
    else:
        text = f"(emulated text reply to: {call.prompt[:200]})"
    output.append(
        {
            "id": new_id("msg_"),
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }
    )
    input_tokens = text_tokens(call.prompt) + INPUT_IMAGE_TOKENS * len(call.images)
    output_tokens = REASONING_TOKENS + text_tokens(text)
    body: dict[str, Any] = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": now,
        "status": "completed",
        "background": False,
        "completed_at": now,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "metadata": {},
        "model": call.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": call.tool_choice,
        "tools": [_echo_tool(tool) for tool in call.tools],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None,
    }
    if image is not None:
        body["tool_usage"] = _tool_usage(call, image)
    return body


def _image_call_item(call: ResponsesCall, image: ImageCall) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": new_id("ig_"),
        "type": "image_generation_call",
        "status": "completed",
        "action": "edit" if call.images else "generate",
        "background": image.options.background,
        "output_format": image.options.output_format,
        "quality": image.options.quality,
        "size": image.options.size,
        "revised_prompt": call.prompt,
        "result": image.result_b64,
    }
    if image.result_b64 is None:
        item["status"] = "failed"
        item["error"] = {
            "code": "moderation_blocked",
            "message": "The generated image was rejected by the safety system.",
            "param": None,
            "type": "image_generation_user_error",
            "moderation_details": {
                "categories": [(image.refusal_reason or "other").lower()],
                "moderation_stage": "output",
            },
        }
    return item


def _tool_usage(call: ResponsesCall, image: ImageCall) -> dict[str, Any]:
    image_tokens = INPUT_IMAGE_TOKENS * len(call.images)
    prompt_tokens = text_tokens(call.prompt)
    drawn = image.options.output_tokens if image.result_b64 is not None else 0
    return {
        "image_gen": image_usage(prompt_tokens, image_tokens, drawn),
        "web_search": {"num_requests": 0},
    }


def _echo_tool(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "image_generation":
        return {**TOOL_DEFAULTS, **tool}
    return tool
