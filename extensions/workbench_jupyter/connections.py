"""What the notebook is connected to: the registry ``%workbench`` reports and magics fill in."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class Connection:
    """One live client the notebook holds: a domain, a zdb database, a commits server..."""

    name: str
    kind: str          # "domain", "zdb", "commits", "clusters", "inventory"
    target: str        # where it points, without credentials (e.g. "localhost:48004")
    client: Any = field(repr=False, default=None)

    def status(self) -> str:
        """Ask the client how it is, if it can tell; 'connected' otherwise."""
        probe = getattr(self.client, "connection_status", None)
        return str(probe()) if callable(probe) else "connected"


class ConnectionRegistry:
    """Thread-safe map of connection name -> Connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Connection] = {}

    def add(self, connection: Connection) -> Connection:
        with self._lock:
            self._by_name[connection.name] = connection
        return connection

    def remove(self, name: str) -> Connection | None:
        with self._lock:
            return self._by_name.pop(name, None)

    def get(self, name: str) -> Connection | None:
        with self._lock:
            return self._by_name.get(name)

    def __iter__(self) -> Iterator[Connection]:
        with self._lock:
            return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name)

    def clear(self) -> None:
        with self._lock:
            self._by_name.clear()


#: the registry of this kernel
connections = ConnectionRegistry()
