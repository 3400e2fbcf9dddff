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

from app.api.admin import GrantCredits
from app.cli import main
from app.credits import ledger
from app.credits.ledger import MAX_GRANT


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_errors_are_one_json_object_and_exit_1(data_dir: Path) -> None:
    missing = _json(data_dir, "credits", "balance", "--tenant", "nobody", expect=1)
    assert missing["code"] == "not_found" and "nobody" in missing["error"]
    _json(data_dir, "tenants", "create", "dupe")
    assert "already exists" in _json(data_dir, "tenants", "create", "dupe", expect=1)["error"]
    assert _json(data_dir, "credits", "grant", "--tenant", "dupe", "0", expect=1)["code"] == (
        "invalid_request"
    )


@pytest.mark.slow
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


@pytest.mark.slow
def test_migrate_is_idempotent(tmp_path: Path) -> None:
    assert _json(tmp_path, "migrate")["migrated"] is True
    assert _json(tmp_path, "migrate")["migrated"] is True
    assert (tmp_path / "imagegate.db").exists()


def test_grants_are_bounded_like_the_admin_api(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _embedded_env(monkeypatch, data_dir)

    def run(*argv: str, expect: int = 0) -> dict[str, Any]:
        status, out, err = _main([*argv, "--json"], capsys)
        assert status == expect, out + err
        parsed: dict[str, Any] = json.loads(out)
        return parsed

    # 2**63-1 and then 1 used to overflow SQLite's balance into a float, and every
    # `credits audit` after that crashed.
    run("tenants", "create", "bounded")
    huge = run("credits", "grant", "--tenant", "bounded", str(2**63 - 1), expect=1)
    assert huge["code"] == "invalid_request"
    assert f"amount must be an integer from 1 to {MAX_GRANT}" in huge["error"]
    over = run("credits", "grant", "--tenant", "bounded", str(MAX_GRANT + 1), expect=1)
    assert over["code"] == "invalid_request"
    assert run("credits", "grant", "--tenant", "bounded", str(MAX_GRANT))["balance"] == MAX_GRANT
    assert run("credits", "grant", "--tenant", "bounded", "1")["balance"] == MAX_GRANT + 1
    assert run("credits", "audit")["ok"] is True


def _embedded_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    for name in [name for name in os.environ if name.startswith("IMAGEGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(data_dir))


def test_the_cli_and_the_admin_api_share_one_bound() -> None:
    amount = GrantCredits.model_json_schema()["properties"]["amount"]
    assert amount["maximum"] == ledger.MAX_GRANT == MAX_GRANT


# Each makes the CLI fail in another way; none may end in a traceback.
_FAILURES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("not a number", ["credits", "grant", "--tenant", "acme", "abc"], {}, "invalid_request"),
    ("digits int() refuses", ["credits", "grant", "--tenant", "acme", "²"], {}, "invalid_request"),
    (
        "too many digits",
        ["credits", "grant", "--tenant", "acme", "9" * 5000],
        {},
        "invalid_request",
    ),
    ("missing argument", ["credits", "grant", "--tenant", "acme"], {}, "invalid_request"),
    (
        "unknown option",
        ["credits", "balance", "--tenant", "acme", "--bogus"],
        {},
        "invalid_request",
    ),
    ("unknown command", ["credits", "refund", "--tenant", "acme"], {}, "invalid_request"),
    (
        "grant over the bound",
        ["credits", "grant", "--tenant", "acme", str(2**63)],
        {},
        "invalid_request",
    ),
    ("limit of 0", ["tenants", "limits", "acme", "--per-minute", "0"], {}, "invalid_request"),
    (
        "limit too big",
        ["tenants", "limits", "acme", "--key-per-minute", "1" * 30],
        {},
        "invalid_request",
    ),
    ("unknown tenant", ["credits", "balance", "--tenant", "nobody"], {}, "not_found"),
    ("unknown key prefix", ["keys", "revoke", "ig_nothing"], {}, "not_found"),
    ("bad tenant name", ["tenants", "create", "no spaces"], {}, "invalid_request"),
    (
        "database unreachable",
        ["credits", "balance", "--tenant", "acme"],
        {"IMAGEGATE_DATABASE_URL": "postgresql+asyncpg://u:secret-pw@127.0.0.1:1/x"},
        "dependency_unavailable",
    ),
    (
        "data dir unusable",
        ["credits", "audit"],
        {"IMAGEGATE_DATA_DIR": "/proc/imagegate-cannot-be-here"},
        "dependency_unavailable",
    ),
    ("bad setting", ["credits", "audit"], {"IMAGEGATE_URL_TTL_SECONDS": "5"}, "invalid_settings"),
]


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "env", "code"),
    [pytest.param(argv, env, code, id=name) for name, argv, env, code in _FAILURES],
)
def test_every_cli_error_is_one_json_object_or_one_line(
    argv: list[str],
    env: dict[str, str],
    code: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _embedded_env(monkeypatch, data_dir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    status, out, err = _main([*argv, "--json"], capsys)
    assert status == 1, (out, err)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    error = json.loads(lines[0])
    assert error["code"] == code, error
    assert isinstance(error["error"], str) and error["error"]
    assert "secret-pw" not in out + err

    status, out, err = _main(argv, capsys)
    assert status == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("imagegate: error: ") and "Traceback" not in err
    assert "secret-pw" not in err
