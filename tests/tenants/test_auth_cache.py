"""The auth cache: successes only, for at most its TTL, bounded in size."""

from __future__ import annotations

from datetime import timedelta

from app.db.models import utcnow
from app.tenants.auth_cache import AuthCache
from app.tenants.service import AuthContext


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _auth(n: int) -> AuthContext:
    return AuthContext(tenant_id=f"t{n}", api_key_id=f"k{n}", key_prefix=f"ig_{n:08d}")


def test_an_entry_lives_for_the_ttl_and_no_longer() -> None:
    clock = Clock()
    cache = AuthCache(5.0, clock=clock)
    cache.put("h1", _auth(1))
    clock.now += 4.99
    assert cache.get("h1") == _auth(1)
    clock.now += 0.01
    assert cache.get("h1") is None
    assert len(cache) == 0


def test_a_zero_ttl_turns_it_off() -> None:
    cache = AuthCache(0)
    cache.put("h1", _auth(1))
    assert not cache.enabled
    assert cache.get("h1") is None


def test_it_is_bounded_and_forgets_the_oldest_first() -> None:
    cache = AuthCache(60, max_entries=3, clock=Clock())
    for n in range(5):
        cache.put(f"h{n}", _auth(n))
    assert len(cache) == 3
    assert cache.get("h0") is None and cache.get("h1") is None
    assert cache.get("h4") == _auth(4)


def test_clear_forgets_everything() -> None:
    cache = AuthCache(60, clock=Clock())
    cache.put("h1", _auth(1))
    cache.clear()
    assert cache.get("h1") is None


def test_an_entry_is_forgotten_when_its_key_stops_working() -> None:
    """A key that expires (or ends its rotation grace) in 2 s is not served for the TTL."""
    clock = Clock()
    cache = AuthCache(60.0, clock=clock)
    ending = AuthContext("t", "k", "ig_00000001", valid_until=utcnow() + timedelta(seconds=2))
    cache.put("h1", ending)
    clock.now += 1.5
    assert cache.get("h1") == ending
    clock.now += 0.6
    assert cache.get("h1") is None
