"""Style presets: prompt templates kept as data in presets.json.

Each template places the caller's prompt (the `{subject}` placeholder, exactly once) inside a
sentence that carries the style's vocabulary. The prompt is substituted verbatim: it is never
passed through `str.format`, so braces or a literal `{subject}` in user text stay as written.
A preset may also name what its style excludes (`negative`), sent to upstreams that take a
negative prompt (AUTOMATIC1111); the others ignore it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Final

from app.errors import InvalidRequest

PLACEHOLDER: Final = "{subject}"
DEFAULT_PRESET: Final = "none"

PRESET_NAMES: tuple[str, ...] = (
    "none",
    "photographic",
    "digital-art",
    "comic-book",
    "fantasy-art",
    "analog-film",
    "neon-punk",
    "cinematic",
    "isometric",
    "low-poly",
    "origami",
    "line-art",
    "3d-model",
)


class PresetDataError(ValueError):
    """presets.json is malformed; raised at import so a broken data file fails loudly."""


@dataclass(frozen=True)
class StylePreset:
    name: str
    description: str
    template: str
    negative: str | None = None

    def __post_init__(self) -> None:
        if self.template.count(PLACEHOLDER) != 1:
            raise PresetDataError(
                f"preset {self.name!r} template must contain {PLACEHOLDER} exactly once"
            )
        # Any other brace is almost certainly a misspelt placeholder such as "{subjet}".
        stray = self.template.replace(PLACEHOLDER, "")
        if "{" in stray or "}" in stray:
            raise PresetDataError(
                f"preset {self.name!r} template has a brace outside {PLACEHOLDER}"
            )

    def render(self, prompt: str) -> str:
        """The template with its single placeholder replaced by `prompt`, verbatim."""
        before, after = self.template.split(PLACEHOLDER)
        return f"{before}{prompt}{after}"


def parse_presets(raw: object) -> tuple[StylePreset, ...]:
    """Validate decoded presets.json data and return the presets in PRESET_NAMES order."""
    if not isinstance(raw, dict):
        raise PresetDataError("presets data must be a JSON object keyed by preset name")
    missing = [name for name in PRESET_NAMES if name not in raw]
    unknown = sorted(str(name) for name in raw if name not in PRESET_NAMES)
    if missing or unknown:
        raise PresetDataError(f"preset names do not match: missing {missing}, unknown {unknown}")
    return tuple(_parse_entry(name, raw[name]) for name in PRESET_NAMES)


def _parse_entry(name: str, entry: object) -> StylePreset:
    if not isinstance(entry, dict) or not (
        {"description", "template"} <= set(entry) <= {"description", "template", "negative"}
    ):
        raise PresetDataError(
            f"preset {name!r} must have 'description' and 'template' (and optionally 'negative')"
        )
    description = entry["description"]
    template = entry["template"]
    negative = entry.get("negative")
    if negative is not None and (
        not isinstance(negative, str) or not negative.strip() or "\n" in negative
    ):
        raise PresetDataError(f"preset {name!r} negative must be one non-empty line")
    if name == DEFAULT_PRESET and negative is not None:
        raise PresetDataError(f"preset {DEFAULT_PRESET!r} must not exclude anything")
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise PresetDataError(f"preset {name!r} needs a one-line, non-empty description")
    if not isinstance(template, str):
        raise PresetDataError(f"preset {name!r} template must be a string")
    if name == DEFAULT_PRESET and template != PLACEHOLDER:
        raise PresetDataError(f"preset {DEFAULT_PRESET!r} must leave the prompt untouched")
    return StylePreset(name=name, description=description, template=template, negative=negative)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        raise PresetDataError(f"presets.json repeats keys: {duplicates}")
    return result


def _load() -> tuple[StylePreset, ...]:
    text = resources.files("app.generation").joinpath("presets.json").read_text("utf-8")
    try:
        raw: object = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise PresetDataError(f"presets.json is not valid JSON: {exc}") from exc
    return parse_presets(raw)


_PRESETS: Final = _load()
_BY_NAME: Final = MappingProxyType({preset.name: preset for preset in _PRESETS})


def get_preset(name: str) -> StylePreset | None:
    return _BY_NAME.get(name)


def all_presets() -> tuple[StylePreset, ...]:
    return _PRESETS


def preset_negative(name: str) -> str | None:
    """What preset `name` excludes (its negative prompt), or None; unknown names are
    apply_preset's to refuse."""
    preset = _BY_NAME.get(name)
    return preset.negative if preset is not None else None


def apply_preset(name: str, prompt: str) -> str:
    """Render `prompt` through preset `name`; `none` returns it unchanged.

    An unknown name is a 400 naming the allowed values, never a silent fallback.
    """
    if name == DEFAULT_PRESET:
        return prompt
    preset = _BY_NAME.get(name)
    if preset is None:
        allowed = ", ".join(PRESET_NAMES)
        raise InvalidRequest(
            f"stylePreset must be one of: {allowed}",
            field="stylePreset",
            allowed=list(PRESET_NAMES),
        )
    return preset.render(prompt)
