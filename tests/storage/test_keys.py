"""The object key layout (app/storage/keys.py): built and parsed the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.storage.base import validate_key
from app.storage.keys import (
    ImageKey,
    JobSourceKey,
    job_source_key,
    object_key,
    parse_image_key,
    parse_job_source_key,
)


def test_object_key_layout() -> None:
    created = datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
    assert object_key("tenant-a", "gen_1", 2, created) == "tenant-a/2025/03/gen_1-2.webp"


def test_object_key_uses_utc() -> None:
    created = datetime(2025, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert object_key("t1", "g1", 0, created) == "t1/2025/04/g1-0.webp"
    assert object_key("t1", "g1", 3, datetime(2024, 12, 1)) == "t1/2024/12/g1-3.webp"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a..b", "../x", ".hidden", "a b", "a\\b"])
def test_object_key_rejects_unsafe_components(bad: str) -> None:
    with pytest.raises(ValueError):
        object_key(bad, "gen", 0, datetime.now(UTC))
    with pytest.raises(ValueError):
        object_key("tenant", bad, 0, datetime.now(UTC))


def test_object_key_rejects_negative_index() -> None:
    with pytest.raises(ValueError):
        object_key("tenant", "gen", -1, datetime.now(UTC))


def test_object_keys_are_valid_keys() -> None:
    key = object_key("7d4c1f0e-aaaa-bbbb-cccc-0123456789ab", "gen", 0, datetime.now(UTC))
    assert validate_key(key) == key


def test_an_image_key_parses_back_into_its_parts() -> None:
    key = object_key("tenant-a", "gen_1", 12, datetime(2025, 3, 9, tzinfo=UTC))
    assert parse_image_key(key) == ImageKey("tenant-a", "gen_1", 12)
    assert parse_job_source_key(key) is None


def test_a_job_source_key_parses_back_into_its_parts() -> None:
    key = job_source_key("tenant-a", "job-1")
    assert key == "tenant-a/jobs/job-1/source"
    assert parse_job_source_key(key) == JobSourceKey("tenant-a", "job-1")
    assert parse_image_key(key) is None


def test_a_jobs_later_source_keys_follow_the_first() -> None:
    assert job_source_key("tenant-a", "job-1", 0) == "tenant-a/jobs/job-1/source"
    key = job_source_key("tenant-a", "job-1", 2)
    assert key == "tenant-a/jobs/job-1/source-2"
    assert parse_job_source_key(key) == JobSourceKey("tenant-a", "job-1")
    with pytest.raises(ValueError, match="index"):
        job_source_key("tenant-a", "job-1", -1)


@pytest.mark.parametrize(
    "key",
    [
        "tenant-a/2025/03/gen_1-2.png",
        "tenant-a/2025/3/gen_1-2.webp",
        "tenant-a/2025/03/gen_1.webp",
        "tenant-a/jobs/job-1/source.webp",
        "tenant-a/jobs/job-1/source-0",
        "tenant-a/jobs/job-1/source-x",
        "tenant-a/jobs/job-1",
        "something-else",
    ],
)
def test_keys_outside_the_layout_parse_as_nothing(key: str) -> None:
    assert parse_image_key(key) is None
    assert parse_job_source_key(key) is None
