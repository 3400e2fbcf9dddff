"""What the lifespan sets for the whole process while the app serves, and gives back."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings


@pytest.mark.parametrize("configured", [None, [5000, 20, 50]])
def test_the_collector_thresholds_apply_while_serving_and_the_defaults_come_back(
    tmp_path: Path, configured: list[int] | None
) -> None:
    original = gc.get_threshold()
    # CPython's own thresholds, whatever another app of this test process has set.
    gc.set_threshold(700, 10, 10)
    try:
        _serve_and_check(tmp_path, configured)
    finally:
        gc.set_threshold(*original)


def _serve_and_check(tmp_path: Path, configured: list[int] | None) -> None:
    before = gc.get_threshold()
    settings = Settings(_env_file=None, data_dir=tmp_path, emulate=True)
    if configured is not None:
        settings = settings.model_copy(update={"gc_thresholds": configured})
    assert tuple(settings.gc_thresholds) != before
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        serving = gc.get_threshold()
        assert serving == tuple(configured or settings.gc_thresholds)
    assert gc.get_threshold() == before


def test_by_default_full_collections_are_a_hundred_times_rarer_than_cpythons() -> None:
    # Generation 2 waits for ten times as many generation-1 collections, which come ten
    # times as rarely: the walk of everything in flight ~100x less often than (700, 10, 10).
    zero, _, two = Settings(_env_file=None).gc_thresholds
    assert zero * two >= 100 * 700 * 10


@pytest.mark.parametrize("value", ["[7000, 10]", "[0, 10, 10]", "[700, 10, 10, 10]", "[1e9, 1, 1]"])
def test_thresholds_not_three_positive_counts_are_refused_by_name(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEGATE_GC_THRESHOLDS", value)
    with pytest.raises(ValidationError, match="gc_thresholds"):
        Settings(_env_file=None)
