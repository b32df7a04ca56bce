"""``Sessions``: the named connections of one magic family, which one is current, and what follows it.

Every family (``%domain``, ``%zdb``, ``%commits``, ``%inventory``, ``%clusters``) keeps its sessions in
one ``Sessions`` (``SubsystemMagic.sessions``): ``add`` makes a new one current and lists it in
``%workbench``, ``require`` finds the named (or current) one or says why not, ``switch`` makes another
current, ``close`` / ``close_all`` close them. A family knows only how to open a session and what it
is; a session is any object with ``target`` (where it points, no credentials) and ``close()``.

A family may bind a user variable to its current session (``db`` of ``%zdb``, ``domain`` of
``%domain``): it follows ``add`` and ``switch``, goes away with its session, and is never taken from
the user once they rebind it to something else.

A family's session class derives from ``DashboardSession``: the dashboards that watch the session,
and a ``close()`` that closes them and then, once, what the family holds (its ``_close()``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Mapping, MutableMapping

from IPython.core.error import UsageError

from workbench_jupyter.connections import Connection, ConnectionRegistry, connections

#: where the family's user variable lives and its name, read at each use (``%config`` may rename it)
UserVariable = Callable[[], "tuple[MutableMapping[str, Any], str] | None"]


class DashboardSession:
    """The part every family's session shares: its ``dashboards`` and a ``close()`` that runs once.

    ``close()`` closes the dashboards, then calls ``_close()`` (the family's: release the clients it
    holds); a second ``close()``, from any thread (a dashboard's button may close too), does nothing.
    ``closed`` says whether it ran; ``_lock`` is the session's lock, free for the family's use too.

    >>> class Things(DashboardSession):
    ...     def _close(self) -> None:
    ...         print("released")
    >>> things = Things()
    >>> things.close(); things.close()
    released
    >>> things.closed
    True
    """

    def __init__(self) -> None:
        self.dashboards: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def add_dashboard(self, dashboard: Any) -> Any:
        """Keep ``dashboard`` with the others still open (closed ones are forgotten) and return it."""
        self.dashboards = [d for d in self.dashboards if not d.closed] + [dashboard]
        return dashboard

    def close(self) -> None:
        """Close the dashboards, then what the session holds. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for dashboard in self.dashboards:
            dashboard.close()
        self.dashboards = []
        self._close()

    def _close(self) -> None:
        """Release what the session holds (each family's)."""

    @property
    def closed(self) -> bool:
        return self._closed


class Sessions(Mapping[str, Any]):
    """Name -> session of one family, oldest first; ``current`` is the name lines use by default.

    Used from the kernel's own thread (magics and completion run there), so it holds no lock; the
    connection registry it fills is the thread-safe part other threads read.

    >>> sessions = Sessions("things", "%things open first")
    >>> sessions.require()
    Traceback (most recent call last):
    IPython.core.error.UsageError: things: not connected (%things open first)
    """

    def __init__(self, family: str, hint: str = "", *, value: Callable[[Any], Any] = lambda session: None,
                 variable: UserVariable = lambda: None, registry: ConnectionRegistry = connections) -> None:
        self.family = family
        self.hint = hint
        #: the name of the current session (the newest, unless switched); None when there is none
        self.current: str | None = None
        self._value = value  # what the user variable holds while a session is current (None: nothing)
        self._variable = variable
        self._registry = registry
        self._by_name: dict[str, Any] = {}
        # each session's own entry, so closing never removes what another family registered since
        self._entries: dict[str, Connection] = {}

    # -- the mapping ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Sessions({self.family!r}, {list(self._by_name)}, current={self.current!r})"

    @property
    def current_session(self) -> Any:
        """The current session, or None (for completion, which must not raise)."""
        return self._by_name.get(self.current) if self.current is not None else None

    # -- opening ----------------------------------------------------------------------------------
    def check_name(self, name: str) -> None:
        """Refuse a name that another family's connection holds (before anything is opened)."""
        existing = self._registry.get(name)
        if existing is not None and existing.kind != self.family:
            raise UsageError(f"{self.family}: {name!r} is already a {existing.kind} connection; "
                             "choose another --name")

    def add(self, name: str, session: Any, client: Any = None) -> Any:
        """Keep ``session`` as ``name`` (closing the one it replaces), make it current, list it.

        ``client`` is what ``%workbench`` lists for it (default: the session itself).
        """
        if name in self._by_name:
            self._drop(name)
        self._by_name[name] = session
        self._entries[name] = self._registry.add(
            Connection(name, self.family, session.target, client=session if client is None else client))
        self.current = name
        self._bind(session, replace=True)
        return session

    # -- finding ----------------------------------------------------------------------------------
    def require(self, name: str | None = None) -> Any:
        """The named (or current) session; a UsageError when there is none by that name."""
        name = name or self.current
        if name is None:
            raise UsageError(f"{self.family}: not connected" + (f" ({self.hint})" if self.hint else ""))
        session = self._by_name.get(name)
        if session is None:
            raise UsageError(f"{self.family}: no {self.family} connection named {name!r}")
        return session

    def switch(self, name: str) -> Any:
        """Make session ``name`` the current one (the user variable follows)."""
        session = self.require(name)
        self.current = name
        self._bind(session, replace=True)
        return session

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(name, family, target, status) of every session, oldest first."""
        return [(name, self.family, session.target, self._entries[name].status()) for name, session in self.items()]

    # -- closing ----------------------------------------------------------------------------------
    def close(self, name: str | None = None) -> str:
        """Close the named (or current) session and return its name; a UsageError when there is none."""
        name = name or self.current
        if name is None or name not in self._by_name:
            raise UsageError(f"{self.family}: no {self.family} connection named {name!r}" if name
                             else f"{self.family}: not connected")
        self._drop(name)
        return name

    def close_all(self) -> None:
        """Close every session (the extension's unload does)."""
        for name in list(self._by_name):
            self._drop(name)

    def _drop(self, name: str) -> None:
        session = self._by_name.pop(name)
        entry = self._entries.pop(name, None)
        if entry is not None and self._registry.get(name) is entry:
            self._registry.remove(name)
        self._unbind(session)
        session.close()
        if self.current == name:
            # the newest of those left becomes current; its variable comes back unless the user took the name
            self.current = next(reversed(self._by_name), None)
            if self.current is not None:
                self._bind(self._by_name[self.current], replace=False)

    # -- the user variable ------------------------------------------------------------------------
    def _bind(self, session: Any, replace: bool) -> None:
        where, value = self._variable(), self._value(session)
        if where is None or value is None:
            return
        namespace, variable = where
        if replace:
            namespace[variable] = value
        else:
            namespace.setdefault(variable, value)

    def _unbind(self, session: Any) -> None:
        where, value = self._variable(), self._value(session)
        if where is not None and value is not None and where[0].get(where[1]) is value:
            del where[0][where[1]]


__all__ = ["DashboardSession", "Sessions", "UserVariable"]
