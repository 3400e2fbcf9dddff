"""Every status-like column's CHECK constraint allows exactly its enum's values, both in
the models' metadata and in the schema the migrations build."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from enum import StrEnum
from pathlib import Path

from sqlalchemy import CheckConstraint

from app.db.migrate import upgrade
from app.db.models import Base
from app.db.statuses import (
    GenerationStatus,
    HoldStatus,
    IdempotencyStatus,
    JobStatus,
    LedgerKind,
    LimitPeriod,
    WebhookStatus,
)

EXPECTED: dict[tuple[str, str], type[StrEnum]] = {
    ("credit_holds", "status"): HoldStatus,
    ("ledger_entries", "kind"): LedgerKind,
    ("generations", "status"): GenerationStatus,
    ("idempotency_keys", "status"): IdempotencyStatus,
    ("jobs", "status"): JobStatus,
    ("api_keys", "limit_period"): LimitPeriod,
    ("webhook_deliveries", "status"): WebhookStatus,
}
# `column IN ('a', 'b', ...)`, as a CHECK's text.
_IN_LIST = re.compile(r"(?P<column>\w+) IN \((?P<values>'[^)]*')\)")


def _allowed(sql: str) -> dict[str, tuple[str, ...]]:
    return {
        match["column"]: tuple(re.findall(r"'([^']*)'", match["values"]))
        for match in _IN_LIST.finditer(sql)
    }


def _enum_values(
    expected: dict[tuple[str, str], type[StrEnum]],
) -> dict[tuple[str, str], tuple[str, ...]]:
    return {key: tuple(member.value for member in enum) for key, enum in expected.items()}


def test_model_check_constraints_allow_exactly_the_enum_values() -> None:
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, CheckConstraint):
                for column, values in _allowed(str(constraint.sqltext)).items():
                    found[(table.name, column)] = values
    assert found == _enum_values(EXPECTED)


def test_migrated_schema_allows_exactly_the_enum_values(tmp_path: Path) -> None:
    path = tmp_path / "statuses.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        found = {
            (table, column): values
            for table, sql in rows
            for column, values in _allowed(sql or "").items()
        }
    assert found == _enum_values(EXPECTED)
