"""Counting the calls sent to an aiosqlite connection's thread (each one a thread hop)."""

from __future__ import annotations

import aiosqlite
import pytest


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the functions sent to a connection's thread from now on (grows in place)."""
    sent: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: object, *args: object) -> object:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return sent
