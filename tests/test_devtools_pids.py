"""The dev stack's services name their server process (`pid`), which bench/stack.py
measures the CPU of: None before start and after stop, while running the live process
that serves this service's own data directory."""

from __future__ import annotations

import time
from pathlib import Path

from devtools.postgres import Postgres
from devtools.processes import free_port
from devtools.seaweedfs import SeaweedFS
from devtools.valkey import Valkey


def _cmdline(pid: int) -> str:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """No such process, or only its zombie left (not reaped by its non-child parent yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_postgres_pid_is_the_postmaster_of_its_data_directory(tmp_path: Path) -> None:
    postgres = Postgres(tmp_path / "pg")
    assert postgres.pid is None
    postgres.start()
    try:
        pid = postgres.pid
        assert pid is not None
        command = _cmdline(pid)
        assert "postgres" in command
        assert str(tmp_path / "pg") in command
    finally:
        postgres.stop()
    assert postgres.pid is None
    assert _gone(pid)


def test_valkey_pid_is_its_server_process(tmp_path: Path) -> None:
    valkey = Valkey(tmp_path / "valkey", "127.0.0.1")
    assert valkey.pid is None
    valkey.start()
    try:
        pid = valkey.pid
        assert pid is not None
        assert "valkey-server" in _cmdline(pid)
    finally:
        valkey.stop()
    assert valkey.pid is None
    assert _gone(pid)


def test_seaweedfs_pid_is_its_weed_server(tmp_path: Path) -> None:
    s3 = SeaweedFS(tmp_path / "s3", "127.0.0.1", free_port(), "bench", "bench-secret-key")
    assert s3.pid is None
    s3.start("probe")
    try:
        pid = s3.pid
        assert pid is not None
        command = _cmdline(pid)
        assert " server " in command
        assert f"-dir={tmp_path / 's3' / 'data'}" in command
    finally:
        s3.stop()
    assert s3.pid is None
    assert _gone(pid)
