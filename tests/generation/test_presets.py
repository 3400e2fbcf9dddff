"""Style presets: the data file, safe substitution, and the `none` identity."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from app.errors import InvalidRequest
from app.generation.presets import (
    PRESET_NAMES,
    PresetDataError,
    StylePreset,
    all_presets,
    apply_preset,
    get_preset,
    parse_presets,
    preset_negative,
)

STYLED = [name for name in PRESET_NAMES if name != "none"]

SEED_DESCRIPTIONS = {
    "none": "No style modification (default)",
    "photographic": "Realistic lighting and details",
    "digital-art": "Vibrant colors, modern aesthetics",
    "comic-book": "Bold lines, dramatic shading",
    "fantasy-art": "Magical and ethereal elements",
    "analog-film": "Film grain and vintage tones",
    "neon-punk": "Cyberpunk style with neon colors",
    "cinematic": "Dramatic lighting and composition",
}

TRICKY_PROMPTS = [
    "a cat",
    "  leading and trailing spaces  ",
    "a sign that reads {subject}",
    "{subject}",
    "positional {0} and {1} fields",
    "escaped {{braces}} and a lone { and }",
    "format spec {subject!r:>10} and {__class__}",
    "percent %s and %(name)s and $subject and ${subject}",
    "back\\slash \\1 \\g<0> replacement escapes",
    "unicode: 東京の夜景, café, emoji 🐉, combining e\u0301, RTL \u05e9\u05dc\u05d5\u05dd",
    "multi\nline\r\nprompt\twith tabs",
    "",
]


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{3,}", text)


def _raw_data() -> dict[str, dict[str, str]]:
    text = resources.files("app.generation").joinpath("presets.json").read_text("utf-8")
    data: dict[str, dict[str, str]] = json.loads(text)
    return data


def test_all_thirteen_presets_in_order() -> None:
    assert len(PRESET_NAMES) == 13
    assert tuple(preset.name for preset in all_presets()) == PRESET_NAMES
    assert list(_raw_data()) == list(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_has_a_one_line_description(name: str) -> None:
    preset = get_preset(name)
    assert isinstance(preset, StylePreset)
    assert preset.name == name
    assert preset.description.strip() == preset.description
    assert preset.description
    assert "\n" not in preset.description
    assert len(preset.description) <= 60


@pytest.mark.parametrize(("name", "description"), SEED_DESCRIPTIONS.items())
def test_descriptions_match_the_seed_where_it_has_one(name: str, description: str) -> None:
    preset = get_preset(name)
    assert preset is not None
    assert preset.description == description


def test_unknown_preset_is_none() -> None:
    assert get_preset("watercolor") is None
    assert get_preset("") is None
    assert get_preset("Photographic") is None
    assert get_preset(" photographic") is None


def test_apply_unknown_preset_is_a_400_naming_the_allowed_values() -> None:
    with pytest.raises(InvalidRequest) as caught:
        apply_preset("watercolor", "a cat")
    assert caught.value.status_code == 400
    assert caught.value.extra["field"] == "stylePreset"
    assert caught.value.extra["allowed"] == list(PRESET_NAMES)
    assert "photographic" in caught.value.message


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
def test_none_returns_the_prompt_byte_identical(prompt: str) -> None:
    result = apply_preset("none", prompt)
    assert result == prompt
    assert result.encode("utf-8", "surrogatepass") == prompt.encode("utf-8", "surrogatepass")


def test_none_template_is_the_bare_placeholder() -> None:
    preset = get_preset("none")
    assert preset is not None
    assert preset.template == "{subject}"


@pytest.mark.parametrize("name", STYLED)
def test_template_embeds_the_subject_inside_the_style_sentence(name: str) -> None:
    """The rule: style vocabulary on BOTH sides of the subject, so it is never a bare suffix
    (or prefix), and the whole template is a substantial description (~30-60 words)."""
    preset = get_preset(name)
    assert preset is not None
    before, after = preset.template.split("{subject}")
    assert len(_words(before)) >= 2, f"{name}: too little before the subject: {before!r}"
    assert len(_words(after)) >= 10, f"{name}: too little after the subject: {after!r}"
    assert 30 <= len(preset.template.split()) <= 60

    subject = "a lighthouse on a rocky cliff"
    rendered = apply_preset(name, subject)
    assert rendered.count(subject) == 1
    assert rendered == before + subject + after
    assert not rendered.endswith(subject)
    assert not rendered.startswith(subject)


def test_templates_are_distinct() -> None:
    templates = [preset.template for preset in all_presets()]
    assert len(set(templates)) == len(templates)


@pytest.mark.parametrize("name", STYLED)
@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
def test_user_text_is_substituted_verbatim_and_once(name: str, prompt: str) -> None:
    preset = get_preset(name)
    assert preset is not None
    before, after = preset.template.split("{subject}")
    rendered = apply_preset(name, prompt)
    # Exactly the template with the prompt in place: nothing in the prompt was interpreted,
    # and a literal "{subject}" in the prompt was not substituted a second time.
    assert rendered == before + prompt + after
    assert len(rendered) == len(before) + len(prompt) + len(after)


def test_a_prompt_containing_the_placeholder_is_not_resubstituted() -> None:
    rendered = apply_preset("photographic", "{subject}")
    assert rendered.count("{subject}") == 1
    assert rendered.startswith("A professional photograph of {subject},")
    twice = apply_preset("cinematic", apply_preset("cinematic", "x"))
    assert twice.count("A cinematic film still of") == 2


# --- the data file fails loudly when broken -------------------------------------------------


def _valid() -> dict[str, dict[str, str]]:
    return _raw_data()


def test_parse_accepts_the_shipped_file() -> None:
    assert parse_presets(_valid()) == all_presets()


def test_parse_rejects_a_missing_preset() -> None:
    data = _valid()
    del data["origami"]
    with pytest.raises(PresetDataError, match="origami"):
        parse_presets(data)


def test_parse_rejects_an_unknown_preset() -> None:
    data = _valid()
    data["watercolor"] = {"description": "Wet paint", "template": "A watercolour of {subject}."}
    with pytest.raises(PresetDataError, match="watercolor"):
        parse_presets(data)


@pytest.mark.parametrize(
    "template",
    [
        "A photograph of a cat.",
        "A photograph of {subject} and {subject}.",
        "A photograph of {subjet}.",
        "A photograph of {subject} with {lens}.",
        "A photograph of {subject} }",
    ],
)
def test_parse_rejects_a_bad_template(template: str) -> None:
    data = _valid()
    data["photographic"]["template"] = template
    with pytest.raises(PresetDataError, match="photographic"):
        parse_presets(data)


def test_parse_rejects_a_styled_none() -> None:
    data = _valid()
    data["none"]["template"] = "A photo of {subject}."
    with pytest.raises(PresetDataError, match="none"):
        parse_presets(data)


@pytest.mark.parametrize(
    "entry",
    [
        "A photograph of {subject}.",
        {"template": "A photograph of {subject}."},
        {"description": "", "template": "A photograph of {subject}."},
        {"description": "two\nlines", "template": "A photograph of {subject}."},
        {"description": "ok", "template": 3},
        {"description": "ok", "template": "A photograph of {subject}.", "extra": "x"},
        {"description": "ok", "template": "A photograph of {subject}.", "negative": ""},
        {"description": "ok", "template": "A photograph of {subject}.", "negative": "a\nb"},
        {"description": "ok", "template": "A photograph of {subject}.", "negative": 3},
    ],
)
def test_parse_rejects_a_malformed_entry(entry: object) -> None:
    data: dict[str, object] = dict(_valid())
    data["photographic"] = entry
    with pytest.raises(PresetDataError, match="photographic"):
        parse_presets(data)


def test_parse_rejects_a_non_object() -> None:
    with pytest.raises(PresetDataError):
        parse_presets(list(PRESET_NAMES))


def test_presets_are_immutable() -> None:
    preset = get_preset("photographic")
    assert preset is not None
    with pytest.raises(AttributeError):
        preset.template = "{subject}"  # type: ignore[misc]


def test_negatives_where_a_style_has_one() -> None:
    """Upstreams with a negative prompt (AUTOMATIC1111) get the preset's; `none` has none."""
    photographic = preset_negative("photographic")
    assert photographic is not None and "cartoon" in photographic
    assert preset_negative("none") is None
    assert preset_negative("no-such-preset") is None
    assert all(preset_negative(name) for name in STYLED)


def test_parse_rejects_a_negative_on_none() -> None:
    data: dict[str, dict[str, str]] = _valid()
    data["none"]["negative"] = "anything"
    with pytest.raises(PresetDataError, match="none"):
        parse_presets(data)
