"""What a generation whose every image failed answers: the errors decide the status."""

from __future__ import annotations

from app.errors import GenerationFailed
from app.generation.decode_budget import DecodeBusy
from app.generation.service import _all_failed
from app.providers.base import Unavailable


def test_every_image_out_of_decode_budget_is_a_503_with_retry_after() -> None:
    busy = _all_failed([DecodeBusy("busy one"), DecodeBusy("busy two")])
    assert isinstance(busy, DecodeBusy)
    assert busy.status_code == 503
    assert busy.code == "decode_busy"
    assert busy.headers["Retry-After"] == "2"


def test_busy_beside_an_upstream_failure_is_a_generation_failure() -> None:
    failed = _all_failed([DecodeBusy("busy"), Unavailable("upstream 500")])
    assert isinstance(failed, GenerationFailed)
    assert failed.status_code == 500
