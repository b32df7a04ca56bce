"""The secrets of the domain's databases, derived from the domain password (no I/O).

Every zdb process the domain starts refuses strangers on every socket: a storage manager speaks
CURVE only, to the database's *member* key (its transaction engines, standbys, the supervising
agent and domain clients); a transaction engine or standby requires a dba login. Those keys, and
the dba login of a database started without ``--dba-user``/``--dba-password`` options, are derived
from the domain password with HKDF, so every agent and broker of the domain computes the same ones
without passing them around, and a domain client (who knows the domain password: an authorized
one) computes them too::

    keys = DatabaseKeys("bird")
    keys.storage_manager("teas").public   # the SM's CURVE public key
    keys.dba("teas")                      # ("dba", "...") for a TE started without dba options

Changing the domain password changes every derived secret: processes started before keep theirs.
"""

from __future__ import annotations

import base64
import functools

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from workbench.zdb.transport import CurveKeys

#: the user of a derived dba login
DERIVED_DBA_USER = "dba"


class DatabaseKeys:
    """The CURVE key pairs and derived dba login of each database of one domain."""

    def __init__(self, domain_password: str) -> None:
        if not domain_password:
            raise ValueError("a domain password is needed to derive database keys")
        self._root = domain_password.encode()

    def _derive(self, purpose: str, database: str) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"workbench domain database keys",
                    info=f"{purpose}\0{database}".encode()).derive(self._root)

    def _pair(self, purpose: str, database: str) -> CurveKeys:
        import zmq
        import zmq.utils.z85

        secret = zmq.utils.z85.encode(self._derive(purpose, database))  # any 32 bytes are a Curve25519 key
        return CurveKeys(zmq.curve_public(secret).decode(), secret.decode())

    @functools.lru_cache(maxsize=256)
    def storage_manager(self, database: str) -> CurveKeys:
        """The CURVE server key pair of ``database``'s storage managers."""
        return self._pair("storage manager", database)

    @functools.lru_cache(maxsize=256)
    def member(self, database: str) -> CurveKeys:
        """The CURVE client key pair a storage manager of ``database`` lets in (and no other)."""
        return self._pair("member", database)

    def dba(self, database: str) -> tuple[str, str]:
        """The dba login of ``database``'s engines when they were started without dba options."""
        password = base64.urlsafe_b64encode(self._derive("dba", database)[:18]).decode()
        return DERIVED_DBA_USER, password

    def __repr__(self) -> str:
        return "DatabaseKeys(<derived from the domain password>)"
