"""Slow and oversized clients against `imagegate serve`, over real sockets.

The gateway runs as `python -m app.cli serve --emulate` (httptools, as installed with
uvicorn[standard]) with short limits from settings; the h11 parser is checked too,
with the same GatewayConfig served in a thread.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.server_limits import GatewayConfig
from app.settings import Settings
from tests.support.gateway import gateway_settings
from tests.support.process import (
    ADMIN_TOKEN,
    FAULTS_PATH,
    GatewayProcess,
    create_tenant,
    gateway_env,
)
from tests.support.servers import free_port

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MAX_HEADER_BYTES = 8192
LIMITS: dict[str, object] = {
    "server_header_timeout_seconds": HEADER_TIMEOUT,
    "server_body_timeout_seconds": BODY_TIMEOUT,
    "server_max_header_bytes": MAX_HEADER_BYTES,
}
# How long a dripping client keeps trying before the test gives up: far past the limits,
# far short of what an unlimited server would allow (minutes).
DRIP_FOR = 10.0
DRIP_EVERY = 0.2
# How long the emulator takes over a first request that a second one is pipelined behind.
SLOW = 4.0


class Target:
    def __init__(
        self,
        port: int,
        key: str,
        admin_token: str,
        logs: Callable[[], bytes] | None = None,
    ) -> None:
        self.port = port
        self.key = key
        self.admin_token = admin_token
        self.logs = logs  # the gateway's log, when it runs as its own process

    def delay_next_generation(self, seconds: float) -> None:
        """The mounted Gemini emulator answers the next call `seconds` late."""
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        url = f"http://127.0.0.1:{self.port}{FAULTS_PATH}"
        httpx.delete(url, headers=auth, timeout=10).raise_for_status()
        faults = {"faults": [{"kind": "delay", "seconds": seconds}]}
        httpx.post(url, json=faults, headers=auth, timeout=10).raise_for_status()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """`imagegate serve` itself, in its own process."""
    data_dir = tmp_path_factory.mktemp("server-limits")
    env = gateway_env(
        data_dir,
        server_header_timeout_seconds=HEADER_TIMEOUT,
        server_body_timeout_seconds=BODY_TIMEOUT,
        server_max_header_bytes=MAX_HEADER_BYTES,
    )
    gateway = GatewayProcess(env, data_dir / "gateway.log").start()
    try:
        tenant = create_tenant(env, "slow-clients", credits=100)
        yield Target(gateway.port, tenant.key, ADMIN_TOKEN, gateway.logs)
    finally:
        gateway.terminate()


@pytest.fixture(scope="module")
def h11_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The same config with the h11 parser, in a thread."""
    settings: Settings = gateway_settings(
        data_dir=tmp_path_factory.mktemp("server-limits-h11"), **LIMITS
    )
    port = free_port()
    config = GatewayConfig(
        create_app(settings),
        settings=settings,
        host="127.0.0.1",
        port=port,
        http="h11",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "h11 gateway did not start"
        time.sleep(0.02)
    try:
        # The key comes from the gateway's admin API: no CLI against a thread's database.
        assert settings.admin_token is not None
        token = settings.admin_token.get_secret_value()
        yield Target(port, _admin_key(port, settings), token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _admin_key(port: int, settings: Settings) -> str:
    assert settings.admin_token is not None
    admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=admin, timeout=30) as client:
        name = "slow-clients-h11"
        assert client.post("/admin/v1/tenants", json={"name": name}).status_code == 201
        granted = client.post(f"/admin/v1/tenants/{name}/credits", json={"amount": 100})
        assert granted.status_code == 200, granted.text
        key = client.post(f"/admin/v1/tenants/{name}/keys", json={"label": "t"})
        assert key.status_code == 201, key.text
        return str(key.json()["key"])


@pytest.fixture(params=["httptools-process", "h11-thread"])
def target(request: pytest.FixtureRequest) -> Target:
    name = "served" if request.param == "httptools-process" else "h11_served"
    found: Target = request.getfixturevalue(name)
    return found


def _closed(sock: socket.socket) -> tuple[bool, bytes]:
    """(closed by the server, what it sent before), without blocking."""
    received = b""
    while select.select([sock], [], [], 0)[0]:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, OSError):
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def _drip(sock: socket.socket, payload: Callable[[int], bytes]) -> tuple[bool, float, bytes]:
    """Send payload(i) every DRIP_EVERY s until the server closes or DRIP_FOR passes."""
    started = time.monotonic()
    received = b""
    i = 0
    while time.monotonic() - started < DRIP_FOR:
        try:
            sock.sendall(payload(i))
        except (BrokenPipeError, ConnectionResetError):
            return True, time.monotonic() - started, received
        time.sleep(DRIP_EVERY)
        closed, chunk = _closed(sock)
        received += chunk
        if closed:
            return True, time.monotonic() - started, received
        i += 1
    return False, time.monotonic() - started, received


