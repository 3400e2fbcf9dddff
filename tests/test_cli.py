"""The `imagegate` console script as an operator uses it, on a fresh embedded data dir."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _imagegate(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env["IMAGEGATE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _json(data_dir: Path, *args: str, expect: int = 0) -> dict[str, Any]:
    result = _imagegate(data_dir, *args, "--json")
    assert result.returncode == expect, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # exactly one JSON object
    parsed = json.loads(lines[0])
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-data")


def test_admin_flow_on_the_embedded_default(data_dir: Path) -> None:
    assert _json(data_dir, "tenants", "create", "acme")["tenant"] == "acme"
    created = _json(data_dir, "keys", "create", "--tenant", "acme", "--label", "ci")
    key, prefix = created["key"], created["prefix"]
    assert key.startswith(prefix) and len(key) > 40
    assert _json(data_dir, "credits", "grant", "--tenant", "acme", "25")["balance"] == 25
    assert _json(data_dir, "credits", "balance", "--tenant", "acme")["balance"] == 25
    audit = _json(data_dir, "credits", "audit")
    assert audit["ok"] is True and audit["problems"] == []
    assert _json(data_dir, "keys", "revoke", prefix)["prefix"] == prefix
    limits = _json(data_dir, "tenants", "limits", "acme", "--per-minute", "30")
    assert (limits["rate_limit_per_minute"], limits["key_rate_limit_per_minute"]) == (30, None)

    # The plaintext key is stored nowhere: only its hash and prefix.
    database = sqlite3.connect(data_dir / "imagegate.db")
    dump = "\n".join(database.iterdump())
    database.close()
    assert key not in dump
    assert prefix in dump


def test_errors_are_one_json_object_and_exit_1(data_dir: Path) -> None:
    missing = _json(data_dir, "credits", "balance", "--tenant", "nobody", expect=1)
    assert missing["code"] == "not_found" and "nobody" in missing["error"]
    _json(data_dir, "tenants", "create", "dupe")
    assert "already exists" in _json(data_dir, "tenants", "create", "dupe", expect=1)["error"]
    assert _json(data_dir, "credits", "grant", "--tenant", "dupe", "0", expect=1)["code"] == (
        "invalid_request"
    )


def test_audit_exits_1_naming_the_broken_account(data_dir: Path) -> None:
    _json(data_dir, "tenants", "create", "broken")
    _json(data_dir, "credits", "grant", "--tenant", "broken", "10")
    database = sqlite3.connect(data_dir / "imagegate.db")
    with database:
        database.execute(
            "UPDATE credit_accounts SET balance = 99 WHERE tenant_id = "
            "(SELECT id FROM tenants WHERE name = 'broken')"
        )
    database.close()
    audit = _json(data_dir, "credits", "audit", expect=1)
    assert [p["tenant"] for p in audit["problems"]] == ["broken"]
    human = _imagegate(data_dir, "credits", "audit")
    assert human.returncode == 1 and "broken" in human.stderr
    database = sqlite3.connect(data_dir / "imagegate.db")
    with database:
        database.execute(
            "UPDATE credit_accounts SET balance = 10 WHERE tenant_id = "
            "(SELECT id FROM tenants WHERE name = 'broken')"
        )
    database.close()
    assert _json(data_dir, "credits", "audit")["ok"] is True


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    assert _json(tmp_path, "migrate")["migrated"] is True
    assert _json(tmp_path, "migrate")["migrated"] is True
    assert (tmp_path / "imagegate.db").exists()
