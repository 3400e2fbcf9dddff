"""No secrets and no image data in the logs, even at DEBUG.

A real gateway process (on Postgres + S3, and on the embedded defaults) runs with
IMAGEGATE_LOG_LEVEL=DEBUG (every library logs all it is willing to: botocore, asyncpg,
aiosqlite, httpx, the SDKs) while a full run goes through it: an image-to-image
generation with a data-URL source image, an upstream failure, wrong and malformed keys,
a truncated source image. Then its captured stdout and stderr must hold no API key (nor
the secret part of one), no base64 run as long as a prompt-sized blob, and no PNG or
WebP bytes, raw or escaped.
"""

from __future__ import annotations

import base64
import io
import random
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.tenants.service import PREFIX_LENGTH
from tests.support.process import (
    GatewayProcess,
    create_tenant,
    fresh_database,
    gateway_env,
)
from tests.support.services import S3Service

pytestmark = pytest.mark.slow  # a full run in a subprocess gateway: 15-27 s each here

GENERATE = "/api/v1/generate-image"
# 200+ characters of the base64 alphabets (standard and URL-safe) in one run.
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{200,}")
PNG_MAGIC = (b"\x89PNG", b"x89PNG", b"iVBORw0KGgo")  # raw, escaped (repr/JSON), base64
WEBP_MAGIC = re.compile(rb"RIFF.{0,40}?WEBP", re.DOTALL)  # raw or escaped


def _noisy_png(size: int = 96) -> bytes:
    """A PNG that does not compress: its base64 is ~37 KB."""
    pixels = random.Random(7).randbytes(size * size * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(params=["postgres", "embedded"])
def debug_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """A DEBUG gateway on Postgres + S3 (SQLAlchemy, asyncpg, botocore) or on the
    embedded SQLite + local directory (aiosqlite, the signed /files route)."""
    if request.param == "embedded":
        return gateway_env(tmp_path / "data", log_level="DEBUG")
    s3: S3Service = request.getfixturevalue("s3_endpoint")
    return gateway_env(
        tmp_path / "data",
        database_url=fresh_database(request.getfixturevalue("postgres_url")),
        s3=s3,
        bucket=s3.create_bucket("logs"),
        log_level="DEBUG",
    )


def test_a_full_run_at_debug_logs_no_keys_and_no_image_data(
    debug_env: dict[str, str],
    spawn_gateway: Callable[[dict[str, str]], GatewayProcess],
) -> None:
    env = debug_env
    gateway = spawn_gateway(env)
    tenant = create_tenant(env, "quiet", credits=100)
    source = _noisy_png()
    source_b64 = base64.b64encode(source).decode()
    data_url = f"data:image/png;base64,{source_b64}"
    wrong_key = tenant.key[:PREFIX_LENGTH] + "x" * (len(tenant.key) - PREFIX_LENGTH)
    prompt = "a watercolour fox in the snow"

    with httpx.Client(base_url=gateway.base_url, timeout=60) as client:
        ok = client.post(
            GENERATE,
            headers=tenant.auth,
            json={"prompt": prompt, "sourceImage": data_url, "numImages": 2},
        )
        assert ok.status_code == 200, ok.text
        for image in ok.json()["images"]:
            assert httpx.get(image["url"], timeout=30).content[:4] == b"RIFF"

        gateway.set_faults({"kind": "error", "status": 500, "count": 100})
        failed = client.post(GENERATE, headers=tenant.auth, json={"prompt": prompt})
        assert failed.status_code == 500, failed.text
        gateway.set_faults()

        for headers in (
            {"Authorization": f"Bearer {wrong_key}"},
            {"Authorization": f"Basic {tenant.key}"},
            {"Authorization": tenant.key},
        ):
            response = client.post(GENERATE, headers=headers, json={"prompt": prompt})
            assert response.status_code == 401, response.text
        bad = client.post(
            GENERATE,
            headers=tenant.auth,
            json={"prompt": prompt, "sourceImage": "data:image/png;base64," + source_b64[:-7]},
        )
        assert bad.status_code == 400, bad.text
    gateway.terminate()  # graceful: everything buffered is flushed

    logs = gateway.logs()
    # The capture works and really ran at DEBUG with the requests in it.
    assert b'"level": "DEBUG"' in logs
    assert GENERATE.encode() in logs
    # No key, in full or its secret part, whether valid or not.
    for key in (tenant.key, wrong_key):
        assert key.encode() not in logs
        assert key[PREFIX_LENGTH:].encode() not in logs
    # No image bytes, raw, escaped or base64.
    runs = BASE64_RUN.findall(logs)
    assert not runs, f"base64-like runs in the logs: {[r[:60] for r in runs]}"
    assert source_b64[:64].encode() not in logs
    for magic in PNG_MAGIC:
        assert magic not in logs, f"PNG bytes ({magic!r}) in the logs"
    match = WEBP_MAGIC.search(logs)
    assert match is None, f"WebP bytes in the logs: {match.group(0)[:60]!r}"