def test_a_client_dripping_headers_is_disconnected(target: Target) -> None:
    with target.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        closed, elapsed, received = _drip(sock, lambda i: b"X-Drip-%d: y\r\n" % i)
    assert closed, f"connection still open after dripping headers for {elapsed:.1f} s"
    assert not received.startswith(b"HTTP/1.1 200"), received[:200]


def test_a_client_dripping_a_body_gets_408(target: Target) -> None:
    body = json.dumps({"prompt": "x" * 400}).encode()
    head = (
        b"POST /api/v1/generate-image HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\n"
        + b"Authorization: Bearer "
        + target.key.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with target.connect() as sock:
        sock.sendall(head)
        closed, elapsed, received = _drip(sock, lambda i: body[i : i + 1])
    assert closed, f"connection still open after dripping a body for {elapsed:.1f} s"
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", received[:300]
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["code"] == "request_timeout"
    assert "body" in answer["error"]
    if target.logs is not None:
        # The cut request ends quietly: one info line, no traceback per slow client.
        deadline = time.monotonic() + 5
        while b"client gone before its request body was read" not in target.logs():
            assert time.monotonic() < deadline, "the cut request was never logged"
            time.sleep(0.05)
        assert b"Exception in ASGI application" not in target.logs()


def test_a_megabyte_of_headers_is_refused(target: Target) -> None:
    block = (
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
        + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(1040))
        + b"\r\n"
    )
    assert len(block) > 1024 * 1024
    received = b""
    with target.connect() as sock:
        try:
            sock.sendall(block)
            # No half-close: uvicorn closes on EOF before answering, which would hide a 200.
            while chunk := sock.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: refused
        except TimeoutError:
            pass  # an answer followed by an open keep-alive connection
    assert not received.startswith(b"HTTP/1.1 200"), received[:200]
    if received:
        assert received.split(b"\r\n", 1)[0] in (
            b"HTTP/1.1 431 Request Header Fields Too Large",
            b"HTTP/1.1 400 Bad Request",  # h11's own cap, which answers first on that parser
        ), received[:200]


def test_ordinary_clients_are_unaffected(target: Target, tmp_path: Path) -> None:
    """Keep-alive reuse past the header timeout, headers near the cap, a fast large body."""
    auth = {"Authorization": f"Bearer {target.key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{target.port}", timeout=60) as client:
        for _ in range(3):
            assert client.get("/healthz", headers={"X-Pad": "p" * 6000}).status_code == 200
            time.sleep(HEADER_TIMEOUT / 2)
        big = client.post(
            "/api/v1/generate-image",
            json={"prompt": "fast upload", "padding": "z" * (2 * 1024 * 1024)},
            headers=auth,
        )
        assert big.status_code == 200, big.text


