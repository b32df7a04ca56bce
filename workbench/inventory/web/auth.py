"""Who is calling: client certificates mapped to users and roles, and the TLS settings that ask for them.

Over HTTPS the server asks every client for a certificate signed by the configured CA. A caller
that shows one is identified by the certificate's subject DN (RFC 4514, e.g.
``CN=alice,O=workbench``), looked up in a ``UserMap``; a caller that shows none, and every caller
over plain HTTP, is ``ANONYMOUS`` and may only read. Pages that change the inventory need the
``write`` role.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from workbench.errors import ConfigurationError

#: the role a user needs for pages that change the inventory (inject, delete)
WRITE_ROLE = "write"


@dataclass(frozen=True)
class User:
    """The caller of a web request: a name, roles, and the certificate subject it came with.

    ``authenticated`` is true for any caller that showed a valid certificate, mapped or not.
    """

    name: str
    roles: frozenset[str] = frozenset()
    dn: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.dn is not None

    def has_role(self, role: str) -> bool:
        return role in self.roles


#: every caller over plain HTTP, and HTTPS callers without a certificate
ANONYMOUS = User("anonymous")


def _common_name(subject: x509.Name) -> str:
    names = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else subject.rfc4514_string()


class UserMap:
    """Certificate subject DN -> ``User``. A valid certificate whose DN is not listed gets no roles.

    ::

        users = UserMap({"CN=alice,O=workbench": ("alice", ["write"])})
        users.for_certificate(der_bytes)   # User('alice', frozenset({'write'}), 'CN=alice,O=workbench')
    """

    def __init__(self, entries: Mapping[str, tuple[str, Iterable[str]] | Mapping[str, Any]] | None = None) -> None:
        self._by_dn: dict[str, User] = {}
        for dn, entry in (entries or {}).items():
            if isinstance(entry, Mapping):
                name, roles = entry.get("user"), entry.get("roles", ())
            else:
                name, roles = entry
            if not isinstance(name, str) or not name:
                raise ConfigurationError("a mapped certificate needs a user name", dn=dn)
            if isinstance(roles, str) or not all(isinstance(role, str) for role in roles):
                raise ConfigurationError("roles must be a list of names", dn=dn, roles=roles)
            normalized = self.normalize(dn)
            self._by_dn[normalized] = User(name, frozenset(roles), normalized)

    @staticmethod
    def normalize(dn: str) -> str:
        """A DN as written by a person (spaces after commas allowed) in RFC 4514 form."""
        try:
            return x509.Name.from_rfc4514_string(dn).rfc4514_string()
        except ValueError as exc:
            raise ConfigurationError(f"not an RFC 4514 distinguished name: {exc}", dn=dn) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "UserMap":
        """Read ``{DN: {user: NAME, roles: [ROLE...]}}`` from a YAML or JSON file."""
        try:
            entries = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read the user map: {exc}", path=str(path)) from None
        if not isinstance(entries, Mapping):
            raise ConfigurationError("the user map must map DNs to users", path=str(path))
        return cls(entries)

    def for_certificate(self, der: bytes | None) -> User:
        """The user of a verified peer certificate (DER), or ``ANONYMOUS`` when there is none."""
        if not der:
            return ANONYMOUS
        subject = x509.load_der_x509_certificate(der).subject
        dn = subject.rfc4514_string()
        known = self._by_dn.get(dn)
        return known if known is not None else User(_common_name(subject), frozenset(), dn)

    def __len__(self) -> int:
        return len(self._by_dn)


@dataclass(frozen=True)
class TLSConfig:
    """HTTPS settings: the server's certificate and key, the CA that signs client certificates, users.

    Client certificates are optional at the TLS level (so browsers without one can still read);
    when one is shown it must verify against ``cafile``.
    """

    certfile: str | Path
    keyfile: str | Path
    cafile: str | Path
    users: UserMap = field(default_factory=UserMap)

    def server_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for the server side, client certificates optional but verified."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self.certfile), str(self.keyfile))
            context.load_verify_locations(cafile=str(self.cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the TLS files: {exc}", certfile=str(self.certfile),
                                     cafile=str(self.cafile)) from None
        context.verify_mode = ssl.CERT_OPTIONAL
        return context


__all__ = ["ANONYMOUS", "WRITE_ROLE", "TLSConfig", "User", "UserMap"]
