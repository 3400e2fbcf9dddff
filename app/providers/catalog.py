"""The model catalog: data that maps public model ids to adapters, prices and capabilities."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.imaging.aspect import nearest_native, parse_ratio

# The adapters configured by the gateway's settings: one shared upstream each (a key and a
# base URL from the settings, or an emulator with --emulate). Every other adapter name
# (built-in `openai-compatible`, or a plugin's entry point) is self-hosted: its catalog
# entry says where the upstream is (app.providers.self_hosted).
FIRST_PARTY_ADAPTERS = frozenset(
    {"gemini", "openai-images", "openai-responses", "bfl", "automatic1111"}
)
# First-party adapters an entry may also point at a server of its own with base_url (one
# web UI per GPU box); without base_url they use the settings' upstream.
ALSO_SELF_HOSTED = frozenset({"automatic1111"})
# Self-hosted kinds that always talk HTTP to a server, so an entry must name its base_url.
NEEDS_BASE_URL = frozenset({"openai-compatible"})
OptionValue = int | float | str | bool
# Output resolutions of the native `imageSize` field, smallest first (Gemini's names: the
# long side is about 512, 1024, 2048 or 4096 pixels). "1K" is the default and every model
# offers it.
IMAGE_SIZES = ("512", "1K", "2K", "4K")
DEFAULT_IMAGE_SIZE = "1K"


class CatalogModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9-]+/[A-Za-z0-9._-]+$")
    adapter: str
    upstream_model: str
    price: int = Field(ge=0, description="credits per delivered image at 1K")
    # The imageSize values the upstream honours, and the credits an image of each costs
    # (relative to the upstream's own prices); 1K may be left out (it is `price`).
    sizes: tuple[str, ...] = (DEFAULT_IMAGE_SIZE,)
    prices: dict[str, int] = Field(default_factory=dict)
    native_aspect_ratios: tuple[str, ...] = Field(min_length=1)
    image_to_image: bool = False
    # Source images one request may carry (the upstream's documented limit); 0 without
    # image_to_image. Unset: 1 when image_to_image, else 0.
    max_reference_images: int = Field(default=-1, ge=-1, le=64)
    # OpenAI's `mask` (transparent where the first image may change) and an alpha
    # channel in the output (`background=transparent`).
    masks: bool = False
    transparent_background: bool = False
    description: str = ""
    # Upstream calls in flight at once for this model (BFL allows 6 active kontext-max
    # tasks); more wait their turn instead of failing. None: unlimited.
    max_concurrency: int | None = Field(default=None, ge=1)
    # Models to try, in order, when this one's upstream stays unavailable or rate limited.
    fallbacks: tuple[str, ...] = ()
    # Self-hosted adapters only: where the upstream is, the name of the environment
    # variable holding its key (None: it takes none), and the adapter's defaults (e.g.
    # steps, sampler and cfg for AUTOMATIC1111; extra request fields for openai-compatible).
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2000)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("native_aspect_ratios")
    @classmethod
    def _ratios_parse(cls, ratios: tuple[str, ...]) -> tuple[str, ...]:
        for ratio in ratios:
            width, height = parse_ratio(ratio)
            if width <= 0 or height <= 0:
                raise ValueError(f"invalid aspect ratio {ratio!r}")
        return ratios

    @field_validator("sizes")
    @classmethod
    def _sizes_known(cls, sizes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [size for size in sizes if size not in IMAGE_SIZES]
        if unknown or DEFAULT_IMAGE_SIZE not in sizes or len(set(sizes)) != len(sizes):
            raise ValueError(f"sizes must be distinct, among {IMAGE_SIZES} and include 1K")
        return tuple(size for size in IMAGE_SIZES if size in sizes)  # smallest first

    @model_validator(mode="after")
    def _prices_per_size(self) -> CatalogModel:
        if set(self.prices) - set(self.sizes) or any(p < 0 for p in self.prices.values()):
            raise ValueError("prices must give credits >= 0 for sizes the model offers")
        if self.prices.get(DEFAULT_IMAGE_SIZE, self.price) != self.price:
            raise ValueError("prices['1K'] must equal price")
        # A larger size billed silently at the 1K price would be an easy, costly slip.
        unpriced = [
            size for size in self.sizes if size != DEFAULT_IMAGE_SIZE and size not in self.prices
        ]
        if unpriced:
            raise ValueError(f"prices must give a price for every size besides 1K: {unpriced}")
        return self

    def price_for(self, image_size: str) -> int:
        """Credits for one image at `image_size` (one of `sizes`)."""
        return self.prices.get(image_size, self.price)

    @property
    def size_prices(self) -> dict[str, int]:
        """Every offered size with its price, smallest first."""
        return {size: self.price_for(size) for size in self.sizes}

    @model_validator(mode="after")
    def _reference_default(self) -> CatalogModel:
        if self.max_reference_images == -1:
            object.__setattr__(self, "max_reference_images", int(self.image_to_image))
        if self.image_to_image != (self.max_reference_images > 0):
            raise ValueError("max_reference_images must be > 0 exactly when image_to_image")
        return self

    @model_validator(mode="after")
    def _upstream_fields(self) -> CatalogModel:
        if not self.self_hosted:
            given = [name for name in ("base_url", "api_key_env", "options") if getattr(self, name)]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only self-hosted adapters take these; "
                    f"'{self.adapter}' is configured by the gateway's settings"
                )
        elif self.adapter in NEEDS_BASE_URL and self.base_url is None:
            raise ValueError(f"adapter '{self.adapter}' needs base_url (the upstream's address)")
        return self

    @property
    def self_hosted(self) -> bool:
        """Built per catalog entry from base_url / api_key_env (not a cloud API's adapter)."""
        if self.adapter in ALSO_SELF_HOSTED:
            return self.base_url is not None
        return self.adapter not in FIRST_PARTY_ADAPTERS

    @property
    def adapter_key(self) -> str:
        """The key of this model's adapter among the configured ones: a cloud API's adapter
        is shared by its models (keyed by adapter name), a self-hosted one is the entry's
        own (keyed by model id; ids contain a '/', adapter names do not)."""
        return self.id if self.self_hosted else self.adapter

    def __hash__(self) -> int:  # ids are unique in a catalog; `prices` is not hashable
        return hash(self.id)

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

    def upstream_ratio(self, requested: str) -> str:
        """The ratio to ask upstream for: the requested one if native, else the nearest."""
        return nearest_native(requested, self.native_aspect_ratios)


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: tuple[CatalogModel, ...] = Field(min_length=1)


class Catalog:
    def __init__(self, models: tuple[CatalogModel, ...]) -> None:
        self._models = {model.id: model for model in models}
        if len(self._models) != len(models):
            raise ValueError("catalog lists a model id twice")
        for model in models:
            for fallback in model.fallbacks:
                if fallback == model.id or fallback not in self._models:
                    raise ValueError(f"{model.id}: fallback {fallback!r} is not another model")

    def chain(self, model: CatalogModel) -> tuple[CatalogModel, ...]:
        """The model followed by its fallbacks."""
        return (model, *(self._models[fallback] for fallback in model.fallbacks))

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        if path is None:
            text = resources.files("app.providers").joinpath("catalog.json").read_text("utf-8")
        else:
            text = path.read_text("utf-8")
        return cls(_CatalogFile.model_validate_json(text).models)

    def get(self, model_id: str) -> CatalogModel | None:
        return self._models.get(model_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._models)

    def __iter__(self) -> Iterator[CatalogModel]:
        return iter(self._models.values())
