"""Settings: the source-bytes total (by default what the body limit admits; an explicit
total the body limit cannot carry is refused at startup, naming both settings) and
database URLs as hosting services write them (#16 item 3)."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from app.settings import BODY_SLACK_BYTES, Settings, asyncpg_database_url, encoded_body_bytes


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


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgres://u@db/app?sslmode=require", "postgresql+asyncpg://u@db/app?ssl=require"),
        (
            "postgresql+asyncpg://u@/app?host=/run/pg&sslmode=disable",
            "postgresql+asyncpg://u@/app?host=/run/pg&ssl=disable",
        ),
        ("sqlite+aiosqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
    ],
)
def test_postgres_urls_get_asyncpg_and_its_ssl_parameter(given: str, expected: str) -> None:
    assert asyncpg_database_url(given) == expected
    assert Settings(database_url=given).resolved_database_url == expected


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgres://u@db/app?sslmode=sometimes", "sslmode must be one of"),
        ("postgres://u@db/app?sslrootcert=/ca.pem", "'sslrootcert' is not supported"),
    ],
)
def test_parameters_asyncpg_cannot_take_are_refused_by_name(url: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named) as caught:
        Settings(database_url=url)
    assert "database_url" in str(caught.value)
