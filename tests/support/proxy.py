"""A loopback TCP proxy that can cut a dependency off, for outage tests.

`TcpProxy(target).start()` listens on 127.0.0.1:<port> and forwards each connection to
`target` (a TCP address or a unix socket path). `stop()` closes the listener and cuts
every live connection, so clients see exactly what a crashed or partitioned server looks
like (refused connects, dropped sessions); `start()` serves again on the same port.
`black_hole()` cuts the live connections too but then accepts new ones and never answers,
as a host behind a firewall that drops packets looks to a client that connects.
`stall()` keeps the live connections open but stops forwarding on them (and swallows new
ones): a server that stopped answering mid-query, with no reset and no TCP error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

from tests.support.servers import free_port

__all__ = ["TcpProxy", "postgres_target"]

Target = tuple[str, int] | str


def postgres_target(database_url: str) -> tuple[Target, str]:
    """Where a SQLAlchemy Postgres URL points, and the same URL through a proxy placeholder.

    Returns (target, url_template) where url_template has `{port}` for the proxy port.
    """
    url = make_url(database_url)
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        target: Target = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
    else:
        target = (url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=65535, query={})
    template = proxied.render_as_string(hide_password=False).replace(":65535", ":{port}")
    return target, template


class TcpProxy:
    def __init__(self, target: Target, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._swallowing = False
        self._stalled = False

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            live, self._sockets = self._sockets, set()
        if listener is not None:
            _close(listener)
        for sock in live:
            _close(sock)

    @contextmanager
    def down(self) -> Iterator[None]:
        """The target is unreachable within the block and reachable again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextmanager
    def black_hole(self) -> Iterator[None]:
        """Within the block, connections are accepted and then never answered."""
        self.stop()
        self._swallowing = True
        self.start()
        try:
            yield
        finally:
            self.stop()
            self._swallowing = False
            self.start()

    @contextmanager
    def stall(self) -> Iterator[None]:
        """Within the block nothing is forwarded: what either side sends on an open
        connection is dropped, and new connections are accepted and never answered.
        After it every connection is cut (they lost bytes) and the proxy serves again."""
        self._stalled = self._swallowing = True
        try:
            yield
        finally:
            self.stop()
            self._stalled = self._swallowing = False
            self.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            if self._swallowing:
                with self._lock:
                    self._sockets.add(client)  # held open, unread, until stop()
                continue
            try:
                upstream = self._connect()
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(self.target)
        return sock

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._stalled:
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with self._lock:
                self._sockets.discard(sock)
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
