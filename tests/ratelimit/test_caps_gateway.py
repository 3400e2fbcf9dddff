"""The gateway's upstream caps with Redis configured: shared while it answers, the
per-process cap (and /healthz saying so) while it does not."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import gateway_settings, stack_in_thread
from tests.support.servers import free_port

CAPPED = "bfl/flux-kontext-max"  # max_concurrency 6 in the packaged catalog


async def _generate_and_health(settings_dir: Path, redis_url: str) -> tuple[int, str, str]:
    settings = gateway_settings(data_dir=settings_dir, redis_url=redis_url)
    async for stack in stack_in_thread(settings, "caps"):
        tenant = await stack.new_tenant(credits=100)
        async with stack.client() as client:
            before = (await client.get("/healthz")).json()["concurrency"]
            response = await client.post(
                "/api/v1/generate-image",
                json={"prompt": "a capped model", "model": CAPPED},
                headers=tenant.auth,
            )
            after = (await client.get("/healthz")).json()["concurrency"]
        assert (await stack.audit(tenant)).ok
        return response.status_code, before, after
    raise AssertionError("the stack did not start")


async def test_with_redis_the_caps_are_shared(tmp_path: Path, redis_url: str) -> None:
    assert await _generate_and_health(tmp_path, redis_url) == (200, "shared", "shared")


async def test_unreachable_redis_falls_back_to_the_local_cap_and_says_so(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    status, _, after = await _generate_and_health(tmp_path, closed)
    assert (status, after) == (200, "local (redis unavailable)")
