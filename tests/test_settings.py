"""Settings: database URLs as hosting services write them (#16 item 3)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings, asyncpg_database_url


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
