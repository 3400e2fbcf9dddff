"""The ledger invariant, checked for every account.

1. An account's balance equals the sum of its entries.
2. Every hold has exactly one `hold` entry of -amount and is open (nothing else),
   captured (one `capture` entry returning amount - captured, captured > 0) or
   released (one `release` entry returning amount, captured == 0): settled exactly once.
3. Each key's spend row per period equals what the holds taken from it in that period
   still take: the captured credits of settled ones and the whole amount of open ones
   (released holds give everything back), and the current period's spend is never above
   the key's limit.

`tenant_ids` limits the audit to those accounts, so a test checks only the tenants it made
(another test may break one of its own on purpose); the CLI audits every account.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.credits.key_spend import period_start
from app.credits.ledger import entry_sums
from app.db.models import (
    ApiKey,
    ApiKeySpend,
    CreditAccount,
    CreditHold,
    LedgerEntry,
    Tenant,
    utcnow,
)
from app.db.statuses import HoldStatus, LedgerKind


@dataclass(frozen=True, slots=True)
class AuditProblem:
    tenant_id: str
    tenant: str
    problem: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    accounts: int
    holds: int
    problems: tuple[AuditProblem, ...]
    spend_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


async def audit_ledger(
    session: AsyncSession, tenant_ids: Collection[str] | None = None
) -> AuditReport:
    scope = None if tenant_ids is None else frozenset(tenant_ids)

    def within(column: QueryableAttribute[str]) -> ColumnElement[bool]:
        return true() if scope is None else column.in_(scope)

    names = {
        row.id: row.name
        for row in await session.execute(select(Tenant.id, Tenant.name).where(within(Tenant.id)))
    }
    problems: list[AuditProblem] = []

    def report(tenant_id: str, problem: str) -> None:
        problems.append(AuditProblem(tenant_id, names.get(tenant_id, "?"), problem))

    sums = await entry_sums(session, scope)
    balances = {
        row.tenant_id: int(row.balance)
        for row in await session.execute(
            select(CreditAccount.tenant_id, CreditAccount.balance).where(
                within(CreditAccount.tenant_id)
            )
        )
    }
    for tenant_id, balance in balances.items():
        total = sums.get(tenant_id, 0)
        if balance != total:
            report(tenant_id, f"balance {balance} != sum of entries {total}")
    for tenant_id in sums.keys() - balances.keys():
        report(tenant_id, "ledger entries without an account")

    # (hold_id, kind) -> (count, sum of amounts)
    per_hold: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    rows = await session.execute(
        select(
            LedgerEntry.hold_id,
            LedgerEntry.kind,
            func.count(),
            func.coalesce(func.sum(LedgerEntry.amount), 0),
        )
        .where(
            LedgerEntry.kind.in_((LedgerKind.HOLD, LedgerKind.CAPTURE, LedgerKind.RELEASE)),
            within(LedgerEntry.tenant_id),
        )
        .group_by(LedgerEntry.hold_id, LedgerEntry.kind)
    )
    for hold_id, kind, count, total in rows:
        if hold_id is None:
            report("?", f"{count} {kind} entries reference no hold")
            continue
        per_hold[hold_id][kind] = (int(count), int(total))

    holds = (await session.scalars(select(CreditHold).where(within(CreditHold.tenant_id)))).all()
    for hold in holds:
        problem = _hold_problem(hold, per_hold.pop(hold.id, {}))
        if problem:
            report(hold.tenant_id, f"hold {hold.id}: {problem}")
    for hold_id in per_hold:
        report("?", f"entries reference missing hold {hold_id}")

    spend_rows = await _audit_keys(session, within, report)
    return AuditReport(
        accounts=len(balances), holds=len(holds), problems=tuple(problems), spend_rows=spend_rows
    )


async def _audit_keys(
    session: AsyncSession,
    within: Callable[[QueryableAttribute[str]], ColumnElement[bool]],
    report: Callable[[str, str], None],
) -> int:
    keys = (await session.scalars(select(ApiKey).where(within(ApiKey.tenant_id)))).all()
    by_id = {key.id: key for key in keys}
    recorded: dict[tuple[str, datetime], int] = {
        (row.spend_key_id, row.period_start): int(row.spent)
        for row in await session.scalars(
            select(ApiKeySpend)
            .join(ApiKey, ApiKey.id == ApiKeySpend.spend_key_id)
            .where(within(ApiKey.tenant_id))
        )
    }
    still_taken = case(
        (CreditHold.status == HoldStatus.OPEN, CreditHold.amount),
        (CreditHold.status == HoldStatus.CAPTURED, CreditHold.captured),
        else_=0,
    )
    rows = await session.execute(
        select(CreditHold.spend_key_id, CreditHold.spend_period, func.sum(still_taken))
        .where(CreditHold.spend_key_id.is_not(None), within(CreditHold.tenant_id))
        .group_by(CreditHold.spend_key_id, CreditHold.spend_period)
    )
    expected = {(key_id, period): int(total or 0) for key_id, period, total in rows}

    def owner(spend_key_id: str) -> tuple[str, str]:
        key = by_id.get(spend_key_id)
        return (key.tenant_id, key.prefix) if key else ("?", spend_key_id)

    for (spend_key_id, period), spent in sorted(recorded.items()):
        taken = expected.pop((spend_key_id, period), 0)
        if spent != taken:
            tenant_id, prefix = owner(spend_key_id)
            report(
                tenant_id,
                f"key {prefix} period {period.date().isoformat()}: spent {spent} != {taken} "
                "taken by its holds",
            )
    for spend_key_id, period in expected:
        tenant_id, prefix = owner(spend_key_id)
        report(
            tenant_id, f"key {prefix} period {period.date().isoformat()}: holds but no spend row"
        )
    now = utcnow()
    for key in keys:
        if key.credit_limit is None:
            continue
        spent = recorded.get((key.spend_key_id, period_start(key.limit_period, now)), 0)
        if spent > key.credit_limit:
            report(
                key.tenant_id, f"key {key.prefix}: spent {spent} above its limit {key.credit_limit}"
            )
    return len(recorded)


def _hold_problem(hold: CreditHold, entries: dict[str, tuple[int, int]]) -> str | None:
    found = entries.get(LedgerKind.HOLD)
    if found != (1, -hold.amount):
        return f"expected one hold entry of {-hold.amount}, found {found}"
    capture, release = entries.get(LedgerKind.CAPTURE), entries.get(LedgerKind.RELEASE)
    if hold.status == HoldStatus.OPEN:
        if capture or release:
            return "open but has a settlement entry"
    elif hold.status == HoldStatus.CAPTURED:
        expected = (1, hold.amount - hold.captured)
        if hold.captured <= 0 or capture != expected or release:
            return f"captured {hold.captured}: expected capture entry {expected}, found {capture}"
    elif hold.status == HoldStatus.RELEASED:
        if hold.captured != 0 or release != (1, hold.amount) or capture:
            return f"released: expected one release entry of {hold.amount}, found {release}"
    else:
        return f"unknown status {hold.status!r}"
    return None
