"""Adapters from plugins: a package on sys.path with a dist-info directory whose
entry_points.txt registers factories under `imagegate.providers`, named by catalog
entries, serving generations through the HTTP API of a gateway built from that catalog.
Plugins that fail to import or to build leave their models unconfigured; the gateway
starts anyway."""

from __future__ import annotations

import io
import textwrap
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from app.providers.base import ImageRequest, UpstreamBadRequest
from app.providers.catalog import FIRST_PARTY_ADAPTERS, Catalog, CatalogModel
from app.providers.openai_compatible import OpenAICompatibleAdapter
from app.providers.registry import ADAPTERS, upstream_limits
from app.providers.self_hosted import build_self_hosted
from app.settings import Settings
from tests.support.catalogs import catalog_with, self_hosted_entry
from tests.support.gateway import Stack, gateway_settings, stack_in_thread

PATH = "/api/v1/generate-image"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
PRICE = 3
PLUGIN = textwrap.dedent(
    '''
    """A plugin adapter: draws a PNG of the asked ratio, in a thread (never on the loop)."""

    import asyncio
    import io

    from PIL import Image

    from app.providers.base import ImageRequest, ProviderImage, UpstreamBadRequest

    SEEN = []


    class PngAdapter:
        name = "test-png"

        def __init__(self, colour, side):
            self._colour = colour
            self._side = side

        async def generate(self, request: ImageRequest) -> ProviderImage:
            SEEN.append(request)
            if "refuse" in request.prompt:
                raise UpstreamBadRequest("test-png refuses this prompt")
            data = await asyncio.to_thread(self._draw, request.aspect_ratio)
            return ProviderImage(data, "image/png")

        def _draw(self, ratio):
            width, height = (int(part) for part in ratio.split(":"))
            size = (self._side, self._side * height // width)
            buffer = io.BytesIO()
            Image.new("RGB", size, self._colour).save(buffer, "PNG")
            return buffer.getvalue()

        async def aclose(self):
            return None


    def make_adapter(upstream, model, settings):
        return PngAdapter(str(model.options.get("colour", "red")), int(model.options["side"]))


    def failing_factory(upstream, model, settings):
        raise RuntimeError("this plugin cannot start")
    '''
)
ENTRY_POINTS = textwrap.dedent(
    """
    [imagegate.providers]
    test-png = imagegate_test_plugin:make_adapter
    test-raises = imagegate_test_plugin:failing_factory
    test-broken = imagegate_test_plugin_missing:make_adapter
    openai-compatible = imagegate_test_plugin:make_adapter
    """
)


def install_plugin(root: Path) -> None:
    (root / "imagegate_test_plugin.py").write_text(PLUGIN, "utf-8")
    dist = root / "imagegate_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: imagegate-test-plugin\nVersion: 0.1\n", "utf-8"
    )
    (dist / "entry_points.txt").write_text(ENTRY_POINTS, "utf-8")


@pytest_asyncio.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("plugin")
    install_plugin(root)
    catalog = catalog_with(
        root,
        self_hosted_entry(
            "local/png",
            "test-png",
            price=PRICE,
            native_aspect_ratios=["1:1", "16:9"],
            options={"colour": "blue", "side": 640},
        ),
        self_hosted_entry("local/raises", "test-raises"),
        self_hosted_entry("local/broken", "test-broken"),
        self_hosted_entry("local/absent", "no-such-plugin"),
    )
    settings = gateway_settings(data_dir=root / "data", catalog=catalog)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        async for stack in stack_in_thread(settings, "plugins"):
            yield stack


