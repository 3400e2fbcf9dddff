"""scripts/stack as a developer runs it: the compose topology without containers.

Started as a subprocess, driven with the `imagegate` CLI (from the env file it writes)
and over HTTP, then stopped with SIGINT; afterwards no process it started is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.stack import read_env_file
from tests.deploy.files import REPO
from tests.support.servers import free_port

SCRIPT = REPO / "scripts" / "stack"
START_TIMEOUT = 180.0


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    root: Path
    log: Path
    gateway_url: str
    s3_port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "AWS_"))}
        return {**base, **read_env_file(self.root / "env")}

    def cli(self, *args: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", *args, "--json"],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        parsed = json.loads(result.stdout)
        assert isinstance(parsed, dict)
        return parsed


def _children(pid: int) -> set[int]:
    """Direct children of `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _mentioning(text: str) -> set[int]:
    """Processes whose command line mentions `text` (e.g. the state directory)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.add(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has already exited


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _as_documented() -> dict[str, str]:
    """The environment of the README's steps: the clone's .venv exists but is not
    activated, so `python3` (the script's interpreter) is the one the venv was made from,
    without the project's dependencies. The script must find and use the venv itself."""
    venv_python = REPO / ".venv" / "bin" / "python"
    if not venv_python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{venv_python} is missing; .ci/run creates it")
        pytest.skip(f"{venv_python} is missing (python3 -m venv .venv && pip install -e '.[dev]')")
    base = Path(os.path.realpath(venv_python)).parent  # the interpreter the venv came from
    activated = {str(REPO / ".venv" / "bin"), str(Path(sys.prefix) / "bin")}
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    path = [str(base), *(entry for entry in path if entry not in activated)]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "AWS_")) and k not in ("VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_python3_as_documented_is_not_the_venv() -> None:
    """The premise of the fixture below: the documented run starts outside the venv."""
    env = _as_documented()
    probe = subprocess.run(
        ["python3", "-c", "import sys; print(sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(probe.stdout.strip()).resolve() != (REPO / ".venv").resolve()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    base = tmp_path_factory.mktemp("stack")
    root, log = base / "state", base / "stack.log"
    gateway_port, s3_port = free_port(), free_port()
    env = _as_documented()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SCRIPT, "--data-dir", root, "--port", str(gateway_port), "--s3-port", str(s3_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=base,
        )
    stack = RunningStack(process, root, log, f"http://127.0.0.1:{gateway_port}", s3_port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"scripts/stack exited:\n{stack.output()}"
            assert time.monotonic() < deadline, f"not up in time:\n{stack.output()}"
            # Up means: the banner is printed (it follows the gateway's first /healthz).
            if "local stack is up" in stack.output():
                break
            time.sleep(0.5)
        assert httpx.get(f"{stack.gateway_url}/healthz", timeout=5).status_code == 200
        yield stack
    finally:
        if process.poll() is None:  # a failed test: stop it as a developer would
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.slow
def test_the_script_is_executable_and_prints_how_to_use_the_stack(running: RunningStack) -> None:
    assert os.access(SCRIPT, os.X_OK)
    output = running.output()
    assert running.gateway_url in output
    assert f"http://127.0.0.1:{running.s3_port}" in output
    assert "imagegate tenants create" in output and "/admin/v1" in output
    health = httpx.get(f"{running.gateway_url}/healthz").json()
    assert health["rateLimiter"].startswith("redis"), health  # Valkey, not in process
    ready = httpx.get(f"{running.gateway_url}/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "storage", "redis"}


@pytest.mark.slow
def test_cli_and_http_against_the_stack_then_sigint_stops_everything(
    running: RunningStack,
) -> None:
    # Admin work with the CLI and the env file the script wrote, as the README shows.
    env = running.env()
    assert env["IMAGEGATE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert running.cli("tenants", "create", "acme")["tenant"] == "acme"
    key = running.cli("keys", "create", "--tenant", "acme")["key"]
    assert running.cli("credits", "grant", "--tenant", "acme", "100")["balance"] == 100

    response = httpx.post(
        f"{running.gateway_url}/api/v1/generate-image",
        json={"prompt": "A red kite over the dunes", "aspectRatio": "16:9"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-emulated"] == "true"
    (image,) = response.json()["images"]
    url = httpx.URL(image["url"])
    assert (url.host, url.port) == ("127.0.0.1", running.s3_port)  # presigned S3, not /files
    assert "X-Amz-Signature" in str(url)
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/webp"
    assert len(fetched.content) == image["fileSize"]
    assert running.cli("credits", "balance", "--tenant", "acme")["balance"] == 96

    # The admin API is on, with the token from the env file.
    tenants = httpx.get(
        f"{running.gateway_url}/admin/v1/tenants/acme",
        headers={"Authorization": f"Bearer {env['IMAGEGATE_ADMIN_TOKEN']}"},
    )
    assert tenants.status_code == 200 and tenants.json()["balance"] == 96

    # Every process of the stack: its children (gateway, weed, Valkey), whatever names the
    # state directory (PostgreSQL), and their children (Postgres' workers).
    started = _children(running.process.pid) | _mentioning(str(running.root))
    started |= {child for pid in started for child in _children(pid)}
    commands = " ".join(_command(pid) for pid in started)
    for service in ("app.cli serve", "weed server", "valkey-server", "postgres -D"):
        assert service in commands, f"{service} not found among {commands}"

    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(timeout=90) == 0, running.output()
    output = running.output()
    assert "SIGINT: stopping the stack" in output and output.rstrip().endswith("[stack] stopped")
    left = {pid: _command(pid) for pid in started if _alive(pid)}
    assert not left, f"still running after SIGINT: {left}"
    gateway_port = int(running.gateway_url.rsplit(":", 1)[1])
    assert not _port_open(gateway_port) and not _port_open(running.s3_port)
