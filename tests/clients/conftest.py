"""The client tier: one `imagegate serve --emulate` process driven by the real clients.

The gateway runs as its own process on a loopback port for the whole session (emulated
providers, the embedded SQLite + local-directory defaults); tests make their own tenants
and keys in its database and point the official `openai` SDKs, LiteLLM and the elizaOS
packages at it exactly as a user would: a base URL and a key, nothing else.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from app.emulators.images import synthesize_png
from app.providers.catalog import Catalog
from tests.support.gateway import TenantHandle
from tests.support.upstreams import NetworkGateway, emulated_gateway

NODE_DIR = Path(__file__).resolve().parent / "node"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GPT_IMAGE = "openai/gpt-image-1"
GEMINI = "google/gemini-2.5-flash-image"
# Enough for every test of a module to generate many times.
CREDITS = 10_000


def price(model: str) -> int:
    entry = Catalog.load().get(model)
    assert entry is not None, model
    return entry.price


def png(seed: str, width: int = 256, height: int = 256) -> bytes:
    """A small real PNG to upload as an edit's image or mask."""
    return synthesize_png(seed, width, height)


def mask_png(width: int = 256, height: int = 256) -> bytes:
    """An edit mask as OpenAI takes it: a PNG whose transparent pixels (the left half here)
    mark the area to change."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def decode_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def data_of(result: openai.types.ImagesResponse) -> list[openai.types.Image]:
    """The `data` of an images answer (the SDK types it optional)."""
    assert result.data is not None, "no data in the answer"
    return result.data


def b64_png(b64: str | None) -> Image.Image:
    """The PNG a `b64_json` field carries (fails if it is absent or not a PNG)."""
    assert b64, "no b64_json in the answer"
    raw = base64.b64decode(b64)
    assert raw.startswith(PNG_SIGNATURE), f"not a PNG: {raw[:8]!r}"
    return decode_image(raw)


def assert_stream(events: list[Any], prefix: str, partials: int, size: str) -> None:
    """`partials` partial images at most (numbered from 0), then one completed event that
    carries the final PNG of `size` and its usage, and nothing after it."""
    assert events, "the stream yielded no events"
    types = [event.type for event in events]
    assert types[-1] == f"{prefix}.completed", types
    assert types.count(f"{prefix}.completed") == 1, types
    partial = [event for event in events if event.type == f"{prefix}.partial_image"]
    assert len(partial) + 1 == len(events), types
    assert len(partial) <= partials
    assert [event.partial_image_index for event in partial] == list(range(len(partial)))
    for event in partial:
        b64_png(event.b64_json)
    final = events[-1]
    image = b64_png(final.b64_json)
    assert f"{image.width}x{image.height}" == size
    assert final.usage is not None and final.usage.total_tokens > 0


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkGateway]:
    """One emulated gateway process for the whole client tier."""
    with emulated_gateway(tmp_path_factory.mktemp("client-gateway")) as running:
        yield running


@pytest.fixture
def tenant(gateway: NetworkGateway) -> TenantHandle:
    """A fresh tenant and key with credits, so balances are the test's own."""
    return gateway.new_tenant(credits=CREDITS)


@pytest.fixture
def client(gateway: NetworkGateway, tenant: TenantHandle) -> Iterator[openai.OpenAI]:
    """The official SDK as an app configures it: base URL `/v1` and a gateway key."""
    with openai.OpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=tenant.key, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/clients/node/node_modules from its package-lock.json (`npm ci` once, when it is
    missing or older than the lock). No Node is a failure, not a skip: CI has Node 20."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the client tier needs Node.js 20+ and npm on PATH (tests/clients/node)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"the client tier needs Node.js 20+, found {version.stdout.strip()}")
    modules = NODE_DIR / "node_modules"
    stamp = modules / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--cache", str(NODE_DIR / ".npm-cache")],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
    return modules


def run_node(script: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run tests/clients/node/<script> and return the JSON object it prints last."""
    result = subprocess.run(
        ["node", script, *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise AssertionError(
            f"node {script} exited {result.returncode}:\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-4000:]}"
        )
    parsed = json.loads(lines[-1])
    assert isinstance(parsed, dict)
    return parsed


def step_ok(results: dict[str, Any], name: str) -> dict[str, Any]:
    """One step of a node script's results, which must not have raised."""
    step: dict[str, Any] = results[name]
    assert "error" not in step, f"{name}: the package raised {step['error']}"
    return step
