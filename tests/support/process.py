"""The gateway as a real OS process, for crash, fault, replica and log tests.

`python -m app.cli serve --emulate` runs with a controlled environment (nothing inherited
from IMAGEGATE_*, AWS_* or provider keys), its stdout and stderr go to a file, and it can
be killed with SIGKILL, terminated and restarted on the same port. Admin work goes
through the `imagegate` CLI with the same environment, as an operator would do it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from tests.support.gateway import create_database
from tests.support.servers import free_port

__all__ = [
    "CliError",
    "GatewayProcess",
    "ProcessTenant",
    "create_tenant",
    "fresh_database",
    "gateway_env",
    "imagegate",
    "run_in_session",
    "spawn_gateway",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
FAULTS_PATH = "/emulators/gemini/_emulator/faults"
EMULATOR_STATE_PATH = "/emulators/gemini/_emulator/state"
# Emulator fault control inside a gateway needs its admin token.
ADMIN_TOKEN = "process-test-admin-token-0123456789"
# Variables a developer's shell may carry that would change what the gateway does.
_INHERITED_OUT = ("IMAGEGATE_", "AWS_", "GEMINI_", "GOOGLE_", "OPENAI_", "BFL_")

T = TypeVar("T")


def gateway_env(
    data_dir: Path,
    *,
    database_url: str | None = None,
    s3: Any | None = None,
    bucket: str | None = None,
    redis_url: str | None = None,
    **settings: object,
) -> dict[str, str]:
    """The environment of a gateway (and of its CLI); `settings` are Settings field names.

    `s3` is a tests.support.services.S3Service; credentials reach boto3 the standard
    AWS way, as in production.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_OUT)}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "IMAGEGATE_DATA_DIR": str(data_dir),
            "IMAGEGATE_URL_SIGNING_SECRET": "process-test-signing-secret",
            "IMAGEGATE_RETRY_BASE_DELAY_SECONDS": "0.01",
            "IMAGEGATE_RETRY_MAX_DELAY_SECONDS": "0.05",
            "IMAGEGATE_SWEEP_INTERVAL_SECONDS": "0.5",
            "IMAGEGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            # No load balancer to wait for: SIGTERM (terminate, restart) shuts down now;
            # tests/test_serve.py sets a delay to watch the drain.
            "IMAGEGATE_DRAIN_DELAY_SECONDS": "0",
        }
    )
    if database_url is not None:
        env["IMAGEGATE_DATABASE_URL"] = database_url
    if s3 is not None:
        if bucket is None:
            raise ValueError("an S3 gateway needs a bucket")
        env.update(
            {
                "IMAGEGATE_S3_BUCKET": bucket,
                "IMAGEGATE_S3_ENDPOINT_URL": s3.endpoint_url,
                "IMAGEGATE_S3_REGION": s3.region,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            }
        )
    if redis_url is not None:
        env["IMAGEGATE_REDIS_URL"] = redis_url
    for name, value in settings.items():
        env[f"IMAGEGATE_{name.upper()}"] = str(value)
    return env


# --------------------------------------------------------------------------- CLI


class CliError(AssertionError):
    pass


