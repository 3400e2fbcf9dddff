"""The real network: emulators in their own processes and a gateway that is not emulated.

Each emulator runs as `uvicorn --factory app.emulators.<name>:create_<name>_emulator` on a
free loopback port, with its fault control open (a standalone emulator). The gateway is an
`imagegate serve` process without `--emulate`, configured exactly as an operator would
configure real providers (base URLs and fake API keys through IMAGEGATE_* settings), so the
real httpx pools, sockets and timeouts are in the path. Tests reach the database through
their own engine (tenants, balances, the ledger audit) and read the gateway's memory from
/proc.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.credits import ledger
from app.credits.audit import audit_ledger
from app.emulators.images import synthesize_png
from app.tenants import service as tenants
from tests.support.gateway import TenantHandle
from tests.support.process import REPO_ROOT, GatewayProcess, gateway_env, run_in_session
from tests.support.servers import free_port

__all__ = [
    "EmulatorProcess",
    "NetworkGateway",
    "SpyServer",
    "emulated_gateway",
    "network_gateway_factory",
    "upstream_emulators",
]

PROVIDERS = ("gemini", "openai", "bfl", "automatic1111")
# The catalog model each provider is driven through, and its price per image.
MODELS = {
    "gemini": ("google/gemini-2.5-flash-image", 4),
    "openai": ("openai/gpt-image-1", 10),
    "bfl": ("bfl/flux-kontext-pro", 5),
    "automatic1111": ("automatic1111/sd-xl", 2),
}
# Scaled-down timing of the reproduction (10 s attempt, 25 s deadline, 30 s delay);
# an attempt still fits a healthy 4-image call on a loaded 2-core machine.
ATTEMPT_TIMEOUT = 1.5
DEADLINE = 3.0
# A request ends within this long after its deadline (measured by the client).
DEADLINE_SLACK = 2.0
# Every upstream body above this is refused (the gateway's IMAGEGATE_UPSTREAM_MAX_RESPONSE_BYTES).
UPSTREAM_BODY_CAP = 16 * 1024 * 1024


class EmulatorProcess:
    """One emulator (gemini, openai, bfl or automatic1111) as its own uvicorn server process."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        """What the gateway's `<provider>_base_url` setting points at."""
        return self.base_url + ("/v1" if self.name == "openai" else "")

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"app.emulators.{self.name}:create_{self.name}_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} emulator exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/_emulator/state", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} emulator not ready in {timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_bytes().decode(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # Fault control over HTTP, as for any emulator in another process.

    def set_faults(self, *faults: dict[str, Any]) -> None:
        """Replace the pending faults with `faults` (none: clear them)."""
        httpx.delete(f"{self.base_url}/_emulator/faults", timeout=10).raise_for_status()
        if faults:
            response = httpx.post(
                f"{self.base_url}/_emulator/faults", json={"faults": list(faults)}, timeout=10
            )
            response.raise_for_status()

    def calls(self) -> int:
        response = httpx.get(f"{self.base_url}/_emulator/state", timeout=10)
        response.raise_for_status()
        return int(response.json()["calls"])


@dataclass
class NetworkGateway:
    """A started, non-emulated gateway process and the emulators it is pointed at."""

    process: GatewayProcess
    data_dir: Path
    emulators: dict[str, EmulatorProcess]
    database_url: str
    _tenants: list[TenantHandle] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def client(self, timeout: float = 60.0, connections: int = 200) -> httpx.AsyncClient:
        # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout, so a
        # request never races the server closing the connection it was sent on.
        limits = httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=1
        )
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits)

    def new_tenant(self, credits: int) -> TenantHandle:
        async def work(session: Any) -> TenantHandle:
            tenant = await tenants.create_tenant(session, f"net-{uuid.uuid4().hex[:12]}")
            key = await tenants.create_key(session, tenant, "network test")
            await ledger.grant(session, tenant.id, credits, note="network test grant")
            return TenantHandle(tenant.name, tenant.id, key.plaintext)

        return run_in_session(self.database_url, work)

    def balance(self, tenant: TenantHandle) -> int:
        async def work(session: Any) -> int:
            return await ledger.get_balance(session, tenant.id)

        return run_in_session(self.database_url, work)

    def audit_ok(self) -> bool:
        async def work(session: Any) -> bool:
            return (await audit_ledger(session)).ok

        return run_in_session(self.database_url, work)

    def stored_files(self) -> list[Path]:
        images = self.data_dir / "images"
        return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []

    # Memory of the gateway process, from the kernel.

    def reset_peak_rss(self) -> None:
        """Start a new high-water mark (Linux: writing 5 to clear_refs resets VmHWM)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        return self._status_kib("VmHWM") * 1024

    def rss(self) -> int:
        return self._status_kib("VmRSS") * 1024

    def _status_kib(self, name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
        raise LookupError(name)


@contextmanager
def emulated_gateway(data_dir: Path) -> Iterator[NetworkGateway]:
    """An `imagegate serve --emulate` process (embedded database and images under
    `data_dir`, rate limits out of the way) until the block exits."""
    env = gateway_env(
        data_dir,
        rate_limit_key_per_minute=100_000,
        rate_limit_tenant_per_minute=100_000,
        log_level="WARNING",
    )
    process = GatewayProcess(env, data_dir / "gateway.log")
    # `serve` migrates the embedded database (under the data directory) at start.
    database_url = f"sqlite+aiosqlite:///{data_dir / 'imagegate.db'}"
    running = NetworkGateway(process, data_dir, {}, database_url)
    process.start()
    try:
        yield running
    finally:
        process.terminate()


def network_settings(emulators: dict[str, EmulatorProcess]) -> dict[str, object]:
    """Settings of a gateway that reaches `emulators` as real providers."""
    return {
        "gemini_api_key": "fake-gemini-key",
        "gemini_base_url": emulators["gemini"].api_base_url,
        "openai_api_key": "sk-fake-openai-key",
        "openai_base_url": emulators["openai"].api_base_url,
        "bfl_api_key": "fake-bfl-key",
        "bfl_base_url": emulators["bfl"].api_base_url,
        "bfl_poll_interval_seconds": 0.05,
        # A web UI without --api-auth ignores the credentials; they are sent all the same.
        "automatic1111_base_url": emulators["automatic1111"].api_base_url,
        "automatic1111_api_key": "imagegate:fake-password",
        "upstream_attempt_timeout_seconds": ATTEMPT_TIMEOUT,
        "upstream_deadline_seconds": DEADLINE,
        "upstream_max_response_bytes": UPSTREAM_BODY_CAP,
        "rate_limit_key_per_minute": 100_000,
        "rate_limit_tenant_per_minute": 100_000,
        "log_level": "WARNING",
    }


@pytest.fixture(scope="session")
def upstream_emulators(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, EmulatorProcess]]:
    """The emulators, each in its own process, for the whole session."""
    logs = tmp_path_factory.mktemp("emulator-logs")
    started: dict[str, EmulatorProcess] = {}
    try:
        for name in PROVIDERS:
            started[name] = EmulatorProcess(name, logs / f"{name}.log").start()
        yield started
    finally:
        for emulator in started.values():
            emulator.stop()


@pytest.fixture(scope="module")
def network_gateway_factory(
    upstream_emulators: dict[str, EmulatorProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., NetworkGateway]]:
    """Start non-emulated gateways (settings overridable); all stop with the module."""
    started: list[NetworkGateway] = []

    def start(**overrides: object) -> NetworkGateway:
        data_dir = tmp_path_factory.mktemp("network-gateway")
        settings = {**network_settings(upstream_emulators), **overrides}
        env = gateway_env(data_dir)
        env.update({f"IMAGEGATE_{name.upper()}": str(value) for name, value in settings.items()})
        # The embedded database, which `serve` migrates at start.
        database_url = f"sqlite+aiosqlite:///{data_dir / 'imagegate.db'}"
        process = GatewayProcess(env, data_dir / "gateway.log", emulate=False)
        gateway = NetworkGateway(process, data_dir, upstream_emulators, database_url)
        started.append(gateway)
        process.start()
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.process.terminate()


# --------------------------------------------------------------------------- spy


class SpyServer:
    """A tiny HTTP server that records every connection and request it gets.

    It answers like a BFL API and delivery host would (a Ready poll pointing at its own
    sample, a real PNG), so a gateway that trusts it would succeed and the test would see.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._png = synthesize_png("spy", 1024, 1024, None)
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def origin(self) -> str:
        default = self.port == 80
        return f"http://{self.host}" + ("" if default else f":{self.port}")

    def __enter__(self) -> SpyServer:
        spy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                with spy._lock:
                    spy.connections += 1
                super().setup()

            def do_GET(self) -> None:
                spy._record(self)
                if self.path.startswith("/samples/"):
                    body, kind = spy._png, "image/png"
                else:
                    result = {"sample": f"{spy.origin}/samples/spy.png"}
                    answer = {"id": "spy", "status": "Ready", "result": result}
                    body, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet: the test reads `requests`

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _record(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((handler.command, handler.path, dict(handler.headers.items())))