async def test_a_plugin_adapter_serves_generations_through_the_api(gateway: Stack) -> None:
    tenant = await gateway.new_tenant(credits=10)
    async with gateway.client() as client:
        response = await client.post(
            PATH,
            json={"prompt": "a blue square", "model": "local/png", "aspectRatio": "16:9"},
            headers=tenant.auth,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        (image,) = body["images"]
        fetched = await client.get(image["url"])
    decoded = Image.open(io.BytesIO(fetched.content))
    assert decoded.format == "WEBP"
    assert Fraction(*decoded.size) == Fraction(16, 9)
    assert decoded.size == (640, 360)
    red, green, blue = decoded.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
    assert blue > 200 and red < 40 and green < 40  # the entry's options reached the factory
    assert body["creditsCharged"] == PRICE
    assert await gateway.balance(tenant) == 10 - PRICE
    assert (await gateway.audit(tenant)).ok


async def test_a_plugin_error_is_reported_and_refunded(gateway: Stack) -> None:
    tenant = await gateway.new_tenant(credits=10)
    async with gateway.client() as client:
        response = await client.post(
            PATH, json={"prompt": "please refuse", "model": "local/png"}, headers=tenant.auth
        )
    assert response.status_code == 500, response.text
    assert "test-png refuses this prompt" in response.json()["error"]
    assert await gateway.balance(tenant) == 10


async def test_failed_plugins_leave_their_models_unconfigured(gateway: Stack) -> None:
    async with gateway.client() as client:
        listing = (await client.get("/api/v1/models")).json()["models"]
        configured = {model["id"]: model["configured"] for model in listing}
        assert configured["local/png"] is True
        for model_id in ("local/raises", "local/broken", "local/absent"):
            assert configured[model_id] is False, model_id
        tenant = await gateway.new_tenant(credits=10)
        response = await client.post(
            PATH, json={"prompt": "x", "model": "local/broken"}, headers=tenant.auth
        )
    assert response.status_code == 503
    assert response.json()["code"] == "provider_not_configured"
    assert await gateway.balance(tenant) == 10


async def test_a_plugin_cannot_replace_a_built_in_adapter(tmp_path: Path) -> None:
    """The entry point named `openai-compatible` above is ignored: the built-in adapter
    serves entries of that name."""
    install_plugin(tmp_path)
    settings = Settings(_env_file=None)
    entry = self_hosted_entry("local/x", "openai-compatible", base_url="http://127.0.0.1:9/v1")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        built = build_self_hosted(
            Catalog((CatalogModel.model_validate(entry),)), settings, upstream_limits(settings)
        )
    assert isinstance(built.adapters["local/x"], OpenAICompatibleAdapter)
    await built.aclose()


@pytest.mark.parametrize(
    "variable",
    [
        "IMAGEGATE_ADMIN_TOKEN",
        "IMAGEGATE_URL_SIGNING_SECRET",
        "OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
    ],
)
async def test_an_entry_cannot_send_the_gateways_own_secrets(variable: str) -> None:
    """api_key_env naming a setting or credential of the gateway leaves the entry
    unconfigured: its value would go to whatever server base_url names."""
    settings = Settings(_env_file=None)
    entry = self_hosted_entry(
        "local/x", "openai-compatible", base_url="http://127.0.0.1:9/v1", api_key_env=variable
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(variable, "a-secret-of-the-gateway")
        built = build_self_hosted(
            Catalog((CatalogModel.model_validate(entry),)), settings, upstream_limits(settings)
        )
    assert "local/x" not in built.adapters
    await built.aclose()


def test_the_registry_and_the_catalog_agree_on_first_party_adapters() -> None:
    assert frozenset(ADAPTERS) == FIRST_PARTY_ADAPTERS


def _docs_block(after: str, language: str) -> str:
    """The first ```language block after the heading `after` in docs/adapters.md."""
    text = DOCS.read_text("utf-8")
    rest = text[text.index(after) :]
    start = rest.index(f"```{language}\n") + len(language) + 4
    return rest[start : rest.index("```", start)]


async def test_the_worked_example_in_the_docs_works(tmp_path: Path) -> None:
    """docs/adapters.md's plugin, installed as its pyproject declares it, builds from its
    catalog entry and draws the 640x360 picture the page promises."""
    heading = "### Worked example"
    package = tmp_path / "imagegate_solid"
    package.mkdir()
    (package / "__init__.py").write_text(_docs_block(heading, "python"), "utf-8")
    declared = _docs_block(heading, "toml")
    table = declared.split('[project.entry-points."imagegate.providers"]\n', 1)[1]
    name, _, value = table.strip().partition(" = ")
    point = f"{name} = {value.strip(chr(34))}"  # TOML's quoted string, as entry_points.txt
    dist = tmp_path / "imagegate_solid-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: imagegate-solid\nVersion: 0.1.0\n", "utf-8"
    )
    (dist / "entry_points.txt").write_text(f"[imagegate.providers]\n{point}\n", "utf-8")
    entry = CatalogModel.model_validate_json(_docs_block(heading, "json"))
    settings = Settings(_env_file=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        built = build_self_hosted(Catalog((entry,)), settings, upstream_limits(settings))
    adapter = built.adapters["local/solid"]
    image = await adapter.generate(ImageRequest("solid", "anything", "16:9"))
    assert Image.open(io.BytesIO(image.data)).size == (640, 360)
    with pytest.raises(UpstreamBadRequest):
        await adapter.generate(ImageRequest("solid", " ", "16:9"))
    await built.aclose()
