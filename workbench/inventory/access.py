"""Who may use the application port: callers known by their uid, admins, and who an application runs as.

The application port is a Unix socket, so the kernel tells the server who connected
(``SO_PEERCRED``): no password, nothing a caller can claim. ``AccessPolicy`` decides from that
uid alone::

    policy = AccessPolicy(admins=["alice"], users=["bob"])
    caller = Caller.of_uid(1001)
    policy.check_connect(caller)      # AccessDenied unless an admin or a listed user
    policy.check_admin(caller)        # authorize / revoke
    policy.run_as(caller)             # the uid the application's child takes (never more than the caller)

Admins are the server's own uid, root, and the users named in ``admins``; users may run
applications (as themselves). ``users=["*"]`` lets every local user run applications. A child runs
with the caller's uid: a root server drops to it, and a server of another uid refuses a caller it
cannot become.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Iterable

from workbench.errors import ConfigurationError
from workbench.inventory.errors import AccessDenied

EVERYONE = "*"


@dataclass(frozen=True)
class Caller:
    """A process on the other end of the application socket, as the kernel reports it."""

    uid: int
    gid: int
    pid: int = 0
    name: str = ""

    @classmethod
    def of_uid(cls, uid: int, gid: int | None = None, pid: int = 0) -> Caller:
        """The caller with ``uid`` (its login name and primary group from the password database)."""
        try:
            entry = pwd.getpwuid(uid)
            name, primary = entry.pw_name, entry.pw_gid
        except KeyError:  # a uid without an account: known by its number
            name, primary = str(uid), uid if gid is None else gid
        return cls(uid, primary if gid is None else gid, pid, name)

    def groups(self) -> list[int]:
        """The supplementary groups the caller's account has (its primary group alone when unknown)."""
        try:
            return os.getgrouplist(self.name, self.gid)
        except (KeyError, OSError):
            return [self.gid]


def _uid_of(name: str | int) -> int:
    if isinstance(name, int) or str(name).isdigit():
        return int(name)
    try:
        return pwd.getpwnam(str(name)).pw_uid
    except KeyError:
        raise ConfigurationError(f"no such user: {name}", user=name) from None


class AccessPolicy:
    """Admins and users of one server, by uid (names are resolved once, at construction)."""

    def __init__(self, admins: Iterable[str | int] = (), users: Iterable[str | int] = (),
                 server_uid: int | None = None) -> None:
        self.server_uid = os.getuid() if server_uid is None else server_uid
        self.admins = {0, self.server_uid} | {_uid_of(name) for name in admins}
        users = list(users)
        self.everyone = EVERYONE in users
        self.users = {_uid_of(name) for name in users if name != EVERYONE}

    def is_admin(self, caller: Caller) -> bool:
        return caller.uid in self.admins

    def may_run(self, caller: Caller) -> bool:
        """Whether ``caller`` may run applications here (as itself)."""
        return self.is_admin(caller) or self.everyone or caller.uid in self.users

    def check_connect(self, caller: Caller) -> None:
        if not self.may_run(caller):
            raise AccessDenied(f"user {caller.name} may not use this inventory server "
                               "(ask its admin to add you with --user)", uid=caller.uid, user=caller.name,
                               operation="connect", reason="not-a-user")

    def check_admin(self, caller: Caller, operation: str) -> None:
        if not self.is_admin(caller):
            raise AccessDenied(f"only an admin of this inventory server may {operation}", uid=caller.uid,
                               user=caller.name, operation=operation, reason="not-an-admin")

    def label(self, caller: Caller, requested: str | None, operation: str) -> str:
        """The user name a request acts under: the caller's own; an admin may name another."""
        if not requested or requested == caller.name:
            return caller.name
        if self.is_admin(caller):
            return requested
        raise AccessDenied(f"you are {caller.name}: you cannot {operation} as {requested}", uid=caller.uid,
                           user=caller.name, requested=requested, operation=operation, reason="impersonation")

    def run_as(self, caller: Caller) -> Caller | None:
        """Who an application of ``caller`` runs as: None for this process's own identity, else the caller.

        The child never gets more than the caller has: a root server drops to the caller's uid; a
        server of any other uid serves its own uid (and root, who gets less) and refuses the rest.
        """
        if not self.may_run(caller):
            self.check_connect(caller)
        if caller.uid == os.getuid() or caller.uid == 0:
            return None
        if os.getuid() != 0:
            raise AccessDenied(f"this server runs as uid {os.getuid()} and cannot run applications as "
                               f"{caller.name}; run them on a server of your own", uid=caller.uid,
                               user=caller.name, operation="exec", reason="cannot-run-as-caller")
        return caller


__all__ = ["AccessDenied", "AccessPolicy", "Caller", "EVERYONE"]
