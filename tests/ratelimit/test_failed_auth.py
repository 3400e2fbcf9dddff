"""Which address failed authentications are counted against."""

from __future__ import annotations

import pytest

from app.ratelimit.failed_auth import UNKNOWN_ADDRESS, FailedAuthLimit, client_address
from app.ratelimit.gcra import MemoryRateLimiter


def test_without_trusted_proxies_the_socket_peer_counts() -> None:
    assert client_address("10.1.2.3", ["203.0.113.7"], 0) == "10.1.2.3"
    assert client_address(None, [], 0) == UNKNOWN_ADDRESS


@pytest.mark.parametrize(
    ("headers", "hops", "expected"),
    [
        (["198.51.100.9"], 1, "198.51.100.9"),
        # The client's own claims sit left of what the trusted proxy appended.
        (["192.0.2.1, 198.51.100.9"], 1, "198.51.100.9"),
        (["192.0.2.1", "198.51.100.9"], 1, "198.51.100.9"),  # two headers are one list
        (["192.0.2.1, 198.51.100.9, 10.0.0.5"], 2, "198.51.100.9"),
        ([], 1, "10.0.0.2"),  # no header: the peer (the proxy) itself
        (["198.51.100.9"], 2, "10.0.0.2"),  # shorter than the proxy chain
        ([" , "], 1, "10.0.0.2"),
    ],
)
def test_behind_proxies_the_entry_the_outermost_trusted_one_appended_counts(
    headers: list[str], hops: int, expected: str
) -> None:
    assert client_address("10.0.0.2", headers, hops) == expected


def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    one = client_address("2001:db8:1:2::1", [], 0)
    assert one == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:2:ffff:ee:dd:cc", [], 0) == one  # the same client
    assert client_address("2001:db8:1:3::1", [], 0) != one
    assert client_address("::ffff:198.51.100.9", [], 0) == "198.51.100.9"
    assert client_address("10.0.0.2", ["[2001:db8:1:2::9]"], 1) == one


def test_an_absurd_address_is_bounded() -> None:
    assert len(client_address("x" * 10_000, [], 0)) == 64


async def test_failures_refuse_after_the_budget_and_zero_turns_it_off() -> None:
    guard = FailedAuthLimit(MemoryRateLimiter(), per_minute=3)
    for _ in range(3):
        assert await guard.check("a") is None
        assert await guard.failed("a") is None
    refused = await guard.check("a")
    assert refused is not None and int(refused.headers()["Retry-After"]) >= 1
    assert await guard.check("b") is None  # per address
    off = FailedAuthLimit(MemoryRateLimiter(), per_minute=0)
    for _ in range(100):
        assert await off.failed("a") is None
    assert await off.check("a") is None