def _slow_generation(key: str) -> bytes:
    body = json.dumps({"prompt": "a request to pipeline behind"}).encode()
    return (
        b"POST /api/v1/generate-image HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _status_lines(received: bytes) -> list[bytes]:
    """The status lines of the answers in `received`, which follow each other unbroken."""
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", received)


def _until_closed(sock: socket.socket, limit: float) -> tuple[bool, bytes]:
    """(closed by the server within `limit` s, everything it sent)."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, OSError):
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_a_pipelined_request_with_oversized_headers_is_refused(target: Target) -> None:
    """Sent while the first request is still being handled, so before its response."""
    target.delay_next_generation(SLOW)
    oversized = (
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
        + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
        + b"\r\n"
    )
    with target.connect() as sock:
        sock.sendall(_slow_generation(target.key))
        time.sleep(0.5)  # the first request's body is in: it waits on the emulator
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(oversized)
        closed, received = _until_closed(sock, SLOW + 10)
    # At most the first request's answer, then a 431 (h11's own cap: a 400) or a close;
    # never the pipelined request's 200.
    statuses = _status_lines(received)
    assert statuses.count(b"HTTP/1.1 200 OK") <= 1, received[:300]
    assert statuses[1:] in (
        [],
        [b"HTTP/1.1 431 Request Header Fields Too Large"],
        [b"HTTP/1.1 400 Bad Request"],
    ), statuses
    assert closed, "connection still open after the oversized pipelined request"


def test_a_pipelined_request_dripping_headers_is_cut(served: Target) -> None:
    """The header deadline runs from the pipelined request's first byte.

    httptools only: h11 stops reading on pipelined data, so drip bytes stay unread in
    the kernel until the first response completes, when the ordinary deadline starts
    (test_a_client_dripping_headers_is_disconnected covers that).
    """
    served.delay_next_generation(SLOW)
    with served.connect() as sock:
        sock.sendall(_slow_generation(served.key))
        time.sleep(0.5)  # the first request's body is in: it waits on the emulator
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        closed, elapsed, received = _drip(sock, lambda i: b"X-Drip-%d: y\r\n" % i)
    assert closed, f"connection still open after dripping headers for {elapsed:.1f} s"
    # Cut by the header deadline while the first request still waited on the emulator,
    # not by the deadline that starts once its response is complete.
    assert received == b"", received[:300]


def test_a_request_pipelined_behind_a_slow_one_is_answered(target: Target) -> None:
    """Whole and prompt, it waits past the header deadline for its turn and is served."""
    target.delay_next_generation(SLOW)
    with target.connect() as sock:
        sock.sendall(_slow_generation(target.key))
        time.sleep(0.5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        _, received = _until_closed(sock, SLOW + 2 * HEADER_TIMEOUT + 5)
    statuses = _status_lines(received)
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"], received[:500]


def test_oversized_headers_arriving_in_one_read_are_refused(target: Target) -> None:
    """Small enough to be parsed whole from one read, so checked once parsed."""
    block = (
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
        + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
        + b"\r\n"
    )
    with target.connect() as sock:
        sock.sendall(block)
        closed, received = _until_closed(sock, 10)
    assert _status_lines(received) in (
        [b"HTTP/1.1 431 Request Header Fields Too Large"],
        [b"HTTP/1.1 400 Bad Request"],  # h11's own cap, which answers first on that parser
    ), received[:300]
    assert closed


def test_a_pipelined_body_sent_late_waits_for_its_turn(target: Target) -> None:
    """Its body is unread while the first request runs: no 408 for that (httptools
    stops reading once the pipelined request's headers are parsed)."""
    target.delay_next_generation(SLOW)
    body = json.dumps({"prompt": "the pipelined one"}).encode()
    head = _slow_generation(target.key).partition(b"\r\n\r\n")[0].rsplit(b"\r\n", 1)[0]
    with target.connect() as sock:
        sock.sendall(_slow_generation(target.key))
        time.sleep(0.5)
        sock.sendall(head + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.5)
        sock.sendall(body)
        _, received = _until_closed(sock, SLOW + BODY_TIMEOUT + HEADER_TIMEOUT + 10)
    assert _status_lines(received) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"], received[:300]
