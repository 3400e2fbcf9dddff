"""A short-lived, bounded memory of successful authentications.

Every request used to spend a database transaction on its API key. Remembering the answer
for a few seconds (`IMAGEGATE_AUTH_CACHE_SECONDS`, default 5, 0 turns it off) removes that
from the hot path. The bound is the point: a key revoked, or a tenant's limits changed,
by another process (the CLI, another replica) takes effect within that many seconds;
changes made through this process's admin API clear the cache at once. Entries are keyed
by the key's SHA-256, never by the key itself, and only successes are remembered. A key
that expires (or whose rotation grace period ends) is forgotten at that instant, so it
stops working at its expiry, not when its entry would have aged out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from app.db.models import utcnow
from app.tenants.service import AuthContext

DEFAULT_MAX_ENTRIES = 10_000


class AuthCache:
    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, AuthContext]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def get(self, key_hash: str) -> AuthContext | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires, auth = entry
        if self._clock() >= expires:
            del self._entries[key_hash]
            return None
        return auth

    def put(self, key_hash: str, auth: AuthContext) -> None:
        if not self.enabled:
            return
        now = self._clock()
        expires = now + self._ttl
        if auth.valid_until is not None:
            expires = min(expires, now + (auth.valid_until - utcnow()).total_seconds())
        self._entries[key_hash] = (expires, auth)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)  # the oldest insertion goes first

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
