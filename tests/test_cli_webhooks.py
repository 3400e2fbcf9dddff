"""`imagegate tenants webhook-secret NAME [--rotate]` (#16 item 5), in process on a fresh
embedded data dir."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from app.cli import main


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    for name in [name for name in os.environ if name.startswith("IMAGEGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path))

    def invoke(*argv: str, expect: int = 0) -> tuple[str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        captured = capsys.readouterr()
        assert int(exit_info.value.code or 0) == expect, captured
        return captured.out, captured.err

    return invoke


def _json(run: Any, *argv: str, expect: int = 0) -> dict[str, Any]:
    out, _ = run(*argv, "--json", expect=expect)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


def test_created_kept_and_rotated(run: Any) -> None:
    _json(run, "tenants", "create", "acme")
    first = _json(run, "tenants", "webhook-secret", "acme")
    assert list(first) == ["secret"]
    secret = first["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    Webhook(secret)  # a Standard Webhooks secret as the package reads it
    assert _json(run, "tenants", "webhook-secret", "acme") == {"secret": secret}
    rotated = _json(run, "tenants", "webhook-secret", "acme", "--rotate")["secret"]
    assert rotated != secret and rotated.startswith("whsec_")
    assert _json(run, "tenants", "webhook-secret", "acme") == {"secret": rotated}


def test_plain_output_and_an_unknown_tenant(run: Any) -> None:
    run("tenants", "create", "plain")
    out, _ = run("tenants", "webhook-secret", "plain")
    assert out.startswith("secret: whsec_")
    error = _json(run, "tenants", "webhook-secret", "nobody", expect=1)
    assert error["code"] == "not_found" and "nobody" in error["error"]
