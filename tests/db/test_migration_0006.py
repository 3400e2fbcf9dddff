"""Migration 0006 (webhooks) on a SQLite database holding 0005's rows: tenants keep
working without a secret, the new tables take deliveries, and it downgrades cleanly."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from alembic import command

from app.db.migrate import alembic_config, upgrade


def test_0006_upgrades_and_downgrades_with_data(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0005")
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'old-co', '2026-12-01')"
        )
    upgrade(url)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA foreign_keys = ON")
        assert db.execute("SELECT name, webhook_secret FROM tenants").fetchall() == [
            ("old-co", None)
        ]
        db.execute(
            "INSERT INTO jobs (id, tenant_id, status, request_json, attempts, images_done,"
            " images_total, created_at) VALUES ('j1', 't1', 'queued', '{}', 0, 0, 1, 'now')"
        )
        db.execute(
            "INSERT INTO webhook_deliveries (id, job_id, tenant_id, url, base_url, status,"
            " attempts, created_at, updated_at) VALUES ('d1', 'j1', 't1', 'https://x/',"
            " 'http://gw', 'pending', 0, 'now', 'now')"
        )
        db.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code)"
            " VALUES ('d1', 1, 'now', 500)"
        )
        for bad in (
            # A second record of one attempt, an unknown status, a second delivery per job.
            "INSERT INTO webhook_attempts (delivery_id, attempt, at) VALUES ('d1', 1, 'now')",
            "UPDATE webhook_deliveries SET status = 'lost'",
            "INSERT INTO webhook_deliveries (id, job_id, tenant_id, url, base_url, status,"
            " attempts, created_at, updated_at) VALUES ('d2', 'j1', 't1', 'https://x/',"
            " 'http://gw', 'pending', 0, 'now', 'now')",
        ):
            try:
                db.execute(bad)
            except sqlite3.IntegrityError:
                continue
            raise AssertionError(f"accepted: {bad}")
    command.downgrade(alembic_config(url), "0005")
    with closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(tenants)")}
    assert "webhook_deliveries" not in tables and "webhook_attempts" not in tables
    assert "webhook_secret" not in columns
