"""`imagegate keys ...` with per-key limits and policies (#14 item 3), in process on a
fresh embedded data dir; every command prints one JSON object with --json."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.credits import ledger
from app.db.engine import create_engine, create_sessionmaker
from app.errors import KeyCreditLimit
from app.settings import Settings
from app.tenants import service as tenants

MODEL = "google/gemini-2.5-flash-image"
OTHER = "openai/gpt-image-1"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    for name in [name for name in os.environ if name.startswith("IMAGEGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path))

    def invoke(*argv: str, expect: int = 0) -> dict[str, Any]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--json"])
        out = capsys.readouterr().out
        assert int(exit_info.value.code or 0) == expect, out
        lines = out.strip().splitlines()
        assert len(lines) == 1, out
        parsed: dict[str, Any] = json.loads(lines[0])
        return parsed

    return invoke


async def _reserve_with(prefix: str, amount: int) -> None:
    """A hold taken with the key, as a generation takes it (committed)."""
    engine = create_engine(Settings().resolved_database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            key = await tenants.get_key(session, prefix)
            await ledger.reserve(
                session,
                key.tenant_id,
                amount,
                generation_id=f"g-{amount}",
                ttl=timedelta(seconds=600),
                api_key_id=key.id,
            )
    finally:
        await engine.dispose()


def test_create_show_update_list_and_rotate(run: Any) -> None:
    run("tenants", "create", "acme")
    run("credits", "grant", "--tenant", "acme", "1000")
    created = run(
        "keys", "create", "--tenant", "acme", "--label", "app", "--credit-limit", "40",
        "--limit-period", "day", "--models", f"{MODEL},{OTHER}",
        "--expires-at", "2099-01-01T00:00:00Z",
    )  # fmt: skip
    prefix = created["prefix"]
    assert created["key"].startswith(prefix) and created["note"]
    assert (created["tenant"], created["label"]) == ("acme", "app")
    assert (created["creditLimit"], created["limitPeriod"]) == (40, "day")
    assert created["models"] == [MODEL, OTHER]
    assert created["expiresAt"] == "2099-01-01T00:00:00.000Z"

    asyncio.run(_reserve_with(prefix, 15))
    shown = run("keys", "show", prefix)
    assert (shown["spent"], shown["remaining"], shown["active"]) == (15, 25, True)

    updated = run(
        "keys", "update", prefix, "--credit-limit", "none", "--models", "all",
        "--expires-at", "none",
    )  # fmt: skip
    assert (updated["creditLimit"], updated["remaining"], updated["models"]) == (None, None, None)
    assert updated["expiresAt"] is None and updated["spent"] == 15
    # Below what was already spent this period: refused, naming the field.
    refused = run("keys", "update", prefix, "--credit-limit", "10", expect=1)
    assert refused["code"] == "invalid_request" and refused["field"] == "creditLimit"
    run("keys", "update", prefix, "--credit-limit", "20")

    rotated = run("keys", "rotate", prefix, "--grace-seconds", "3600")
    new_prefix = rotated["prefix"]
    assert new_prefix != prefix and rotated["rotatedFrom"] == prefix
    assert (rotated["creditLimit"], rotated["limitPeriod"], rotated["spent"]) == (20, "day", 15)
    old = run("keys", "show", prefix)
    assert old["active"] is True and old["revokedAt"] is not None  # the grace period runs
    # The spend is shared: the new key has 5 left, whichever key spends it.
    with pytest.raises(KeyCreditLimit):
        asyncio.run(_reserve_with(new_prefix, 6))
    listed = run("keys", "list", "--tenant", "acme")
    assert [key["prefix"] for key in listed["keys"]] == [new_prefix, prefix]
    audit = run("credits", "audit")
    assert audit["ok"] is True and audit["key_spend_rows"] == 1, audit

    now = run("keys", "rotate", new_prefix)
    assert run("keys", "show", new_prefix)["active"] is False
    assert run("keys", "show", now["prefix"])["spent"] == 15


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--credit-limit", "-1"], "--credit-limit"),
        (["--credit-limit", "ten"], "--credit-limit"),
        (["--limit-period", "week"], "--limit-period"),
        (["--expires-at", "tomorrow"], "--expires-at"),
        (["--expires-at", "2099-01-01T00:00:00"], "--expires-at"),  # no time zone
        (["--models", "no/such-model"], "models"),
        (["--expires-at", "2000-01-01T00:00:00Z"], "expiresAt"),  # in the past
    ],
)
def test_bad_policy_flags_are_one_json_error_naming_the_flag(
    run: Any, argv: list[str], field: str
) -> None:
    run("tenants", "create", "bad")
    error = run("keys", "create", "--tenant", "bad", *argv, expect=1)
    assert error["code"] == "invalid_request"
    assert field in error["error"]
    assert run("keys", "list", "--tenant", "bad")["keys"] == []  # nothing was made


def test_show_and_rotate_of_an_unknown_prefix_are_not_found(run: Any) -> None:
    assert run("keys", "show", "ig_nothere", expect=1)["code"] == "not_found"
    assert run("keys", "rotate", "ig_nothere", expect=1)["code"] == "not_found"
