"""A per-client-address limit on failed authentications.

Without it a client could try keys as fast as it likes, each costing a database lookup.
Failures are counted per address with the same GCRA backends as the key limits (in
process, or Redis shared by the replicas); once an address has used up its failures it
is refused with 429 before any lookup, until Retry-After. Successful requests never
count, and a key this process verified recently (the auth cache) is never refused, so
a valid client behind the same address as a guesser keeps working.

The address is the socket peer unless the gateway is told how many reverse proxies are
in front of it (IMAGEGATE_TRUSTED_PROXY_HOPS): then it is the X-Forwarded-For entry that
the outermost trusted proxy appended. Entries further left are the client's own claim
and never trusted. IPv6 addresses count per /64 (what one client is usually given).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from app.ratelimit import RateLimiter
from app.ratelimit.gcra import Decision, Limit

PERIOD_SECONDS = 60.0
UNKNOWN_ADDRESS = "unknown"
_MAX_ADDRESS_CHARS = 64


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted_hops: int) -> str:
    """The address failures are counted against (see the module docstring)."""
    if trusted_hops <= 0:
        return _clean(peer)
    # Several X-Forwarded-For headers are one comma-separated list, in order.
    hops = [part.strip() for header in forwarded_for for part in header.split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) < trusted_hops:
        # Fewer entries than proxies: a request that did not come through all of them
        # (or a proxy that does not append). Count it against the nearest peer.
        return _clean(peer)
    return _clean(hops[-trusted_hops])


def _clean(address: str | None) -> str:
    # Counted in a rate-limit key, never trusted as anything else: bound its size.
    if not address:
        return UNKNOWN_ADDRESS
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:_MAX_ADDRESS_CHARS]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # One IPv6 client usually holds a whole /64: counting per /128 would let it
        # rotate addresses forever.
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailedAuthLimit:
    """`per_minute` failed authentications per address (burst of as many); 0 turns it off."""

    def __init__(self, limiter: RateLimiter, per_minute: int) -> None:
        self._limiter = limiter
        self._limit = Limit(per_minute, PERIOD_SECONDS) if per_minute > 0 else None

    @staticmethod
    def _key(address: str) -> str:
        return f"authfail:{address}"

    async def check(self, address: str) -> Decision | None:
        """A refusing Decision if `address` has no failures left, else None. No write."""
        if self._limit is None:
            return None
        decision = await self._limiter.peek([self._key(address)], [self._limit])
        return None if decision.allowed else decision

    async def failed(self, address: str) -> Decision | None:
        """Count one failure; a refusing Decision if it was one too many."""
        if self._limit is None:
            return None
        decision = await self._limiter.hit([self._key(address)], [self._limit])
        return None if decision.allowed else decision
