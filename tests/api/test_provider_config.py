"""A gateway with real (not emulated) provider settings: only configured providers serve.

Gemini is pointed at the emulator on a real loopback port, as an operator would point it
at a proxy; OpenAI and BFL have no keys, AUTOMATIC1111 no base URL, and they answer 503
without charging.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.credits import ledger
from app.db.engine import create_engine, create_sessionmaker
from app.emulators.gemini import create_gemini_emulator
from app.main import create_app
from app.tenants import service as tenants
from tests.support.gateway import gateway_settings
from tests.support.servers import serve_in_thread

PATH = "/api/v1/generate-image"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("real-providers")
    with serve_in_thread(create_gemini_emulator()) as gemini_url:
        settings = gateway_settings(
            data_dir=data_dir,
            emulate=False,
            gemini_api_key="operator-key",
            gemini_base_url=gemini_url,
            openai_api_key=None,
            bfl_api_key=None,
        )
        with serve_in_thread(create_app(settings)) as url:
            yield url, data_dir


async def _tenant(data_dir: Path) -> str:
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'imagegate.db'}", pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            tenant = await tenants.create_tenant(session, f"p-{uuid.uuid4().hex[:10]}")
            key = await tenants.create_key(session, tenant)
            await ledger.grant(session, tenant.id, 100)
            return key.plaintext
    finally:
        await engine.dispose()


async def test_configured_provider_serves_over_the_network(gateway: tuple[str, Path]) -> None:
    url, data_dir = gateway
    key = await _tenant(data_dir)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            PATH, json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 200, response.text
    assert "x-imagegate-emulated" not in response.headers


@pytest.mark.parametrize(
    "model",
    ["openai/gpt-5-nano", "openai/gpt-image-1", "bfl/flux-kontext-max", "automatic1111/sd-xl"],
)
async def test_unconfigured_provider_is_503_and_free(gateway: tuple[str, Path], model: str) -> None:
    url, data_dir = gateway
    key = await _tenant(data_dir)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            PATH, json={"prompt": "x", "model": model}, headers={"Authorization": f"Bearer {key}"}
        )
        models = await client.get("/api/v1/models", headers={"Authorization": f"Bearer {key}"})
        credits = await client.get("/api/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 503
    assert response.json()["code"] == "provider_not_configured"
    assert model in response.json()["error"]
    assert credits.json()["balance"] == 100
    listed = {m["id"]: m for m in models.json()["models"]}
    assert listed[model]["configured"] is False
    assert listed["google/gemini-2.5-flash-image"]["configured"] is True
