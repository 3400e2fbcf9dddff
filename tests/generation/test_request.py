"""Prompt characters: emoji sequences are text, invisible control and format characters
are not (app.generation.request)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db.models import Generation
from app.errors import InvalidRequest
from app.generation.request import parse_generate_request
from app.providers.catalog import Catalog
from tests.support.gateway import Stack

CATALOG = Catalog.load()
MAX_SOURCE = 1024 * 1024
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl
SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"

EMOJI_PROMPTS = {
    "zwj-family": f"a family {FAMILY} at the beach",
    "zwj-profession": "an astronaut \U0001f9d1\u200d\U0001f680, a rainbow flag "
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "tag-flag": f"the flag of Scotland {SCOTLAND} in the wind",
    "variation-selectors": "a red heart \u2764\ufe0f and a text smiley \u263a\ufe0e",
    "keycap": "the number 1\ufe0f\u20e3 on a sign",
    "skin-tone": "a waving hand \U0001f44b\U0001f3fd, and a plain black flag \U0001f3f4",
    "zwj-with-skin-tones": "a couple "
    "\U0001f469\U0001f3fb\u200d\u2764\ufe0f\u200d\U0001f468\U0001f3ff",
}

REFUSED_PROMPTS = {
    "bell": ("ring \x07 ring", "U+0007"),
    "escape": ("colour \x1b[31m red", "U+001B"),
    "rtl-override": ("bidi \u202e override", "U+202E"),
    "zero-width-space": ("hidden\u200bword", "U+200B"),
    "word-joiner": ("hidden\u2060word", "U+2060"),
    "bom": ("\ufeffleading bom", "U+FEFF"),
    "tags-outside-a-flag": ("ascii \U000e0069\U000e0067\U000e006e smuggling", "U+E0069"),
    "unterminated-flag-tags": ("\U0001f3f4\U000e0067\U000e0062 no cancel tag", "U+E0067"),
    "cancel-tag-alone": ("a lone \U000e007f cancel tag", "U+E007F"),
    "flag-tags-at-the-end": ("a flag \U0001f3f4\U000e0067", "U+E0067"),
    "private-use": ("private \ue000 use", "U+E000"),
}


@pytest.mark.parametrize("prompt", EMOJI_PROMPTS.values(), ids=EMOJI_PROMPTS.keys())
def test_emoji_sequences_are_allowed(prompt: str) -> None:
    assert (
        parse_generate_request({"prompt": prompt}, CATALOG, max_source_bytes=MAX_SOURCE).prompt
        == prompt
    )


@pytest.mark.parametrize(("prompt", "named"), REFUSED_PROMPTS.values(), ids=REFUSED_PROMPTS.keys())
def test_control_and_format_characters_are_refused(prompt: str, named: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_generate_request({"prompt": prompt}, CATALOG, max_source_bytes=MAX_SOURCE)
    assert refused.value.extra["field"] == "prompt"
    assert named in refused.value.message


async def test_an_emoji_family_prompt_generates_over_http(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    prompt = EMOJI_PROMPTS["zwj-family"]
    async with stack.client() as client:
        response = await client.post(
            "/api/v1/generate-image", json={"prompt": prompt}, headers=tenant.auth
        )
    assert response.status_code == 200, response.text
    async with stack.sessions() as session:
        stored = await session.scalar(
            select(Generation.prompt).where(Generation.id == response.json()["id"])
        )
    assert stored == prompt  # kept as sent, joiners included
