"""The client of the application port: run applications, authorize them, ask servers for status.

::

    with InventoryClient() as client:                  # the local server's socket, DEFAULT_SOCKET
        result = client.exec_script(open("report.py").read(), name="report.py")
        print(result["stdout"])
        client.authorize(open("fix.py").read(), title="fix")              # admins only
        client.exec_script(open("fix.py").read(), name="fix.py", write=True, title="fix")

The server knows who calls from the socket itself: requests act as the caller's login name (an
admin may name another ``user``), and applications run with the caller's uid.

Errors the server reports arrive as the classes ``errors.INVENTORY_ERRORS`` declares
(``AccessDenied``, ``ApplicationRefused``, ``NotPrimaryError``, ``WriterBusyError``, ``ProtocolError``...), a kind
this library does not know as ``InventoryRemoteError``; their ``fields`` are the server's. A write
sent to a secondary is resent to the primary the secondary names.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from workbench.inventory.errors import INVENTORY_ERRORS, InventoryRemoteError, NotPrimaryError, TransportError
from workbench.inventory.protocol import DEFAULT_ADDRESS, parse_address
from workbench.inventory.transport import Connection


def default_user() -> str:
    """The user name sent with requests unless one is given: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class InventoryClient:
    """A connection to an inventory server's application socket (a path, default ``DEFAULT_SOCKET``).

    ``trusted_uids``: the uids the server may run as (default: any for a named socket; root and
    the caller for the default one).
    """

    def __init__(self, address: str | None = None, timeout: float | None = 30.0,
                 trusted_uids: set[int] | None = None) -> None:
        # The default socket lives in a shared directory: trust the server there only when it runs as
        # root or as the caller. A socket named explicitly is trusted as named.
        if address is None:
            address = DEFAULT_ADDRESS
            trusted_uids = {0, os.getuid()} if trusted_uids is None else trusted_uids
        self.address = address
        self.timeout = timeout
        self._connection = Connection(parse_address(address), timeout, trusted_uids)

    def __repr__(self) -> str:
        return f"<InventoryClient {self.address or DEFAULT_ADDRESS}>"

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> InventoryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request; the reply's fields, or the server's error raised here."""
        reply = self._connection.request(message, timeout)
        if reply.get("ok"):
            return {name: value for name, value in reply.items() if name != "ok"}
        error = reply.get("error")
        raise INVENTORY_ERRORS.error(error if isinstance(error, dict) else {})

    # -- requests -------------------------------------------------------------------------------------
    def status(self, checksum: bool = False) -> dict[str, Any]:
        """The server's id, role, status, applied and store seq (and image checksum if asked)."""
        return self.request({"op": "status", "checksum": checksum}, timeout=max(self.timeout or 0, 300))

    def servers(self) -> list[dict[str, Any]]:
        return self.request({"op": "servers"})["servers"]

    def exec_script(self, script: str, name: str = "<application>", args: list[str] | None = None,
                    write: bool = False, title: str | None = None, user: str | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
        """Run ``script`` as an application; returns status, exit_code, stdout, stderr, changes, applied.

        A write sent to a secondary is resent once to the primary it names.
        """
        message = {"op": "exec", "script": script, "name": name, "args": list(args or []), "write": write,
                   "title": title or name, "user": user, "timeout": timeout}
        wait = None if timeout is None else timeout + 60
        try:
            return self.request(message, timeout=wait if wait is not None else 24 * 3600)
        except NotPrimaryError as exc:
            primary = exc.fields.get("primary_address")
            if not write or not primary or primary == self.address:
                raise
        with InventoryClient(primary, self.timeout) as redirected:
            return redirected.request(message, timeout=wait if wait is not None else 24 * 3600)

    def authorize(self, script: str, title: str, user: str | None = None) -> dict[str, Any]:
        """Authorize ``script`` (by SHA-256 of its content) to write as (title, user); admins only.

        ``user`` defaults to the caller's own login name, as the server sees it.
        """
        return self.request({"op": "authorize", "script": script, "title": title, "user": user})

    def revoke(self, title: str, user: str | None = None) -> bool:
        """Remove the authorization of (title, user); admins only."""
        return self.request({"op": "revoke", "title": title, "user": user})["revoked"]

    def authorizations(self) -> list[dict[str, Any]]:
        return self.request({"op": "authorizations"})["authorizations"]


__all__ = ["InventoryClient", "InventoryRemoteError", "TransportError", "default_user"]
