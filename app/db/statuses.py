"""The values of every status-like column, one StrEnum each.

The models' CHECK constraints are built from these (`in_check`), and code compares and
writes members, never literals. Members are `str`s, so the stored and serialised values
are the plain strings they always were.
"""

from __future__ import annotations

from enum import StrEnum


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"


class LedgerKind(StrEnum):
    GRANT = "grant"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    ADJUSTMENT = "adjustment"


class GenerationStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    REJECTED = "rejected"
    ABANDONED = "abandoned"


class IdempotencyStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class LimitPeriod(StrEnum):
    """The calendar period (UTC) over which a key's credit limit applies."""

    TOTAL = "total"
    DAY = "day"
    MONTH = "month"


def in_check(column: str, values: type[StrEnum]) -> str:
    """`column IN ('a', 'b')`, in the enum's order: the text the migrations were written with."""
    quoted = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({quoted})"
