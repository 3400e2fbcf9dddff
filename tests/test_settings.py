"""The source-bytes total (app.settings): by default what the body limit admits; an explicit
total the body limit cannot carry is refused at startup, naming both settings."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from app.settings import BODY_SLACK_BYTES, Settings, encoded_body_bytes


def test_the_default_total_fits_in_the_default_body() -> None:
    settings = Settings(_env_file=None)
    total = settings.source_bytes_total
    assert total > settings.max_source_image_bytes  # several references, not just one
    assert encoded_body_bytes(total) <= settings.max_body_bytes
    # What a body of that many image bytes needs as base64, with the slack for the rest.
    assert encoded_body_bytes(total) == len(base64.b64encode(b"x" * total)) + BODY_SLACK_BYTES


def test_the_default_total_follows_the_body_limit() -> None:
    settings = Settings(_env_file=None, max_body_bytes=4 * 1024 * 1024)
    assert encoded_body_bytes(settings.source_bytes_total) <= 4 * 1024 * 1024
    assert encoded_body_bytes(settings.source_bytes_total + 3) > 4 * 1024 * 1024


def test_a_total_the_body_cannot_carry_is_refused() -> None:
    body = 4 * 1024 * 1024
    fits = (body - BODY_SLACK_BYTES) // 4 * 3
    assert Settings(_env_file=None, max_body_bytes=body, max_source_bytes_total=fits)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, max_body_bytes=body, max_source_bytes_total=fits + 3)
    assert "IMAGEGATE_MAX_SOURCE_BYTES_TOTAL" in str(caught.value)
    assert "IMAGEGATE_MAX_BODY_BYTES" in str(caught.value)