def imagegate(env: dict[str, str], *args: str, expect: int | None = 0) -> dict[str, Any]:
    """Run `imagegate <args> --json` and return its one JSON object.

    `expect` is the exit status required (None: any); the result carries it as "_exit".
    """
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    if expect is not None and result.returncode != expect:
        raise CliError(
            f"imagegate {' '.join(args)} exited {result.returncode} (expected {expect}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    lines = result.stdout.strip().splitlines()
    if len(lines) != 1:
        raise CliError(f"expected one JSON line from imagegate {args}, got:\n{result.stdout}")
    parsed = json.loads(lines[0])
    assert isinstance(parsed, dict)
    parsed["_exit"] = result.returncode
    return parsed


@dataclass(frozen=True)
class ProcessTenant:
    name: str
    id: str
    key: str
    prefix: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def create_tenant(
    env: dict[str, str], name: str, *, credits: int = 0, per_minute: int | None = None
) -> ProcessTenant:
    """A tenant, one key and a credit grant, made with the CLI."""
    tenant = imagegate(env, "tenants", "create", name)
    key = imagegate(env, "keys", "create", "--tenant", name)
    if credits:
        imagegate(env, "credits", "grant", "--tenant", name, str(credits))
    if per_minute is not None:
        imagegate(env, "tenants", "limits", name, "--per-minute", str(per_minute))
    return ProcessTenant(name=name, id=tenant["id"], key=key["key"], prefix=key["prefix"])


# --------------------------------------------------------------------------- database


def fresh_database(server_url: str) -> str:
    """A new, migrated database on the Postgres server at `server_url`."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        url = pool.submit(asyncio.run, create_database(server_url)).result()
    upgrade(url)
    return url


def run_in_session(database_url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction on the gateway's database, from sync code
    (a private event loop in a private thread, so a running loop does not matter)."""

    async def main() -> T:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


# --------------------------------------------------------------------------- process


class GatewayProcess:
    """One `imagegate serve --emulate` process on a fixed loopback port (`emulate=False`:
    the providers configured in `env`, as an operator runs it)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        port: int | None = None,
        emulate: bool = True,
        workers: int = 1,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.emulate = emulate
        self.workers = workers
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "not running"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        """Launch and wait until /healthz answers."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Spawn the process without waiting for it (start several, then wait_ready)."""
        if self.running:
            raise RuntimeError("already running")
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(["--emulate"] if self.emulate else []),
            *(["--workers", str(self.workers)] if self.workers > 1 else []),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"gateway exited during startup:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready in {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self._signal(signal.SIGKILL)

    def terminate(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful: uvicorn drains, logs flush); SIGKILL if it hangs."""
        self._signal(signal.SIGTERM, timeout)

    def send_signal(self, signum: int) -> None:
        """Signal the `imagegate serve` process alone (as Kubernetes signals PID 1)."""
        assert self._process is not None, "not running"
        self._process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Its exit status, once it has exited by itself within `timeout` seconds."""
        assert self._process is not None, "not running"
        return self._process.wait(timeout=timeout)

    def restart(self, timeout: float = 60.0) -> None:
        if self.running:
            self.terminate()
        self.start(timeout)

    def _signal(self, signum: int, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def logs(self) -> bytes:
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    def log_tail(self, lines: int = 60) -> str:
        text = self.logs().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # Emulator fault control (the emulator lives inside this process).

    @property
    def _control_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env.get('IMAGEGATE_ADMIN_TOKEN', '')}"}

    def set_faults(self, *faults: dict[str, Any]) -> None:
        url = f"{self.base_url}{FAULTS_PATH}"
        httpx.delete(url, headers=self._control_auth, timeout=10).raise_for_status()
        if faults:
            response = httpx.post(
                url, json={"faults": list(faults)}, headers=self._control_auth, timeout=10
            )
            response.raise_for_status()

    def emulator_calls(self) -> int:
        response = httpx.get(
            f"{self.base_url}{EMULATOR_STATE_PATH}", headers=self._control_auth, timeout=10
        )
        response.raise_for_status()
        return int(response.json()["calls"])

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/healthz", timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def spawn_gateway(
    tmp_path: Path,
) -> Iterator[Callable[[dict[str, str]], GatewayProcess]]:
    """A factory of started gateway processes; every one is stopped after the test."""
    started: list[GatewayProcess] = []

    def spawn(env: dict[str, str]) -> GatewayProcess:
        gateway = GatewayProcess(env, tmp_path / f"gateway-{len(started)}.log")
        started.append(gateway)
        return gateway.start()

    try:
        yield spawn
    finally:
        for gateway in started:
            gateway.terminate()
